"""Information paths of inputs (docs/method.md, "Information flow"), from the MI matrices of :mod:`advflow.information.mi`.

For one input and conv layers k = 1..K, mu_s^(k) is the mean of S^(k) (layer k's maps against the
input's channels) and mu_t^(k) the mean of T^(k) (against the last conv layer's maps). The paths are

    IIP = {(k, mu_s^(k))},  OIP = {(k, mu_t^(k))},  IOC = {(mu_s^(k), mu_t^(k))},

and the distance of two paths is (1/K) sum_k |mu_1^(k) - mu_2^(k)|. Layers are numbered from 1, as in
the paper. Every function works on batches: the layer axis is the last one of a ``mu`` tensor.

This module is also the one home of the **paths CSV** (``paths/{model}/{set}.csv``), one row per (input,
layer): ``input, layer, layer_name, mu_s, mu_t, label, prediction`` [+ ``dead, mu_s_bias, mu_t_bias``]
[+ ``seed, step``]. The mi stage writes it (:func:`write_paths`); the aggregate stage reads its columns
(:func:`read_paths_csv`), the report and the API one row of K layers per input (:func:`read_input_paths`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advflow.workflow.io import atomic_path, check_h5, open_h5, quarantine


def path_means(matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(N, K)``: the mean of each layer's MI matrix ``(N, n_k, n_x)`` over its n_k * n_x entries."""
    if len(matrices) == 0:
        raise ValueError("path_means needs the MI matrices of at least one layer; got none")
    for k, matrix in enumerate(matrices):
        if matrix.dim() != 3:
            raise ValueError(f"matrices[{k}] must have shape (N, n_k, n_x); got {tuple(matrix.shape)}")
        if matrix.shape[1] * matrix.shape[2] == 0:
            raise ValueError(f"matrices[{k}] has no entries to average; got shape {tuple(matrix.shape)}")
        if matrix.shape[0] != matrices[0].shape[0]:
            raise ValueError(f"matrices[{k}] has {matrix.shape[0]} inputs but matrices[0] has {matrices[0].shape[0]}")
    return torch.stack([matrix.mean(dim=(1, 2)) for matrix in matrices], dim=1)


