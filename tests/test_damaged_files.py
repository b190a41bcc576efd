"""Files the workflow wrote are checked when read; a damaged one is moved aside (kept as ``<name>.damaged``,
never used) with a message naming it, the problem and what to do, so the next plain run rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from advflow.attacks.sets import summarize, write_set
from advflow.information.aggregate import aggregate_paths, read_transfer_masks
from advflow.workflow.io import DamagedFileError, check_h5, open_h5, quarantine
from advflow.information.paths import read_input_paths, read_mi_record, write_paths
from advflow.attacks.profiles import load_profile

N, K = 6, 3
LAYERS = [f"conv{k}" for k in range(1, K + 1)]


def mi_file(path: Path, n: int = N, *, model: str = "good_init", set_: str = "fgsm@good_init") -> Path:
    """An MI file of the mi rule's layout (S, T, dead per layer; labels, predictions; attrs)."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        for name in LAYERS:
            h5.create_dataset(f"S/{name}", data=rng.random((n, 4, 1), dtype=np.float32))
            h5.create_dataset(f"T/{name}", data=rng.random((n, 4, 4), dtype=np.float32))
            h5.create_dataset(f"dead/{name}", data=np.zeros(n, dtype=np.float32))
        h5.create_dataset("labels", data=np.arange(n) % 3)
        h5.create_dataset("predictions", data=(np.arange(n) + 1) % 3)
        h5.attrs.update({"model": model, "set": set_, "layers": json.dumps(LAYERS), "buckets": 8})
    return path


def paths_csv(path: Path, n: int = N) -> Path:
    rng = np.random.default_rng(1)
    write_paths(path, LAYERS, rng.random((n, K)) + 0.5, rng.random((n, K)) + 0.2,
                {"labels": np.arange(n) % 3, "predictions": (np.arange(n) + 1) % 3})
    return path


def adversarial_set(path: Path, n: int = N) -> Path:
    x = torch.rand(n, 1, 8, 8) * 2 - 1
    adversarial = (x + 0.05).clamp(-1, 1)
    logits = torch.randn(n, 3)
    write_set(path, x=x, adversarial=adversarial, labels=np.arange(n) % 3, indices=np.arange(n),
              before=np.arange(n) % 3, logits=logits,
              attrs={"attack": "fgsm", "target": "good_init", "norm": "linf", "settings": "{}", "seed": 0})
    return path


def assert_moved_aside(path: Path, content: bytes) -> None:
    assert not path.exists(), "a damaged file must not stay under its name (the next run rebuilds it)"
    assert path.with_name(path.name + ".damaged").read_bytes() == content, "the damaged file is kept, unchanged"


