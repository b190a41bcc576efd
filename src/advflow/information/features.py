"""Feature maps of every conv layer, streamed to HDF5 (docs/method.md, "Information flow"; the features stage).

A *conv layer* is one :class:`~advflow.models.architectures.ConvBlock`: convolution, ReLU and the max-pool that
directly follows it, if any; for a user's model, each module its config's ``layers`` names or the default rule chose
(:mod:`advflow.models.user`), named as in its network. A set is run through a measuring model in batches, and each batch's
maps are appended to the file at once, so memory holds one batch, never the set.

A features file ``features/{model}/{set}.h5`` holds::

    input        (N, C, H, W)        the inputs in model space: the source maps of the MI stage
    layers/{k}   (N, n_k, H_k, W_k)  conv layer k's output maps (k = conv1 ... convK, or a user model's module names, in order)
    labels, predictions (N,)         true labels; the measuring model's argmax
    seed, step   (N,)                trajectory sets only: which seed and which JSMA step an input is
    attrs: model, set, layers (JSON list of names), shapes (JSON {name: [n_k, H_k, W_k]}), dtype,
           compression, labels and predictions (int16, when N <= 30,000)

Each layer is one chunked dataset (one input per chunk, so any batch of inputs reads whole chunks),
stored at ``dtype`` (float16 by default; ReLU outputs of a trained network fit it) and compressed.

Sets (docs/method.md's ``{set}``): ``normal_train`` and ``normal_test`` (the input profiles), ``{attack}@{target}``
(an adversarial set) and ``trajectory@{target}`` (every step of the recorded JSMA trajectories).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from advflow.workflow.catalog import PROFILES, set_path  # noqa: F401 (re-exported)
from advflow.data import to_model_space
from advflow.workflow.io import atomic_h5, open_h5
from advflow.attacks.checks import check_profile, check_set

log = logging.getLogger("advflow.information.features")

DTYPES = ("float16", "float32")
COMPRESSIONS = ("gzip", "lzf", "none")
_ATTR_LIMIT = 30_000  # int16 label attributes stay well under HDF5's 64 KiB compact attribute limit


@dataclass
class InputSet:
    """The inputs of one set in model space, with what the features file keeps about them."""

    x: torch.Tensor  # (N, C, H, W) float32 in [-1, 1]
    labels: np.ndarray
    extra: dict[str, np.ndarray]  # trajectory sets: seed, step


def load_set(path: str | Path) -> InputSet:
    """Read a profile, an adversarial set or a trajectory file (by what it contains)."""
    with open_h5(path) as h5:
        if "adversarial" in h5:
            check_set(h5, path)
            return InputSet(torch.as_tensor(h5["adversarial"][:]), h5["labels"][:], {})
        if "images" in h5:
            check_profile(h5, path)
            return InputSet(torch.as_tensor(to_model_space(h5["images"][:].astype(np.float32))), h5["labels"][:], {})
        if "steps" in h5:
            keys = sorted(h5["steps"], key=int)
            steps = [h5["steps"][k][:] for k in keys]
            labels = h5["labels"][:]
            seed = np.concatenate([np.full(len(s), int(k)) for k, s in zip(keys, steps)])
            step = np.concatenate([np.arange(len(s)) for s in steps])
            return InputSet(torch.as_tensor(np.concatenate(steps)), labels[seed], {"seed": seed, "step": step})
    raise ValueError(f"{path}: not an input set (no 'images', 'adversarial' or 'steps'); it must be a profile, "
                     "an adversarial set or a trajectory file of this workflow")


def measured_layers(model: nn.Module) -> Any:
    """The conv layers a measuring model records (:class:`advflow.models.layers.LayerChoice`): an advflow
    ConvNet's blocks ``conv1 ... convK``, or a user's model's chosen modules (named as in its network)."""
    from advflow.models.layers import default_layers

    if getattr(model, "blocks", None) is None and not callable(getattr(model, "layer_choice", None)):
        raise ValueError(f"{type(model).__name__} has no conv layers to record; features are measured on one "
                         "network (an ensemble's sets are measured on its members)")
    return default_layers(model)