def information_paths(S: Sequence[torch.Tensor], T: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu_s, mu_t)``, each ``(N, K)``: the layer means of the S^(k) and T^(k) matrices."""
    if len(S) != len(T):
        raise ValueError(f"S and T must cover the same layers; got {len(S)} S matrices and {len(T)} T matrices")
    mu_s, mu_t = path_means(S), path_means(T)
    if mu_s.shape[0] != mu_t.shape[0]:
        raise ValueError(f"S and T must cover the same inputs; got {mu_s.shape[0]} and {mu_t.shape[0]}")
    return mu_s, mu_t


def _check_path(name: str, mu: torch.Tensor) -> None:
    if mu.dim() < 1 or mu.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., K) with K >= 1 layers; got {tuple(mu.shape)}")


def _with_layer_numbers(mu: torch.Tensor) -> torch.Tensor:
    layers = torch.arange(1, mu.shape[-1] + 1, dtype=mu.dtype, device=mu.device).expand_as(mu)
    return torch.stack([layers, mu], dim=-1)


def iip(mu_s: torch.Tensor) -> torch.Tensor:
    """The input information path: points ``(k, mu_s^(k))`` as ``(..., K, 2)``, k = 1..K."""
    _check_path("mu_s", mu_s)
    return _with_layer_numbers(mu_s)


def oip(mu_t: torch.Tensor) -> torch.Tensor:
    """The output information path: points ``(k, mu_t^(k))`` as ``(..., K, 2)``, k = 1..K."""
    _check_path("mu_t", mu_t)
    return _with_layer_numbers(mu_t)


def ioc(mu_s: torch.Tensor, mu_t: torch.Tensor) -> torch.Tensor:
    """The input-output curve: points ``(mu_s^(k), mu_t^(k))`` as ``(..., K, 2)``."""
    _check_path("mu_s", mu_s)
    _check_path("mu_t", mu_t)
    if mu_s.shape != mu_t.shape:
        raise ValueError(f"mu_s and mu_t must have the same shape (..., K); got {tuple(mu_s.shape)} "
                         f"and {tuple(mu_t.shape)}")
    return torch.stack([mu_s, mu_t], dim=-1)


def path_distance(mu1: torch.Tensor, mu2: torch.Tensor) -> torch.Tensor:
    """(1/K) sum_k |mu1^(k) - mu2^(k)| over the last (layer) axis; leading axes broadcast, so a batch
    of paths ``(N, K)`` can be compared with one path ``(K,)``. Returns shape ``broadcast(...)``."""
    _check_path("mu1", mu1)
    _check_path("mu2", mu2)
    if mu1.shape[-1] != mu2.shape[-1]:
        raise ValueError(f"paths must have the same number of layers K; got {mu1.shape[-1]} and {mu2.shape[-1]}")
    try:
        torch.broadcast_shapes(mu1.shape, mu2.shape)
    except RuntimeError as error:
        raise ValueError(f"the leading axes of mu1 {tuple(mu1.shape)} and mu2 {tuple(mu2.shape)} do not "
                         f"broadcast") from error
    return (mu1 - mu2).abs().mean(dim=-1)


# ---------------------------------------------------------------------------------------------------------
# The paths CSV: written by the mi stage, read by the aggregate and report stages and the API


#: The diagnostic columns of a paths CSV, written after ``prediction`` when given (see the module doc).
DIAGNOSTIC_COLUMNS = ("dead", "mu_s_bias", "mu_t_bias")


def write_paths(path: str | Path, names: list[str], mu_s: np.ndarray, mu_t: np.ndarray,
                meta: dict[str, np.ndarray], *, diagnostics: dict[str, np.ndarray] | None = None) -> None:
    """The per-input information paths as CSV: one row per (input, layer). ``diagnostics`` maps each of
    :data:`DIAGNOSTIC_COLUMNS` to an ``(N, K)`` array (all or none)."""
    extra = [key for key in ("seed", "step") if key in meta]
    columns = list(DIAGNOSTIC_COLUMNS) if diagnostics is not None else []
    if diagnostics is not None and set(diagnostics) != set(DIAGNOSTIC_COLUMNS):
        raise ValueError(f"diagnostics must hold exactly {', '.join(DIAGNOSTIC_COLUMNS)}; got "
                         f"{', '.join(sorted(diagnostics))}")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["input", "layer", "layer_name", "mu_s", "mu_t", "label", "prediction", *columns, *extra])
        for i in range(mu_s.shape[0]):
            for j, name in enumerate(names):
                writer.writerow([i, j + 1, name, repr(float(mu_s[i, j])), repr(float(mu_t[i, j])),
                                 int(meta["labels"][i]), int(meta["predictions"][i]),
                                 *(repr(float(diagnostics[c][i, j])) for c in columns),  # type: ignore[index]
                                 *(int(meta[key][i]) for key in extra)])


def _damaged(path: Path, problem: str, damaged: str) -> Exception:
    """The error for a paths CSV that is not whole: moved aside for the workflow's own files (the mi rule
    writes it again on the next run), or left in place (``damaged="keep"``, a file from elsewhere)."""
    if damaged == "quarantine":
        return quarantine(path, problem, rebuilt_by="rule mi")
    return ValueError(f"{path}: {problem}")


def read_paths_csv(paths_csv: str | Path, *, damaged: str = "quarantine") -> dict[str, np.ndarray]:
    """The columns of a per-input paths CSV (docs/method.md: ``input, layer, layer_name, mu_s, mu_t, label,
    prediction`` [+ ``dead, mu_s_bias, mu_t_bias``] [+ ``seed, step``]) as arrays: float64 for ``layer``,
    ``mu_s``, ``mu_t``, ``step`` and the diagnostics ``dead``, ``mu_s_bias``, ``mu_t_bias`` (absent
    from older CSVs), strings for the others. A file that is not whole (missing columns, no rows, a short
    or unreadable row, a non-finite ``mu_s`` or ``mu_t``) is damaged: see :func:`_damaged`."""
    paths_csv = Path(paths_csv)
    if not paths_csv.is_file():
        raise FileNotFoundError(f"{paths_csv}: no such file; run the workflow stage that writes the paths")
    with paths_csv.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("layer", "mu_s", "mu_t") if c not in (reader.fieldnames or [])]
        if missing:
            raise _damaged(paths_csv, f"missing column(s) {', '.join(missing)}; a paths CSV has input, layer, "
                           f"layer_name, mu_s, mu_t, label, prediction", damaged)
        rows = list(reader)
    if not rows:
        raise _damaged(paths_csv, "no rows; a set needs at least one input's path", damaged)
    short = [n for n, row in enumerate(rows, start=2) if None in row.values() or None in row]
    if short:
        raise _damaged(paths_csv, f"line {short[0]} has {'fewer' if None in rows[short[0] - 2].values() else 'more'} "
                       f"fields than the header (cut short?)", damaged)
    columns: dict[str, np.ndarray] = {}
    for name in reader.fieldnames or []:
        cells = [row[name] for row in rows]
        if name in ("layer", "mu_s", "mu_t", "step", "dead", "mu_s_bias", "mu_t_bias"):
            try:
                columns[name] = np.array([float(c) if c != "" else math.nan for c in cells])
            except ValueError as error:
                raise _damaged(paths_csv, f"column {name} must hold numbers ({error})", damaged) from error
        else:
            columns[name] = np.array(cells, dtype=str)
    for name in ("layer", "mu_s", "mu_t"):
        bad = ~np.isfinite(columns[name])
        if bad.any():
            raise _damaged(paths_csv, f"{int(bad.sum())} rows with no finite {name} (first: line "
                           f"{int(np.argmax(bad)) + 2})", damaged)
    return columns


@dataclass(frozen=True)
class MIRecord:
    """What the MI file of a set says about its inputs: how many, the layers, their labels and predictions."""

    inputs: int
    layers: list[str]
    labels: np.ndarray
    predictions: np.ndarray


def read_mi_record(mi_h5: str | Path, *, model: str | None = None, set_: str | None = None) -> MIRecord:
    """Check an MI file of the mi rule and return its :class:`MIRecord`. A file that HDF5 cannot open, that
    lacks a layer's S or T, whose datasets disagree on the number of inputs, or that was written for another
    model or set (``model``, ``set_``) is moved aside (:func:`advflow.workflow.io.quarantine`), so the next run
    measures the set again."""
    import json

    mi_h5 = Path(mi_h5)
    with open_h5(mi_h5) as h5:
        try:
            layers = json.loads(h5.attrs["layers"])
        except (KeyError, ValueError, TypeError) as error:
            raise quarantine(mi_h5, f"no readable 'layers' attribute ({error})", rebuilt_by="rule mi") from error
        shapes: dict[str, tuple[int | None, ...]] = {"labels": (None,), "predictions": (None,)}
        for name in layers:
            shapes.update({f"S/{name}": (None, None, None), f"T/{name}": (None, None, None), f"dead/{name}": (None,)})
        expected = {key: value for key, value in (("model", model), ("set", set_)) if value is not None}
        n = check_h5(h5, mi_h5, datasets=shapes, attrs=expected)
        return MIRecord(n, list(layers), h5["labels"][:].astype(np.int64), h5["predictions"][:].astype(np.int64))


def check_paths(paths: InputPaths, record: MIRecord, path: str | Path) -> None:
    """A paths CSV must hold the inputs, layers, labels and predictions of its MI file (both are written by
    one job of the mi rule); a CSV that does not (cut short at a row boundary, from another run) is moved
    aside so the next run writes both again."""
    problem = None
    if paths.inputs.size != record.inputs:
        problem = f"{paths.inputs.size} inputs where its MI file has {record.inputs} (cut short?)"
    elif paths.layers.size != len(record.layers):
        problem = f"{paths.layers.size} layers where its MI file has {len(record.layers)}"
    elif not (np.array_equal(paths.label, record.labels) and np.array_equal(paths.prediction, record.predictions)):
        problem = "labels or predictions that differ from its MI file's"
    if problem:
        raise quarantine(path, problem, rebuilt_by="rule mi")


@dataclass(frozen=True)
class InputPaths:
    """The per-input paths of one set on one model, inputs in the order of their ``input`` index:
    ``layers (K,)``, ``mu_s``, ``mu_t (N, K)``, ``label``, ``prediction (N,)`` and, for trajectories,
    ``seed``, ``step (N,)``."""

    inputs: np.ndarray
    layers: np.ndarray
    mu_s: np.ndarray
    mu_t: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    seed: np.ndarray | None = None
    step: np.ndarray | None = None
    bias_s: np.ndarray | None = None  # (N, K): MI of position-shuffled maps (the estimator's bias), when recorded
    bias_t: np.ndarray | None = None
    dead: np.ndarray | None = None  # (N, K): share of the layer's maps that are constant


def read_input_paths(path: Path, *, record: MIRecord | None = None, damaged: str = "quarantine") -> InputPaths:
    """A paths CSV as one row of K layers per input; every input 0 … N−1 must have every layer once, and,
    given its MI file's ``record`` (:func:`read_mi_record`), N, K, the labels and predictions must be the
    MI file's. A CSV that breaks any of this is damaged (see :func:`read_paths_csv`)."""
    path = Path(path)
    return input_paths(read_paths_csv(path, damaged=damaged), path, record=record, damaged=damaged)


