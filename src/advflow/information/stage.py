"""The MI stage: per input, the source and target MI matrices of every conv layer, and its
information paths (docs/method.md, "Information flow").

For each input and conv layer k, S^(k) (n_k x n_s) holds the MI between each of the layer's maps and
each input channel, T^(k) (n_k x n_t) the MI with each map of the last conv layer (the target maps),
computed by :func:`advflow.information.mi.mi_against` in batches of inputs on the GPU when there is one. Writes::

    mi/{model}/{set}.h5      S/{layer} (N, n_k, n_s), T/{layer} (N, n_k, n_t) float32, dead/{layer} (N,)
                             float32, labels, predictions (+ seed, step for trajectories); attrs: model,
                             set, layers, buckets, bias_correction, bias_seed
    paths/{model}/{set}.csv  input, layer (1..K), layer_name, mu_s, mu_t, label, prediction, dead,
                             mu_s_bias, mu_t_bias (+ seed, step)

Estimator diagnostics, per input and layer: ``dead`` is the share of the layer's maps that are
constant (max == min over positions: one bucket, MI 0 with anything); ``mu_s_bias`` and ``mu_t_bias``
are the layer means of S and T computed with the layer's maps position-shuffled (after pooling to the
compared size; :func:`advflow.information.mi.seeded_permutations` of (seed, input index, layer index)) against the
unshuffled reference: the MI the estimator gives maps with those marginals and no alignment. ``mu_s``
and ``mu_t`` are the raw layer means of S^(k) and T^(k) (the paper's estimator) or, with
``bias_correction``, the raw means minus ``mu_s_bias`` / ``mu_t_bias``; the bias columns are written
either way, so the other variant is always recoverable (raw = mu + bias when corrected).

Features are read batch by batch; memory holds one batch of maps and its matrices.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from advflow.workflow.io import CorruptFileError, DamagedFileError, atomic_h5, open_h5, quarantine
from advflow.information.mi import mi_against, seeded_permutations
from advflow.information.paths import DIAGNOSTIC_COLUMNS, write_paths  # noqa: F401 (the paths CSV's one home)
from advflow.information.paths import information_paths

log = logging.getLogger("advflow.information.stage")


class FeaturesCorruptError(DamagedFileError):
    """A features file that cannot be read to the end, or not of this set and model; it has been moved aside."""


def _quarantine(path: Path, problem: str) -> FeaturesCorruptError:
    """Move a damaged features file aside (:func:`advflow.workflow.io.quarantine`: kept, never deleted) so that the next
    ``snakemake`` run sees it missing and rebuilds it."""
    return FeaturesCorruptError(str(quarantine(path, f"features file: {problem}", rebuilt_by="rule features")))


def _check_layout(h5: h5py.File) -> tuple[list[str], int]:
    names = json.loads(h5.attrs["layers"])
    n = len(h5["input"])
    for name in names:
        if h5[f"layers/{name}"].shape[0] != n:
            raise ValueError(f"layer {name} has {h5[f'layers/{name}'].shape[0]} inputs, 'input' has {n}")
    for key in ("labels", "predictions"):
        if len(h5[key]) != n:
            raise ValueError(f"'{key}' has {len(h5[key])} entries for {n} inputs")
    return names, n


def measure_set(features_path: str | Path, out_mi: str | Path, out_paths: str | Path, *, buckets: int = 8,
                batch_size: int = 16, device: torch.device | str = "cpu", bias_correction: bool = False,
                seed: int = 0, expect: dict[str, str] | None = None) -> dict[str, Any]:
    """S and T of every layer for every input of a features file, and its information paths, with the
    dead-map shares and the shuffled-map MI (the estimator's bias, seeded by ``seed``) of each input and
    layer. ``bias_correction`` subtracts that bias from ``mu_s`` and ``mu_t`` (default: the raw means).
    ``expect``: the features file's ``model`` and ``set`` attributes this job needs; a file written for
    others, or that cannot be read to the end, is moved aside and rebuilt by the next run."""
    if not isinstance(bias_correction, (bool, np.bool_)):
        raise ValueError(f"bias_correction must be true or false; got {type(bias_correction).__name__} "
                         f"{bias_correction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer; got {type(seed).__name__} {seed!r}")
    features_path = Path(features_path)
    device = torch.device(device)
    started = last = time.monotonic()
    try:
        source = open_h5(features_path, damaged="keep")
    except CorruptFileError as error:
        raise _quarantine(features_path, str(error.__cause__ or error)) from error
    with source as h5, atomic_h5(out_mi) as out:
            try:
                names, n = _check_layout(h5)
                meta = {key: h5[key][:] for key in ("labels", "predictions", "seed", "step") if key in h5}
                attrs = {key: h5.attrs[key] for key in ("model", "set")}
            except (KeyError, ValueError, OSError) as error:
                raise _quarantine(features_path, f"{type(error).__name__}: {error}") from error
            for key, value in (expect or {}).items():
                if str(attrs[key]) != value:
                    raise _quarantine(features_path, f"written for {key} {attrs[key]!r}, this job measures {value!r}")
            target_name = names[-1]
            n_s = h5["input"].shape[1]
            n_t = h5[f"layers/{target_name}"].shape[1]
            # One input per chunk, compressed: many maps are constant (ReLU zeros), so many MI are 0.
            packed = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
            s_sets = {k: out.create_dataset(f"S/{k}", shape=(n, h5[f"layers/{k}"].shape[1], n_s), dtype="f4",
                                            chunks=(1, h5[f"layers/{k}"].shape[1], n_s), **packed) for k in names}
            t_sets = {k: out.create_dataset(f"T/{k}", shape=(n, h5[f"layers/{k}"].shape[1], n_t), dtype="f4",
                                            chunks=(1, h5[f"layers/{k}"].shape[1], n_t), **packed) for k in names}
            dead_sets = {k: out.create_dataset(f"dead/{k}", shape=(n,), dtype="f4") for k in names}
            mu_s = np.zeros((n, len(names)))
            mu_t = np.zeros((n, len(names)))
            mu_s_bias = np.zeros((n, len(names)))
            mu_t_bias = np.zeros((n, len(names)))
            dead = np.zeros((n, len(names)))
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                try:
                    x = torch.as_tensor(h5["input"][start:stop], device=device, dtype=torch.float32)
                    target = torch.as_tensor(h5[f"layers/{target_name}"][start:stop], device=device,
                                             dtype=torch.float32)
                    layers = [torch.as_tensor(h5[f"layers/{k}"][start:stop], device=device, dtype=torch.float32)
                              for k in names]
                except OSError as error:
                    raise _quarantine(features_path, f"reading inputs {start}-{stop}: {error}") from error
                sources = mi_against(layers, x, buckets)
                targets = mi_against(layers, target, buckets)
                for name, s, t in zip(names, sources, targets):
                    s_sets[name][start:stop] = s.float().cpu().numpy()
                    t_sets[name][start:stop] = t.float().cpu().numpy()
                mu_s[start:stop], mu_t[start:stop] = (m.double().cpu().numpy()
                                                      for m in information_paths(sources, targets))
                del sources, targets

                def shuffle(k: int, positions: int, first: int = start, last: int = stop) -> torch.Tensor:
                    return seeded_permutations(seed, range(first, last), k, positions, device=device)

                shuffled = information_paths(mi_against(layers, x, buckets, permutation=shuffle),
                                             mi_against(layers, target, buckets, permutation=shuffle))
                mu_s_bias[start:stop], mu_t_bias[start:stop] = (m.double().cpu().numpy() for m in shuffled)
                for j, (name, maps) in enumerate(zip(names, layers)):
                    flat = maps.flatten(2)
                    share = (flat.amax(dim=2) == flat.amin(dim=2)).double().mean(dim=1).cpu().numpy()
                    dead[start:stop, j] = share
                    dead_sets[name][start:stop] = share.astype(np.float32)
                if time.monotonic() - last > 30 or stop == n:
                    last = time.monotonic()
                    log.info("mi: %d / %d inputs (%.0f s)", stop, n, last - started)
            for key, value in meta.items():
                out.create_dataset(key, data=value)
            out.attrs.update({**attrs, "layers": json.dumps(names), "buckets": int(buckets), "units": "nats",
                              "bias_correction": bool(bias_correction), "bias_seed": int(seed)})
    if bias_correction:
        mu_s, mu_t = mu_s - mu_s_bias, mu_t - mu_t_bias
    write_paths(out_paths, names, mu_s, mu_t, meta,
                diagnostics={"dead": dead, "mu_s_bias": mu_s_bias, "mu_t_bias": mu_t_bias})
    return {"inputs": n, "layers": len(names), "seconds": time.monotonic() - started}