def test_a_paths_csv_cut_in_half_at_a_row_boundary_is_moved_aside_by_its_aggregate_not_aggregated(tmp_path):
    # The case: 91 -> 45 lines aggregated without a word. Cut at an input boundary, the CSV is
    # well formed; only its MI file (written by the same job) says inputs are missing.
    record = read_mi_record(mi_file(tmp_path / "mi.h5"), model="good_init", set_="fgsm@good_init")
    csv_path = paths_csv(tmp_path / "set.csv")
    lines = csv_path.read_text().splitlines(keepends=True)
    assert len(lines) == 1 + N * K
    csv_path.write_text("".join(lines[: 1 + (N // 2) * K]))
    cut = csv_path.read_bytes()
    assert read_input_paths(csv_path, damaged="keep").inputs.size == N // 2  # well formed on its own
    with pytest.raises(DamagedFileError, match=rf"set\.csv: damaged \({N // 2} inputs where its MI file has {N} "
                       r"\(cut short\?\)\); it was moved to set\.csv\.damaged.*rebuilds the file with rule mi"):
        aggregate_paths(csv_path, record=record)
    assert_moved_aside(csv_path, cut)


def test_a_paths_csv_cut_mid_row_is_damaged_even_without_its_mi_file(tmp_path):
    csv_path = paths_csv(tmp_path / "set.csv")
    text = csv_path.read_text()
    csv_path.write_text(text[: len(text) // 2 - 3])  # inside a row
    cut = csv_path.read_bytes()
    with pytest.raises(DamagedFileError, match=r"set\.csv: damaged \(line \d+ has fewer fields than the header "
                       r"\(cut short\?\)\)"):
        aggregate_paths(csv_path)
    assert_moved_aside(csv_path, cut)


def test_a_paths_csv_whose_labels_differ_from_its_mi_file_is_moved_aside(tmp_path):
    record = read_mi_record(mi_file(tmp_path / "mi.h5"))
    csv_path = tmp_path / "set.csv"
    write_paths(csv_path, LAYERS, np.ones((N, K)), np.ones((N, K)),
                {"labels": np.zeros(N, dtype=int), "predictions": (np.arange(N) + 1) % 3})
    with pytest.raises(DamagedFileError, match="labels or predictions that differ from its MI file's"):
        read_input_paths(csv_path, record=record)
    assert not csv_path.exists()


def test_a_whole_paths_csv_matching_its_mi_file_is_read(tmp_path):
    record = read_mi_record(mi_file(tmp_path / "mi.h5"), model="good_init", set_="fgsm@good_init")
    paths = read_input_paths(paths_csv(tmp_path / "set.csv"), record=record)
    assert paths.mu_s.shape == (N, K) and record.inputs == N and record.layers == LAYERS


def test_a_truncated_mi_file_is_moved_aside_when_its_aggregate_reads_it(tmp_path):
    path = mi_file(tmp_path / "mi.h5")
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DamagedFileError, match=r"mi\.h5: damaged \(cannot be read as HDF5: .*truncated"):
        read_mi_record(path)
    assert_moved_aside(path, whole[: len(whole) // 2])


@pytest.mark.parametrize("damage, message", [
    (lambda h5: h5.__delitem__("T/conv2"), "no dataset 'T/conv2'"),
    (lambda h5: (h5.__delitem__("predictions"), h5.create_dataset("predictions", data=np.zeros(N - 1))),
     rf"'predictions' has {N - 1} rows where the others have {N}"),
    (lambda h5: h5.attrs.__setitem__("set", "pgd@good_init"),
     "attribute 'set' is 'pgd@good_init', this run expects 'fgsm@good_init'"),
])
def test_an_mi_file_missing_a_layer_with_short_rows_or_of_another_set_is_moved_aside(tmp_path, damage, message):
    path = mi_file(tmp_path / "mi.h5")
    with h5py.File(path, "a") as h5:
        damage(h5)
    with pytest.raises(DamagedFileError, match=message):
        read_mi_record(path, model="good_init", set_="fgsm@good_init")
    assert not path.exists() and path.with_name("mi.h5.damaged").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda h5: h5["adversarial"].__setitem__((0, 0, 0, 0), np.nan), "'adversarial' holds 1 NaN or infinite"),
    (lambda h5: h5["adversarial"].__setitem__((1, 0, 0, 0), 3.0), r"outside the box \[-1, 1\]"),
    (lambda h5: (h5.__delitem__("success"), h5.create_dataset("success", data=np.zeros(2, bool))),
     "'success' has 2 rows where the others have"),
    (lambda h5: h5.__delitem__("adversarial"), "no dataset 'adversarial'"),
])
def test_a_damaged_adversarial_set_is_moved_aside_not_used(tmp_path, damage, message):
    path = adversarial_set(tmp_path / "fgsm.h5")
    assert summarize(path)["attacked"] == N
    with h5py.File(path, "a") as h5:
        damage(h5)
    damaged = path.read_bytes()
    with pytest.raises(DamagedFileError, match=message):
        summarize(path)
    assert_moved_aside(path, damaged)


def test_a_truncated_adversarial_set_is_moved_aside_when_q5_reads_it(tmp_path):
    path = adversarial_set(tmp_path / "fgsm.h5")
    whole = path.read_bytes()
    path.write_bytes(whole[:1000])
    with pytest.raises(DamagedFileError, match=r"fgsm\.h5: damaged \(cannot be read as HDF5"):
        read_transfer_masks(paths_csv(tmp_path / "set.csv"), path)
    assert_moved_aside(path, whole[:1000])


def test_a_profile_with_float_images_or_missing_indices_is_moved_aside(tmp_path):
    path = tmp_path / "normal_test.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=np.full((4, 1, 8, 8), np.nan, dtype=np.float32))
        h5.create_dataset("labels", data=np.arange(4))
        h5.create_dataset("indices", data=np.arange(4))
    with pytest.raises(DamagedFileError, match=r"normal_test\.h5: damaged \(images are float32, a profile holds "
                       r"uint8 pixels\).*rule select_inputs"):
        load_profile(path)
    assert path.with_name("normal_test.h5.damaged").exists()
    with h5py.File(path, "w") as h5:
        h5.create_dataset("images", data=np.zeros((4, 1, 8, 8), dtype=np.uint8))
        h5.create_dataset("labels", data=np.arange(4))
    with pytest.raises(DamagedFileError, match="no dataset 'indices'"):
        load_profile(path)
    assert path.with_name("normal_test.h5.damaged.1").exists()  # the first one is kept, not overwritten


@pytest.mark.parametrize("failure, error, message", [
    ("Unable to synchronously open file (unable to lock file, errno = 11)", OSError, "hdf5_locking: false"),
    ("Unable to synchronously open file (file read failed, errno = 13, error message = 'Permission denied')",
     PermissionError, "not readable by this user"),
])
def test_a_locking_or_permission_failure_is_not_taken_for_damage(tmp_path, monkeypatch, failure, error, message):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("a", data=np.zeros(3))

    def refuse(*args, **kwargs):
        raise OSError(failure)

    monkeypatch.setattr(h5py, "File", refuse)
    with pytest.raises(error, match=message) as info:
        open_h5(path)
    assert not isinstance(info.value, DamagedFileError) and path.exists()  # a whole file stays where it is


def test_quarantine_keeps_every_damaged_copy_and_check_h5_names_each_problem(tmp_path):
    path = tmp_path / "f.h5"
    for k in range(3):
        path.write_text(f"copy {k}")
        error = quarantine(path, "bad")
        assert isinstance(error, DamagedFileError) and "Run snakemake again" in str(error)
    assert [p.read_text() for p in sorted(tmp_path.glob("f.h5.damaged*"))] == ["copy 0", "copy 1", "copy 2"]
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=np.zeros((3, 2)))
    with open_h5(path) as h5:
        assert check_h5(h5, path, datasets={"x": (None, 2)}) == 3
        with pytest.raises(DamagedFileError, match=r"'x' has shape \(3, 2\), expected \(\*, 4\)"):
            check_h5(h5, path, datasets={"x": (None, 4)})