def input_paths(columns: dict[str, np.ndarray], path: Path, *, record: MIRecord | None = None,
                damaged: str = "quarantine") -> InputPaths:
    """:func:`read_input_paths` of the columns :func:`read_paths_csv` read from ``path`` (read once by a caller
    that also needs them as rows)."""
    columns = dict(columns)
    for name in ("input", "label", "prediction"):
        if name not in columns:
            raise _damaged(path, f"missing column {name}; a paths CSV has input, layer, layer_name, mu_s, mu_t, "
                           f"label, prediction", damaged)
    try:
        index = columns["input"].astype(np.int64)
        for name in ("label", "prediction"):
            columns[name] = columns[name].astype(np.int64)
    except ValueError as error:
        raise _damaged(path, f"columns input, label and prediction must hold integers ({error})", damaged) from error
    inputs, row_of = np.unique(index, return_inverse=True)
    layers, col_of = np.unique(columns["layer"], return_inverse=True)
    n, k = inputs.size, layers.size
    counts = np.zeros((n, k), dtype=np.int64)
    np.add.at(counts, (row_of, col_of), 1)
    if not (counts == 1).all():
        bad = np.argwhere(counts != 1)[0]
        raise _damaged(path, f"input {inputs[bad[0]]} has {counts[tuple(bad)]} rows for layer "
                       f"{layers[bad[1]]:g}; every input needs exactly one row per layer", damaged)
    if not np.array_equal(inputs, np.arange(n)):
        missing = sorted(set(range(int(inputs.max()) + 1)) - set(inputs.tolist()))
        raise _damaged(path, f"inputs are not 0 … {n - 1} (missing {missing[:5]})", damaged)
    def per_layer(name: str) -> np.ndarray | None:
        if name not in columns:
            return None
        values = np.empty((n, k))
        values[row_of, col_of] = columns[name].astype(np.float64)
        return values

    mu_s, mu_t = per_layer("mu_s"), per_layer("mu_t")
    first = np.zeros(n, dtype=np.int64)
    first[row_of[::-1]] = np.arange(index.size)[::-1]  # a row of each input, for its per-input columns

    def per_input(name: str) -> np.ndarray | None:
        return columns[name][first] if name in columns else None

    step = per_input("step")
    out = InputPaths(inputs, layers, mu_s, mu_t, per_input("label").astype(np.int64),
                     per_input("prediction").astype(np.int64), per_input("seed"),
                     None if step is None else step.astype(np.int64), per_layer("mu_s_bias"), per_layer("mu_t_bias"),
                     per_layer("dead"))
    if record is not None:
        check_paths(out, record, path)
    return out
