"""The Python API (advflow.api, exposed by ``import advflow``): the README's example runs; the paths of
any module equal the workflow's MI stage on stored maps and an independent sklearn computation; the
readers return layers in network order."""

from __future__ import annotations

import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

import advflow
from advflow.attacks.sets import write_set
from advflow.information.features import conv_maps, record_features
from advflow.information.stage import measure_set
from advflow.models.architectures import ConvNet, architecture, save_checkpoint
from conftest import REPO

B = 8


def readme_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written():
    result = subprocess.run([sys.executable, "-c", readme_example()], capture_output=True, text=True,
                            cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "['1', '4'] (4, 2) (4, 2)" in result.stdout


def test_readme_verdict_example_runs_as_written_and_decides_holds():
    """The README's second block (from paths to a verdict) continues the first, as a reader would run them."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text[text.index("## Python API"):], re.S)
    result = subprocess.run([sys.executable, "-c", blocks[0] + blocks[1]], capture_output=True, text=True,
                            cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
                                           "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[-0-9.e]+ \[[-0-9.e]+, [-0-9.e]+\] holds", last), result.stdout


def test_import_advflow_is_light_and_exposes_the_api():
    code = "import sys, advflow; assert 'torch' not in sys.modules; print(sorted(advflow.__all__))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("information_paths", "conv_layer_maps", "mutual_information", "read_features", "read_mi",
                 "read_set"):
        assert name in result.stdout and callable(getattr(advflow, name))


def _ids(values: np.ndarray) -> np.ndarray:
    """Bucket ids as docs/method.md states them: ceil(B (v - min) / (max - min)) in 1..B (constant map: bucket 1)."""
    low, span = values.min(), values.max() - values.min()
    if span == 0:
        return np.ones(values.size, dtype=int)
    return np.clip(np.ceil(B * (values.astype(np.float64) - low) / span), 1, B).astype(int).ravel()


def test_mutual_information_of_maps_stacks_and_batches_equals_sklearn():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    b = (a[:, :2] + rng.normal(scale=0.5, size=(2, 2, 6, 6))).astype(np.float32)
    batch = advflow.mutual_information(torch.from_numpy(a), torch.from_numpy(b), buckets=B)
    assert batch.shape == (2, 3, 2)
    for n in range(2):
        for i in range(3):
            for j in range(2):
                expected = mutual_info_score(_ids(a[n, i]), _ids(b[n, j]))
                assert float(batch[n, i, j]) == pytest.approx(expected, abs=1e-5)
    stack = advflow.mutual_information(torch.from_numpy(a[0]), torch.from_numpy(b[0]), buckets=B)
    assert stack.shape == (3, 2) and torch.allclose(stack, batch[0])
    single = advflow.mutual_information(torch.from_numpy(a[0, 0]), torch.from_numpy(b[0, 1]), buckets=B)
    assert single.shape == () and float(single) == pytest.approx(float(batch[0, 0, 1]))
    with pytest.raises(ValueError, match="maps \\(H, W\\), stacks"):
        advflow.mutual_information(torch.zeros(4, 4), torch.zeros(1, 4, 4))


def test_conv_layer_maps_of_any_module_are_the_named_outputs_in_network_order():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(6 * 4 * 4, 3))
    x = torch.rand(5, 1, 8, 8)
    maps = advflow.conv_layer_maps(model, x, layers=["4", "2"])  # asked out of order
    assert list(maps) == ["2", "4"]
    first = torch.max_pool2d(torch.relu(model[0](x)), 2)
    torch.testing.assert_close(maps["2"], first)
    torch.testing.assert_close(maps["4"], torch.relu(model[3](first)))
    assert list(advflow.conv_layer_maps(model, x)) == ["2", "4"]  # default: each conv's run up to its pool or ReLU
    with pytest.raises(ValueError, match="no module named 'nine'"):
        advflow.conv_layer_maps(model, x, layers=["nine"])
    relu = torch.nn.ReLU()
    twice = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), relu, torch.nn.Conv2d(2, 2, 3), relu)
    with pytest.raises(ValueError, match="runs more than once"):
        advflow.conv_layer_maps(twice, x, layers=["1"])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A 15-layer advflow ConvNet, a profile of 6 inputs, their features (float32) and MI as the workflow
    writes them."""
    folder = tmp_path_factory.mktemp("api")
    torch.manual_seed(1)
    model = ConvNet(architecture("good_init", 1, (12, 12), 4)).eval()
    save_checkpoint(model, folder / "model.pt")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(6, 1, 12, 12), dtype=np.uint8)
    with h5py.File(folder / "profile.h5", "w") as h5:
        h5["images"], h5["labels"], h5["indices"] = images, np.arange(6) % 4, np.arange(6)
    record_features(folder / "model.pt", folder / "profile.h5", folder / "features.h5", set_name="normal_test",
                    dtype="float32")
    measure_set(folder / "features.h5", folder / "mi.h5", folder / "paths.csv", buckets=B)
    x = torch.from_numpy(images).float() / 127.5 - 1.0
    return {"folder": folder, "model": model, "x": x}


