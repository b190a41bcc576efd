"""Issue 30's bad inputs, each refused before any job runs, with the problem and the fix named: through ``advflow
check`` (the workflow's checks, in-process) for every case, and through a real ``snakemake`` run for three of them,
which must stop at parse time with nothing written (no prepared data, no results, and a checkpoint that would run code
never run). The messages themselves are checked in detail by tests/test_user_models.py and tests/test_user_data.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from advflow import cli
from user_fixtures import make_image_dataset, write_npz
from user_nets import small_resnet

REPO = Path(__file__).resolve().parents[1]
NETS = Path(__file__).with_name("user_nets.py")


class Payload:
    """A pickled object that would create a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture()
def study(tmp_path, monkeypatch) -> Path:
    """A folder with the test networks' module, an npz dataset (3x16x16, 4 classes), a trained-free checkpoint of
    small_resnet and a valid config using them; the current directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "user_nets_run", raising=False)
    shutil.copy(NETS, tmp_path / "user_nets_run.py")
    write_npz(tmp_path / "data.npz", *make_image_dataset(n_train=60, n_test=30, size=16, channels=3, num_classes=4))
    torch.manual_seed(0)
    torch.save(small_resnet(width=8).state_dict(), tmp_path / "net.pt")
    config = {"seed": 0, "device": "cpu", "dataset": "mine", "datasets": {"mine": {"format": "npz", "path": "data.npz"}},
              "training": {"val_size": 10},
              "models": {"my_net": {"module": "user_nets_run:small_resnet", "kwargs": {"width": 8},
                                    "checkpoint": "net.pt"}},
              "study": {"base": "my_net", "trajectories": "my_net"},
              "inputs": {"n": 4}, "trajectories": {"n": 1}, "attack_sets": {"my_net": ["fgsm"]}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def edit(folder: Path, change) -> Path:
    config = yaml.safe_load((folder / "study.yaml").read_text())
    change(config, folder)
    (folder / "bad.yaml").write_text(yaml.safe_dump(config))
    return folder / "bad.yaml"


def model(config):
    return config["models"]["my_net"]


def _keys(config, folder):
    state = small_resnet(width=8).state_dict()
    state["extra.weight"] = state.pop("fc.weight")
    torch.save(state, folder / "other.pt")
    model(config)["checkpoint"] = "other.pt"


def _code(config, folder):
    torch.save({"weights": Payload(folder / "ran.marker")}, folder / "evil.pt")
    model(config)["checkpoint"] = "evil.pt"


def _float_pixels(config, folder):
    x_train, y_train, x_test, y_test = make_image_dataset(n_train=60, n_test=30)
    write_npz(folder / "float.npz", x_train.astype(np.float32) / 255, y_train, x_test, y_test)
    config["datasets"]["mine"]["path"] = "float.npz"


def _labels(config, folder):
    x_train, y_train, x_test, y_test = make_image_dataset(n_train=60, n_test=30)
    write_npz(folder / "data.npz", x_train, y_train + 10, x_test, y_test, classes=["a", "b", "c", "d"])


#: (case, the change, text the message must hold)
BAD = [
    ("module does not import", lambda c, f: model(c).update(module="no_such_module:net"),
     "models.my_net.module: importing 'no_such_module' failed (ModuleNotFoundError"),
    ("factory not callable", lambda c, f: model(c).update(module="user_nets_run:NOT_CALLABLE"),
     "is a int, not callable"),
    ("factory returns no nn.Module", lambda c, f: model(c).update(module="user_nets_run:not_a_module", kwargs={}),
     "returned a dict, not a torch.nn.Module"),
    ("checkpoint keys do not match", _keys, "missing keys 'fc.weight'; unexpected keys 'extra.weight'"),
    ("checkpoint would execute code", _code, "would execute code when loaded"),
    ("input shape rejected", lambda c, f: model(c).update(module="user_nets_run:grey_net", kwargs={}, checkpoint=None),
     "the model rejects a batch of the dataset's images, shape (2, 3, 16, 16)"),
    ("layer names that do not exist", lambda c, f: model(c).update(layers=["layer9"]),
     "models.my_net.layers: no module named 'layer9' in the network; its modules are 'stem', 'stem.0'"),
    ("dataset pixels of the wrong dtype", _float_pixels, "float.npz: x_train pixels are float32; write uint8 pixels"),
    ("dataset labels outside its classes", _labels, "data.npz: y_train labels must lie in [0, 3] (4 classes named in 'classes')"),
    ("more classes than the model has logits", lambda c, f: write_npz(
        f / "data.npz", *(a if i != 1 else a + 10 for i, a in enumerate(make_image_dataset(n_train=60, n_test=30)))),
     "models.my_net: the model returns (2, 4) for a batch of 2 images; expected logits (2, 13)"),
]


@pytest.mark.parametrize("case, change, said", BAD, ids=[b[0] for b in BAD])
def test_advflow_check_refuses_each_bad_input_naming_the_problem(study, capsys, case, change, said):
    assert cli.main(["check", "study.yaml", "-d", str(study)]) == 0, capsys.readouterr()
    bad = edit(study, change)
    assert cli.main(["check", bad.name, "-d", str(study)]) == 1
    err = capsys.readouterr().err
    assert said in err, err
    assert not (study / "ran.marker").exists()  # the pickle's code never ran
    assert not (study / "data").exists() and not (study / "results").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["module does not import", "checkpoint would execute code",
                                  "dataset pixels of the wrong dtype"])
def test_the_workflow_stops_before_any_job_on_a_bad_input_and_nothing_runs(study, case):
    _, change, said = next(b for b in BAD if b[0] == case)
    bad = edit(study, change)
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
                             bad.name, "--cores", "1"], cwd=study, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"})
    out = result.stdout + result.stderr
    assert result.returncode != 0 and said in out, out[-3000:]
    assert "Select jobs to execute" not in out and "localrule" not in out  # no job was even scheduled
    assert not (study / "data").exists() and not (study / "results").exists()
    assert not (study / "ran.marker").exists()


def test_the_same_model_as_base_and_compressed_is_refused(study, capsys):
    bad = edit(study, lambda c, f: c["study"].update(compressed="my_net"))
    assert cli.main(["check", bad.name, "-d", str(study)]) == 1
    assert "study.base and study.compressed are both 'my_net'" in capsys.readouterr().err


def test_an_ensemble_of_the_users_models_is_saved_and_loaded_with_its_members(study):
    from advflow.models.architectures import LogitEnsemble, load_checkpoint, save_checkpoint
    from advflow.models.user import check_user_model

    members = [check_user_model(name, {"module": "user_nets_run:small_resnet", "kwargs": {"width": width}},
                                (3, 16, 16), 4, weights=False)[0] for name, width in (("a", 4), ("b", 8))]
    ensemble = LogitEnsemble(members).eval()
    save_checkpoint(ensemble, study / "ensemble.pt")
    loaded = load_checkpoint(study / "ensemble.pt")
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), ensemble(x))
        assert torch.allclose(ensemble(x), (members[0](x) + members[1](x)) / 2)
    assert [m.arch["name"] for m in loaded.members] == ["a", "b"]


def test_a_users_model_without_a_checkpoint_is_trained_by_the_workflows_recipe(study):
    import json

    from advflow.config import model_settings
    from advflow.data import make_synthetic, write_prepared
    from advflow.models.architectures import load_checkpoint
    from advflow.models.recipes import train_model

    write_prepared(make_synthetic(n_train=80, n_test=40, size=16, channels=3, num_classes=4), study / "data.h5")
    config = yaml.safe_load((study / "study.yaml").read_text())
    config["models"]["my_net"].update(checkpoint=None)
    config["training"].update(epochs=1, batch_size=20)
    settings = model_settings(config, "my_net")
    torch.manual_seed(0)  # the recipe seeds the factory's initialisation with the run's seed
    before = small_resnet(width=8).state_dict()
    record = train_model("my_net", study / "data.h5", settings, seed=0, device=torch.device("cpu"),
                         out_pt=study / "my_net.pt", out_json=study / "my_net.json")
    assert record["source"] == "trained" and record["architecture"]["kind"] == "user"
    assert json.loads((study / "my_net.json").read_text())["history"]  # Lightning's training history
    trained = load_checkpoint(study / "my_net.pt")
    assert trained.arch["layers"] == ["stem.2", "layer1", "layer2"]
    changed = [k for k, v in trained.net.state_dict().items() if k.endswith("weight") and not torch.equal(v, before[k])]
    assert changed, "training changed no weight"


def test_advflow_check_says_the_users_models_are_loaded_not_trained(study, capsys):
    assert cli.main(["check", "study.yaml", "-d", str(study)]) == 0
    out = capsys.readouterr().out
    assert "models: my_net" in out and "stages: data, models (loaded from their checkpoints), attacks" in out


def test_a_datasets_digest_follows_its_files_content_not_their_times(tmp_path):
    """rule prepare_data's param for a dataset of yours: an npz file's or an image folder's content."""
    from advflow.workflow.digests import dataset_digest
    from user_fixtures import class_names, write_image_folder

    x_train, y_train, x_test, y_test = make_image_dataset(n_train=12, n_test=6)
    npz, folder = tmp_path / "d.npz", tmp_path / "folder"
    write_npz(npz, x_train, y_train, x_test, y_test)
    write_image_folder(folder, x_train, y_train, x_test, y_test, class_names(3))
    before = {path: dataset_digest(path) for path in (npz, folder)}
    for file in [npz, *folder.rglob("*.png")]:
        os.utime(file, (1_000_000_000, 1_000_000_000))  # touched: other times, the same bytes
    assert {path: dataset_digest(path) for path in (npz, folder)} == before
    write_npz(npz, x_train, (y_train + 1) % 3, x_test, y_test)  # other labels
    images = sorted(folder.rglob("*.png"))
    images[0].write_bytes(images[1].read_bytes())  # one image replaced by another's content
    assert dataset_digest(npz) != before[npz] and dataset_digest(folder) != before[folder]
    assert dataset_digest(tmp_path / "missing.npz") is None