def layer_names(model: nn.Module) -> list[str]:
    return list(measured_layers(model).names)


def forward_maps(model: nn.Module, x: torch.Tensor, choice: Any = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each recorded layer's output maps for a batch, and the logits, from one forward pass in eval mode (dropout is
    the identity)."""
    from advflow.models.layers import capture_maps

    choice = choice or measured_layers(model)
    return capture_maps(model, x, choice.pairs(), with_output=True)


@torch.no_grad()
def conv_maps(model: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Each conv layer's output maps for a batch, in order (the model in eval mode: dropout is the identity)."""
    yield from forward_maps(model, x)[0].values()


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...], choice: Any = None) -> dict[str, list[int]]:
    """{layer name: [n_k, H_k, W_k]} for inputs of shape (C, H, W) (``choice``: the layers, when already chosen)."""
    probe = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    return {name: list(maps.shape[1:]) for name, maps in forward_maps(model.eval(), probe, choice)[0].items()}


def record_features(model_path: str | Path, set_file: str | Path, out_path: str | Path, *, set_name: str,
                    dtype: str = "float16", compression: str = "gzip", level: int = 4, batch_size: int = 100,
                    device: torch.device | str = "cpu") -> dict[str, Any]:
    """Run a set through the measuring model and stream every conv layer's maps to ``out_path``."""
    from advflow.models.architectures import load_checkpoint

    if dtype not in DTYPES:
        raise ValueError(f"features dtype {dtype!r} is not supported; allowed: {', '.join(DTYPES)}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"features compression {compression!r} is not supported; allowed: {', '.join(COMPRESSIONS)}")
    device = torch.device(device)
    model = load_checkpoint(model_path, device).eval()
    data = load_set(set_file)
    n = len(data.labels)
    choice = measured_layers(model)
    shapes = layer_shapes(model, tuple(data.x.shape[1:]), choice)
    names = list(shapes)
    options: dict[str, Any] = {}
    if compression == "gzip":
        options = {"compression": "gzip", "compression_opts": int(level), "shuffle": True}
    elif compression == "lzf":
        options = {"compression": "lzf", "shuffle": True}
    predictions = np.zeros(n, dtype=np.int64)
    started = last = time.monotonic()
    with atomic_h5(out_path) as h5:
        h5.create_dataset("input", data=data.x.numpy().astype(np.float32), chunks=(1, *data.x.shape[1:]), **options)
        layers = {name: h5.create_dataset(f"layers/{name}", shape=(n, *shape), dtype=dtype,
                                          chunks=(1, *shape), **options) for name, shape in shapes.items()}
        for start in range(0, n, batch_size):
            x = data.x[start:start + batch_size].to(device)
            maps, logits = forward_maps(model, x, choice)  # one pass: the maps and the predictions
            predictions[start:start + len(x)] = logits.argmax(1).cpu().numpy()
            for name, m in zip(names, maps.values()):
                layers[name][start:start + len(x)] = m.cpu().numpy().astype(dtype)
            if time.monotonic() - last > 30 or start + batch_size >= n:
                last = time.monotonic()
                log.info("features: %d / %d inputs (%.0f s)", min(start + batch_size, n), n, last - started)
        h5.create_dataset("labels", data=data.labels)
        h5.create_dataset("predictions", data=predictions)
        for key, value in data.extra.items():
            h5.create_dataset(key, data=value)
        h5.attrs.update({"model": model.arch["name"], "set": set_name, "layers": json.dumps(names),
                         "shapes": json.dumps(shapes), "dtype": dtype, "compression": compression})
        if n <= _ATTR_LIMIT:
            h5.attrs["labels"] = data.labels.astype(np.int16)
            h5.attrs["predictions"] = predictions.astype(np.int16)
    return {"inputs": n, "layers": len(names), "seconds": time.monotonic() - started}
