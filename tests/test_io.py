"""Outputs appear atomically under their final name, with the usual file mode."""

import os

import pytest

from advflow.io import atomic_path


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
