"""Issue 30 end to end: the README's worked example ("Your own model and data") run as written, a ResNet-style network
of the user's (BatchNorm, skip connections) trained and saved outside the workflow, a generated npz dataset of 3-channel
16x16 images, the network as the ``base`` role and a pruned copy of it as the ``compressed`` role; then the defense
stage and seed 001 on it; the MI of one of its layers against scikit-learn on maps taken with plain forward hooks; and
which jobs a changed or touched checkpoint reruns."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from sklearn.metrics import mutual_info_score

from conftest import planned_jobs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Your own model and data"
#: The README's example files, in the order of its code blocks, and the command after them.
EXAMPLE_FILES = ("my_models.py", "make_my_study.py", "my_study.yaml")
#: The defense stage and seed 001 on the user's model, added with ``--set`` (the README's last paragraph), small.
DEFENSE = ("defense={classifier: my_resnet, n: 10, validation: 40, clean: 40, detectors: [magnet_l1, mid], "
           "autoencoder: {epochs: 2, batch_size: 32, lr: 0.01, train_size: 300}, "
           "mine: {steps: 40, batch_size: 64, references: 16, train_size: 300}, epsilons: [0.3], kappas: [0], "
           "pgd: {steps: 5}, bim: {steps: 5}, cw: {binary_search_steps: 1, steps: 10, stepsize: 0.05}, "
           "ead_l1: {binary_search_steps: 1, steps: 10, stepsize: 0.05}, "
           "ead_en: {binary_search_steps: 1, steps: 10, stepsize: 0.05}, dropout_vote: {k: 5, rate: 0.25}, "
           "compared: [dropout_vote, infopath, mahalanobis], infopath: {train_size: 100, buckets: 8}, "
           "mahalanobis: {train_size: 200}, adaptive: {targets: [defense, infopath], attacks: [pgd], n: 3, "
           "epsilons: [0.3], kappas: [0], pgd: {steps: 5, restarts: 1}, check_every: 5}}")
SEED001 = "perturbations={model: my_resnet, grid: {m: 2, steps: 5, rel_stepsize: 0.3}}"


def readme_example() -> tuple[dict[str, str], str]:
    """The example's files (name -> text) and its command, as the README shows them."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, re.S | re.M)
    kinds = [kind for kind, _ in blocks]
    assert kinds == ["python", "python", "yaml", "bash"], kinds
    for name in EXAMPLE_FILES:  # each block is introduced by its file name
        assert f"`{name}`" in section, name
    command = blocks[3][1].split("#")[0].strip()
    return dict(zip(EXAMPLE_FILES, (body for _, body in blocks[:3]))), command


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def run(argv: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def advflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "advflow", *args]


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    """The README's example run as written (its ``--cores all`` as 2 here), then again with the defense stage and
    seed 001 added with --set; returns the folder."""
    work = tmp_path_factory.mktemp("own_model")
    files, command = readme_example()
    for name, text in files.items():
        (work / name).write_text(text)
    run([sys.executable, "make_my_study.py"], work)
    tokens = command.split()
    assert tokens[:3] == ["advflow", "run", "my_study.yaml"], command
    run(advflow(*tokens[1:], "--cores", "2"), work)  # argparse keeps the last --cores
    run(advflow("run", "my_study.yaml", "--cores", "2", "--set", DEFENSE, "--set", SEED001), work)
    return work


def test_the_readme_example_runs_end_to_end_on_the_users_models_and_its_report_names_them(example):
    results = example / "results" / "my_data"
    page = (results / "report.html").read_text()
    for model in ("my_resnet", "my_resnet_pruned"):
        record = json.loads((results / "models" / f"{model}.json").read_text())
        assert record["source"] == "checkpoint" and record["architecture"]["kind"] == "user", record
        assert record["architecture"]["module"] == "my_models:SmallResNet"
        assert 0.5 < record["test_accuracy"] <= 1.0, record["test_accuracy"]  # loaded, not trained: it classifies
        assert model in page
    assert "my_models:SmallResNet" in page and "loaded from checkpoint" in page
    assert "good_init" not in page  # no built-in model is named, let alone trained
    assert not (results / "models" / "good_init.pt").exists()
    record = json.loads((results / "models" / "my_resnet.json").read_text())
    assert record["architecture"]["layers"] == ["stem.2", "layer1", "layer2"]  # the API's rule, stated in the README
    findings = json.loads((results / "findings.json").read_text())
    verdicts = {q["key"]: q["verdict"] for q in findings["summary"]["questions"]}
    assert verdicts["q4"] == "cannot be checked" and verdicts["q5"] == "cannot be checked", verdicts  # roles null
    q3 = next(q for q in findings["summary"]["questions"] if q["key"] == "q3")
    assert "my_resnet_pruned" in q3["claim"] and "my_resnet" in q3["claim"].replace("my_resnet_pruned", ""), q3
    # every stage ran on them: sets and controls on each, transfer between them, features, MI, aggregates
    for target in ("my_resnet", "my_resnet_pruned"):
        for attack in ("fgsm", "jsma", "cw"):
            assert (results / "adv" / target / f"{attack}.h5").is_file()
            assert (results / "adv" / target / f"random_{attack}.h5").is_file()
            assert (results / "aggregates" / target / f"{attack}@{target}.csv").is_file()
    assert (results / "mi" / "my_resnet" / "fgsm@my_resnet_pruned.h5").is_file()  # a transfer set
    assert (results / "trajectories" / "my_resnet" / "jsma.h5").is_file()  # Q1's role
    transfer = (results / "tables" / "transferability.csv").read_text()
    assert "my_resnet_pruned" in transfer


