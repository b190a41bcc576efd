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


#: How every job opens HDF5 files: the config's ``hdf5_locking``, passed to jobs through this variable
#: (see :func:`advflow.control.export_hdf5_locking`). Unset or ``auto``: HDF5's default.
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


def open_h5(path: str | Path) -> h5py.File:
    """Open an HDF5 file for reading, with an error that names the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; run the workflow stage that writes it")
    try:
        return h5py.File(path, "r", locking=hdf5_locking())
    except OSError as err:
        raise CorruptFileError(
            f"{path}: cannot be read as HDF5 ({err}); it is truncated or damaged. Delete it and rerun "
            "the workflow to rebuild it."
        ) from err


def write_json(path: str | Path, record: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
