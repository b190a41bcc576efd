"""Writing results so that an interrupted job never leaves a file that looks complete.

Every output is written under a temporary name in its own folder and renamed when complete;
a rename within one filesystem is atomic, so a reader sees either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np


#: How every job opens HDF5 files: the config's ``hdf5_locking``, passed to jobs through this variable
#: (see :func:`advflow.workflow.digests.export_hdf5_locking`). Unset or ``auto``: HDF5's default.
LOCKING_ENV = "ADVFLOW_HDF5_LOCKING"
_LOCKING = {"auto": None, "true": True, "false": False, "best-effort": "best-effort"}


def hdf5_locking() -> bool | str | None:
    """The ``locking`` argument of h5py.File for this process (from ``ADVFLOW_HDF5_LOCKING``)."""
    value = os.environ.get(LOCKING_ENV, "auto").strip().lower()
    if value not in _LOCKING:
        raise ValueError(f"{LOCKING_ENV}={value!r} is not a locking mode; allowed: {', '.join(_LOCKING)} "
                         "(set hdf5_locking in the config)")
    return _LOCKING[value]


class CorruptFileError(OSError):
    """An input file exists but cannot be read (truncated or damaged)."""


class DamagedFileError(CorruptFileError):
    """A file the workflow wrote is damaged (truncated, wrong shape, non-finite values, written for other
    settings); it has been moved aside, so the next ``snakemake`` run rebuilds it."""


def aside_path(path: str | Path) -> Path:
    """Where a damaged ``path`` is kept: ``<name>.damaged``, or ``<name>.damaged.<k>`` when earlier ones are
    there (none is ever overwritten)."""
    path = Path(path)
    aside = path.with_name(path.name + ".damaged")
    k = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.damaged.{k}")
        k += 1
    return aside


def quarantine(path: str | Path, problem: str, *, rebuilt_by: str = "the workflow stage that writes it"
               ) -> DamagedFileError:
    """Move a damaged file aside (kept for inspection, never deleted) and return the error to raise.

    The file is gone from its own name, so the next plain ``snakemake`` run sees it missing and rebuilds
    it (every file the workflow writes is a target of ``rule all``), and what depends on it after it. The
    message names the file, the problem, where it went and what to do.
    """
    path = Path(path)
    aside = aside_path(path)
    try:
        path.replace(aside)
        where = f"it was moved to {aside.name} (kept, not used)"
    except OSError as error:
        where = f"moving it aside failed ({error}); delete it"
    return DamagedFileError(f"{path}: damaged ({problem}); {where}. Run snakemake again: it rebuilds the "
                            f"file with {rebuilt_by}, then what depends on it.")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name is ``.{name}.<random>.tmp``. One left by a job that was killed (SIGKILL, a
    node lost) is removed here, when the output is written again: Snakemake never runs two jobs for
    the same output at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); outputs get the usual mode
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_h5(path: str | Path) -> Iterator[h5py.File]:
    """Open a new HDF5 file for writing that appears at ``path`` only once it is closed cleanly."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", locking=hdf5_locking()) as h5:
            yield h5


def open_h5(path: str | Path, *, damaged: str = "quarantine") -> h5py.File:
    """Open an HDF5 file for reading, with an error that names the file and the fix.

    A file HDF5 cannot open (truncated, overwritten) is moved aside by :func:`quarantine`
    (``damaged="quarantine"``, for the files the workflow writes, which the next run rebuilds) or left
    where it is (``damaged="keep"``, for files a user supplies). A locking failure is neither: the
    message points at ``hdf5_locking``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run the workflow stage that writes it")
    try:
        return h5py.File(path, "r", locking=hdf5_locking())
    except OSError as err:
        text = str(err).lower()
        if "unable to lock" in text or "file locking" in text:
            raise OSError(f"{path}: HDF5 could not lock the file ({err}); on a filesystem without locks set "
                          "`hdf5_locking: false` in the config") from err
        if "permission denied" in text or not os.access(path, os.R_OK):
            raise PermissionError(f"{path}: not readable by this user ({err}); fix its permissions") from err
        if damaged == "quarantine":
            raise quarantine(path, f"cannot be read as HDF5: {err}") from err
        raise CorruptFileError(
            f"{path}: cannot be read as HDF5 ({err}); it is truncated or damaged. Replace it with a whole copy."
        ) from err


def check_h5(h5: h5py.File, path: str | Path, *, datasets: dict[str, tuple[int | None, ...]],
             attrs: dict[str, Any] | None = None, finite: tuple[str, ...] = ()) -> int:
    """Check an open HDF5 file the workflow wrote before it is used; quarantine it when it is damaged.

    ``datasets`` maps each required dataset to its expected shape, ``None`` for a free dimension; the
    first dimension of every dataset is the number of inputs and must be the same for all (returned).
    ``attrs`` are attributes that must hold these values (which set, model and settings produced the
    file); ``finite`` lists datasets whose values must all be finite.
    """
    n = None
    for name, shape in datasets.items():
        if name not in h5:
            raise quarantine(path, f"no dataset '{name}'")
        found = h5[name].shape
        if len(found) != len(shape) or any(s is not None and s != f for s, f in zip(shape, found)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise quarantine(path, f"'{name}' has shape {found}, expected {want}")
        if found:
            if n is not None and found[0] != n:
                raise quarantine(path, f"'{name}' has {found[0]} rows where the others have {n}")
            n = found[0]
    for key, value in (attrs or {}).items():
        if key not in h5.attrs:
            raise quarantine(path, f"no attribute '{key}'")
        have = h5.attrs[key]
        have = have.decode() if isinstance(have, bytes) else have
        if have != value:
            raise quarantine(path, f"attribute '{key}' is {have!r}, this run expects {value!r}")
    for name in finite:
        try:
            values = h5[name][...]
        except OSError as err:
            raise quarantine(path, f"'{name}' cannot be read: {err}") from err
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise quarantine(path, f"'{name}' holds {int((~np.isfinite(values)).sum())} NaN or infinite values")
    return int(n or 0)


def write_json(path: str | Path, record: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
