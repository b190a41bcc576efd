"""The MI stage: per input, the source and target MI matrices of every conv layer, and its
information paths (SPEC, "Information flow").

For each input and conv layer k, S^(k) (n_k x n_s) holds the MI between each of the layer's maps and
each input channel, T^(k) (n_k x n_t) the MI with each map of the last conv layer (the target maps),
computed by :func:`advflow.mi.mi_against` in batches of inputs on the GPU when there is one. Writes::

    mi/{model}/{set}.h5      S/{layer} (N, n_k, n_s), T/{layer} (N, n_k, n_t) float32, labels,
                             predictions (+ seed, step for trajectories); attrs: model, set, layers,
                             buckets
    paths/{model}/{set}.csv  input, layer (1..K), layer_name, mu_s, mu_t, label, prediction
                             (+ seed, step): mu_s = mean S^(k), mu_t = mean T^(k)

Features are read batch by batch; memory holds one batch of maps and its matrices.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from advflow.io import CorruptFileError, atomic_h5, atomic_path, open_h5
from advflow.mi import mi_against
from advflow.paths import information_paths

log = logging.getLogger("advflow.information")


class FeaturesCorruptError(CorruptFileError):
    """A features file that cannot be read to the end; it has been moved aside."""


def _quarantine(path: Path, problem: str) -> FeaturesCorruptError:
    """Move an unreadable features file aside (kept for inspection, never deleted) so that the next
    ``snakemake`` run sees it missing and rebuilds it."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        path.replace(aside)
        where = f"it was moved to {aside}"
    except OSError as error:
        where = f"moving it aside failed ({error}); delete it"
    return FeaturesCorruptError(f"{path}: features file is truncated or corrupted ({problem}); {where}. "
                                "Run snakemake again: it rebuilds the features and then this step.")


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
                batch_size: int = 16, device: torch.device | str = "cpu") -> dict[str, Any]:
    """S and T of every layer for every input of a features file, and its information paths."""
    features_path = Path(features_path)
    device = torch.device(device)
    started = last = time.monotonic()
    try:
        source = open_h5(features_path)
    except CorruptFileError as error:
        raise _quarantine(features_path, str(error.__cause__ or error)) from error
    with source as h5, atomic_h5(out_mi) as out:
            try:
                names, n = _check_layout(h5)
                meta = {key: h5[key][:] for key in ("labels", "predictions", "seed", "step") if key in h5}
                attrs = {key: h5.attrs[key] for key in ("model", "set")}
            except (KeyError, ValueError, OSError) as error:
                raise _quarantine(features_path, f"{type(error).__name__}: {error}") from error
            target_name = names[-1]
            n_s = h5["input"].shape[1]
            n_t = h5[f"layers/{target_name}"].shape[1]
            # One input per chunk, compressed: many maps are constant (ReLU zeros), so many MI are 0.
            packed = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
            s_sets = {k: out.create_dataset(f"S/{k}", shape=(n, h5[f"layers/{k}"].shape[1], n_s), dtype="f4",
                                            chunks=(1, h5[f"layers/{k}"].shape[1], n_s), **packed) for k in names}
            t_sets = {k: out.create_dataset(f"T/{k}", shape=(n, h5[f"layers/{k}"].shape[1], n_t), dtype="f4",
                                            chunks=(1, h5[f"layers/{k}"].shape[1], n_t), **packed) for k in names}
            mu_s = np.zeros((n, len(names)))
            mu_t = np.zeros((n, len(names)))
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
                if time.monotonic() - last > 30 or stop == n:
                    last = time.monotonic()
                    log.info("mi: %d / %d inputs (%.0f s)", stop, n, last - started)
            for key, value in meta.items():
                out.create_dataset(key, data=value)
            out.attrs.update({**attrs, "layers": json.dumps(names), "buckets": int(buckets), "units": "nats"})
    write_paths(out_paths, names, mu_s, mu_t, meta)
    return {"inputs": n, "layers": len(names), "seconds": time.monotonic() - started}


def write_paths(path: str | Path, names: list[str], mu_s: np.ndarray, mu_t: np.ndarray,
                meta: dict[str, np.ndarray]) -> None:
    """The per-input information paths as CSV: one row per (input, layer)."""
    extra = [key for key in ("seed", "step") if key in meta]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "layer", "layer_name", "mu_s", "mu_t", "label", "prediction", *extra])
        for i in range(mu_s.shape[0]):
            for j, name in enumerate(names):
                writer.writerow([i, j + 1, name, repr(float(mu_s[i, j])), repr(float(mu_t[i, j])),
                                 int(meta["labels"][i]), int(meta["predictions"][i]),
                                 *(int(meta[key][i]) for key in extra)])