def test_paths_of_an_advflow_convnet_equal_the_workflows_mi_stage(measured):
    paths = advflow.information_paths(measured["model"], measured["x"], buckets=B, batch_size=4)
    assert paths.layers == [f"conv{k}" for k in range(1, 16)]
    mi = advflow.read_mi(measured["folder"] / "mi.h5")
    assert mi.layers == paths.layers  # network order, not conv1, conv10, conv11, ...
    stored_s = np.stack([mi.S[k].mean(axis=(1, 2)) for k in mi.layers], axis=1)
    stored_t = np.stack([mi.T[k].mean(axis=(1, 2)) for k in mi.layers], axis=1)
    np.testing.assert_allclose(paths.mu_s, stored_s, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(paths.mu_t, stored_t, rtol=1e-5, atol=1e-7)
    # T of the last layer against itself, recomputed with sklearn from the API's maps.
    maps = advflow.conv_layer_maps(measured["model"], measured["x"])
    last = maps["conv15"][0].numpy()
    expected = np.mean([[mutual_info_score(_ids(last[i]), _ids(last[j])) for j in range(len(last))]
                        for i in range(len(last))])
    assert paths.mu_t[0, -1] == pytest.approx(expected, abs=1e-5)


def test_read_features_returns_the_maps_in_network_order(measured):
    features = advflow.read_features(measured["folder"] / "features.h5")
    assert list(features.maps) == [f"conv{k}" for k in range(1, 16)]
    for (name, stored), live in zip(features.maps.items(), conv_maps(measured["model"], measured["x"])):
        np.testing.assert_array_equal(stored, live.numpy(), err_msg=name)
    assert features.attrs["set"] == "normal_test" and features.labels.tolist() == [0, 1, 2, 3, 0, 1]
    assert list(advflow.read_features(measured["folder"] / "features.h5", layers=["conv2"]).maps) == ["conv2"]
    with pytest.raises(ValueError, match="no layer conv99"):
        advflow.read_features(measured["folder"] / "features.h5", layers=["conv99"])


def test_read_set_returns_the_attack_sets_fields(tmp_path):
    x = torch.zeros(3, 1, 4, 4)
    adversarial = x.clone()
    adversarial[0, 0, 0, 0] = 0.5
    logits = torch.tensor([[0.0, 2.0], [3.0, 0.0], [0.0, 1.0]])
    write_set(tmp_path / "fgsm.h5", x=x, adversarial=adversarial, labels=np.array([0, 0, 1]),
              indices=np.array([7, 8, 9]), before=np.array([0, 0, 1]), logits=logits,
              attrs={"attack": "fgsm", "target": "good_init", "norm": "linf", "settings": '{"epsilon": 0.5}'})
    adv = advflow.read_set(tmp_path / "fgsm.h5")
    assert adv.success.tolist() == [True, False, False] and adv.success_rate == pytest.approx(1 / 3)
    assert adv.norms_r["l0"].tolist() == [1, 0, 0] and adv.attrs["settings"] == {"epsilon": 0.5}
    assert adv.indices.tolist() == [7, 8, 9] and adv.pred_after.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="not an adversarial set"):
        with h5py.File(tmp_path / "other.h5", "w") as h5:
            h5["images"] = np.zeros(1)
        advflow.read_set(tmp_path / "other.h5")


def test_the_api_and_the_warm_worker_are_outside_every_workflow_rules_code_digest():
    """No workflow script uses the API, so a change to it (or to what only it imports) reruns nothing:
    ``import advflow`` loads it by importlib, which the digests' import scan does not follow. The same holds for
    the warm worker (``advflow.workflow.start`` loads it by importlib): it changes how a job starts, not its result."""
    from advflow.workflow.digests import code_modules

    for script in sorted((REPO / "workflow_scripts").glob("*.py")):
        modules = code_modules(script, REPO / "src" / "advflow")
        assert "advflow.api" not in modules, script.name
        assert "advflow.workflow.worker" not in modules, script.name
        assert "advflow.workflow" in modules, script.name
    assert "advflow.information.mi" not in code_modules(REPO / "workflow_scripts" / "prepare_data.py", REPO / "src" / "advflow")


def _h5_of_kind(path, kind: str):
    """A file holding just what marks one kind of the workflow's files."""
    import h5py

    marks = {"set": ("adversarial", "labels"), "mi": ("S/conv1", "T/conv1"), "features": ("layers/conv1", "input"),
             "profile": ("images", "labels"), "data": ("train/images", "test/images")}[kind]
    with h5py.File(path, "w") as h5:
        for name in marks:
            h5[name] = np.zeros(2)
        h5.attrs["layers"] = '["conv1"]'
    return path


@pytest.mark.parametrize("reader, kind, said", [
    ("read_mi", "set", r"this is an adversarial set, not an MI file; read it with advflow\.read_set$"),
    ("read_features", "mi", r"this is an MI file, not a features file; read it with advflow\.read_mi$"),
    ("read_set", "features", r"this is a features file, not an adversarial set; read it with advflow\.read_features$"),
    ("read_set", "profile", r"this is an input profile, not an adversarial set$"),
    ("read_mi", "data", r"this is a prepared dataset, not an MI file$"),
])
def test_a_reader_given_another_kind_of_file_says_in_one_line_what_it_is_and_what_reads_it(tmp_path, reader, kind,
                                                                                           said):
    path = _h5_of_kind(tmp_path / f"{kind}.h5", kind)
    with pytest.raises(ValueError, match=said) as error:
        getattr(advflow, reader)(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_the_api_takes_numpy_arrays_as_it_takes_tensors():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3),
                                torch.nn.ReLU())
    x = np.random.default_rng(0).uniform(-1, 1, (5, 1, 10, 10))  # float64, as NumPy gives it
    ours = advflow.information_paths(model, x, layers=["1", "3"])
    theirs = advflow.information_paths(model, torch.as_tensor(x, dtype=torch.float32), layers=["1", "3"])
    np.testing.assert_array_equal(ours.mu_s, theirs.mu_s)
    np.testing.assert_array_equal(ours.mu_t, theirs.mu_t)
    maps = advflow.conv_layer_maps(model, x.tolist(), layers=["3"])  # anything np.asarray takes
    assert maps["3"].shape == (5, 6, 8, 8) and maps["3"].dtype == torch.float32
