"""Outputs appear atomically under their final name, with the usual file mode."""

import os

import pytest

from advflow.workflow.io import atomic_path


def test_atomic_outputs_get_the_usual_mode_not_mkstemps_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.csv") as tmp:
            tmp.write_text("a\n")
    finally:
        os.umask(old)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o644


def test_a_failed_block_leaves_neither_the_output_nor_a_temporary_file(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.csv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode, expected", [("false", (0, 0)), ("true", (1, 0)), ("best-effort", (1, 1))])
def test_hdf5_locking_follows_the_config_in_every_file_the_jobs_open(tmp_path, monkeypatch, mode, expected):
    from advflow.workflow.io import atomic_h5, open_h5
    from advflow.workflow.digests import export_hdf5_locking

    monkeypatch.setenv("ADVFLOW_HDF5_LOCKING", "auto")  # restored after the test, whatever export sets
    export_hdf5_locking({"false": False, "true": True}.get(mode, mode))  # what the Snakefile does
    with atomic_h5(tmp_path / "a.h5") as h5:
        assert h5.id.get_access_plist().get_file_locking() == expected
        h5["x"] = [1, 2]
    with open_h5(tmp_path / "a.h5") as h5:
        assert h5.id.get_access_plist().get_file_locking() == expected


def test_an_unknown_locking_mode_names_the_variable_and_the_modes(monkeypatch):
    from advflow.workflow.io import hdf5_locking

    monkeypatch.setenv("ADVFLOW_HDF5_LOCKING", "sometimes")
    with pytest.raises(ValueError, match="ADVFLOW_HDF5_LOCKING='sometimes' is not a locking mode; allowed: auto"):
        hdf5_locking()