def test_the_defense_stage_and_seed001_run_on_the_users_model(example):
    results = example / "results" / "my_data"
    resolved = (results / "config.resolved.yaml").read_text()
    assert "classifier: my_resnet" in resolved
    tables = results / "defense" / "tables"
    assert (tables / "detectors.csv").is_file() and (results / "defense" / "adaptive" / "tables" / "adaptive.csv").is_file()
    detectors = (tables / "detectors.csv").read_text()
    for name in ("magnet_l1", "mid", "dropout_vote", "infopath", "mahalanobis"):
        assert name in detectors, name
    with h5py.File(results / "seed001" / "grid.h5", "r") as h5:
        assert h5.attrs["model"] == "my_resnet"
    page = (results / "report.html").read_text()
    assert "my_resnet" in page[page.index("Defenses"):]


def spec_ids(maps: np.ndarray, buckets: int = 8) -> np.ndarray:
    """0-based bucket ids of maps (..., P), each on its own range: ceil(B (v - vmin) / (vmax - vmin)) in 1..B."""
    v = np.asarray(maps, dtype=np.float64)
    vmin, vmax = v.min(axis=-1, keepdims=True), v.max(axis=-1, keepdims=True)
    span = np.where(vmax > vmin, vmax - vmin, 1.0)
    return (np.clip(np.ceil(buckets * (v - vmin) / span), 1, buckets) - 1).astype(np.int64)


def test_the_mi_of_a_user_layer_equals_scikit_learns_on_maps_taken_with_forward_hooks(example):
    """S of layer1 (16x16 maps, as the input) for the clean seeds: the user's network rebuilt here from its own module
    and checkpoint, the inputs mapped to its convention by hand, the maps taken by a plain forward hook and stored at
    the workflow's float16, MI by scikit-learn on the method's bucket ids."""
    results = example / "results" / "my_data"
    sys.path.insert(0, str(example))
    try:
        from my_models import SmallResNet
    finally:
        sys.path.remove(str(example))
    net = SmallResNet(width=8, num_classes=4)
    net.load_state_dict(torch.load(example / "my_resnet.pt", weights_only=True))
    net.eval()
    with h5py.File(results / "inputs" / "normal_test.h5", "r") as h5:
        images = h5["images"][:]
    captured = {}
    net.layer1.register_forward_hook(lambda module, inputs, output: captured.__setitem__("maps", output.detach()))
    with torch.no_grad():
        net((torch.tensor(images, dtype=torch.float32) / 255 - 0.5) / 0.25)
    maps = captured["maps"].numpy().astype(np.float16).astype(np.float64)  # features.dtype: float16
    # the workflow's inputs, the source of S: float32 in [-1, 1] (bucket edges fall on exact pixel values)
    source = (images.astype(np.float32) / 127.5 - 1.0).astype(np.float64)
    n, k = maps.shape[:2]
    expected = np.array([[[mutual_info_score(a, b) for b in spec_ids(source[i].reshape(3, -1))]
                          for a in spec_ids(maps[i].reshape(k, -1))] for i in range(n)])
    with h5py.File(results / "mi" / "my_resnet" / "normal_test.h5", "r") as h5:
        ours = h5["S/layer1"][:]
    assert ours.shape == expected.shape == (n, 8, 3)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    assert expected.max() > 0.1  # the maps do carry information about the input


def dry_run(example: Path) -> dict[str, int]:
    config = example / ".advflow" / "config.cli.yaml"  # the config the last run ran (the example + --set)
    out = run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile", str(config),
               "-n", "--cores", "2"], example)
    return planned_jobs(out)


def test_touching_a_checkpoint_reruns_nothing_and_changing_it_reruns_only_what_depends_on_that_model(example):
    checkpoint = example / "my_resnet_pruned.pt"
    original = checkpoint.read_bytes()
    assert dry_run(example) == {}
    os.utime(checkpoint, None)  # touched: newer, the same bytes
    assert dry_run(example) == {}
    state = torch.load(checkpoint, weights_only=True)
    state["head.2.bias"] = state["head.2.bias"] + 0.01
    torch.save(state, checkpoint)
    try:
        planned = dry_run(example)
    finally:
        checkpoint.write_bytes(original)
    assert planned.get("import_model") == 1, planned  # my_resnet_pruned only; my_resnet's checkpoint did not change
    assert planned.get("attack", 0) > 0 and planned.get("report") == 1, planned
    # not the data, not the other model, not the defense stage's own jobs on my_resnet, not seed 001's grid
    for rule in ("prepare_data", "train_model", "defense_inputs", "train_autoencoder", "fit_mid", "fit_detector",
                 "defense_attack", "adaptive_attack", "average_grid"):
        assert rule not in planned, (rule, planned)
    assert dry_run(example) == {}  # the original bytes back: nothing to do again
