"""Bad config and missing data stop the run with a message naming the problem and the fix."""

import copy
import re

import pytest
import yaml

from advflow.config import ConfigError, check_config, config_errors, load_schema, model_settings, teacher_settings
from conftest import REPO, planned_jobs, snakemake

SCHEMA = REPO / "schemas" / "config.schema.yaml"


def default_config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", "configs/tiny.yaml", "configs/paper-cifar10.yaml"])
def test_shipped_configs_are_valid(path):
    check_config(yaml.safe_load((REPO / path).read_text()), SCHEMA)


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["models"]["good_init"].update(epochs="ten"),
     "config key 'models.good_init.epochs' must be an integer; got str 'ten'"),
    (lambda c: c["models"].update(resnet={}),
     "models.resnet: unknown model; advflow's are good_init, deep_conv, vgg_like, compressed, distilled, ensemble, "
     "and a model of your own names its 'module'"),
    (lambda c: c.update(dataset="cifar100"),
     "dataset is 'cifar100', which is neither advflow's (fashion_mnist, mnist, cifar10, synthetic) nor one of yours "
     "under 'datasets'"),
    (lambda c: c["training"].update(batchsize=64),
     "unknown config key 'batchsize' under 'training'; allowed: batch_size,"),
    (lambda c: c["models"]["ensemble"].update(members=["good_init", "alexnet"]),
     "models.ensemble.members names alexnet, which are not under 'models'"),
    (lambda c: c["models"].pop("good_init"),
     "models.compressed is Network Trimming of good_init: add 'good_init' under 'models'"),
    (lambda c: c.update(hdf5_locking="maybe"),
     "config key 'hdf5_locking' is 'maybe'; allowed: True, False, 'true', 'false', 'auto', 'best-effort'"),
])
def test_schema_violation_names_the_key_and_what_is_allowed(change, expected):
    config = default_config()
    change(config)
    messages = config_errors(config, load_schema(SCHEMA))
    assert any(expected in m for m in messages), messages
    with pytest.raises(ConfigError, match="README.md, 'Config keys'"):
        check_config(config, SCHEMA)


def write_config(tmp_path, config):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_workflow_stops_on_a_wrong_type_before_any_job(tmp_path):
    config = default_config()
    config["models"]["deep_conv"] = {"epochs": "ten"}
    result = snakemake("-n", "--configfile", "config.yaml", workdir=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert "config key 'models.deep_conv.epochs' must be an integer; got str 'ten'" in result.stdout + result.stderr


def test_workflow_stops_on_an_unknown_model_name(tmp_path):
    config = default_config()
    config["models"]["resnet50"] = {}
    result = snakemake("-n", "--configfile", "config.yaml", workdir=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert "models.resnet50: unknown model; advflow's are good_init, deep_conv" in result.stdout + result.stderr


def test_workflow_stops_on_a_missing_dataset_saying_where_it_looked(tmp_path):
    config = default_config()
    config["dataset"] = "mnist"
    config["datasets"] = {"mnist": {"path": str(tmp_path / "no-mnist-here")}}
    result = snakemake("-n", "--configfile", "config.yaml", workdir=write_config(tmp_path, config), check=False)
    assert result.returncode != 0
    assert f"Dataset 'mnist' not found. Looked in: {tmp_path / 'no-mnist-here'}" in result.stdout + result.stderr
    assert "datasets.mnist.path" in result.stdout + result.stderr
    assert planned_jobs(result) == {}


def test_model_settings_layer_defaults_training_and_the_models_own_section():
    config = default_config()
    config["training"]["lr"] = 0.01
    config["models"]["deep_conv"] = {"epochs": 7}
    settings = model_settings(config, "deep_conv")
    assert settings["epochs"] == 7 and settings["lr"] == 0.01 and settings["lr_schedule"] == "onecycle"
    assert model_settings(config, "good_init")["epochs"] == config["training"]["epochs"]
    distilled = copy.deepcopy(config)
    distilled["models"]["distilled"] = {"epochs": 5, "teacher_epochs": 2, "temperature": 40}
    assert teacher_settings(distilled)["epochs"] == 2 and model_settings(distilled, "distilled")["epochs"] == 5


# --- issue 16: NaN, meaningless ranges, counts the data cannot supply, files that do not parse ----------------------

def tiny_config():
    return yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["attacks"]["fgsm"].update(epsilon=float("nan")),
     "config key 'attacks.fgsm.epsilon' is nan; it must be a finite number"),
    (lambda c: c["models"]["good_init"].update(lr=float("inf")),
     "config key 'models.good_init.lr' is inf; it must be a finite number"),
    (lambda c: c["defense"].setdefault("fpr", {}).update(mid=float("nan")),
     "config key 'defense.fpr.mid' is nan; it must be a finite number"),
    (lambda c: c.setdefault("perturbations", {}).setdefault("grid", {}).update(epsilon=float("-inf")),
     "config key 'perturbations.grid.epsilon' is -inf; it must be a finite number"),
    (lambda c: c["defense"].update(epsilons=[0.1, float("nan")]),
     "config key 'defense.epsilons.1' is nan; it must be a finite number"),
])
def test_nan_and_infinity_are_refused_anywhere_naming_the_key(change, expected):
    config = tiny_config()
    change(config)
    messages = config_errors(config, load_schema(SCHEMA))
    assert expected in messages, messages


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["attacks"]["jsma"].update(theta=-5),
     "config key 'attacks.jsma.theta' is -5; it must be at least -2"),
    (lambda c: c["attacks"]["jsma"].update(theta=2.5),
     "config key 'attacks.jsma.theta' is 2.5; it must be at most 2"),
    (lambda c: c["attacks"]["jsma"].update(theta=0),
     "config key 'attacks.jsma.theta' is 0, which is not allowed (change per update"),
    (lambda c: c["attacks"]["fgsm"].update(epsilon=50),
     "config key 'attacks.fgsm.epsilon' is 50; it must be at most 2 (L-infinity budget in the models' [-1, 1] space"),
    (lambda c: c["attacks"]["igsm"].update(alpha=3),
     "config key 'attacks.igsm.alpha' is 3; it must be at most 2"),
    (lambda c: c["trajectories"].update(n=c["inputs"]["n"] + 1),
     "trajectories.n is 7 but the trajectories' seeds are drawn from the 6 attack seeds (inputs.n)"),
])
def test_values_outside_their_meaningful_range_are_refused(change, expected):
    config = tiny_config()
    change(config)
    messages = config_errors(config, load_schema(SCHEMA))
    assert any(m.startswith(expected) for m in messages), messages


def test_the_tiny_config_uses_the_values_these_tests_assume():
    config = tiny_config()
    assert config["inputs"]["n"] == 6 and "jsma" in config["attack_sets"]["good_init"]
    assert "jsma" in config["attacks"] and "fgsm" in config["attacks"] and "igsm" in config["attacks"]


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["inputs"].update(n=100000),
     "inputs.n is 100000 but the test split has {test} images ({where}); lower inputs.n to at most {test}"),
    (lambda c: c["training"].update(val_size=100000), "training.val_size (for good_init) is 100000"),
    (lambda c: c["models"]["good_init"].update(train_size=100000), "train_size (for good_init) is 100000"),
    (lambda c: c["defense"].update(n=100000), "defense.n + defense.validation + defense.clean ="),
    (lambda c: c.setdefault("perturbations", {}).setdefault("grid", {}).update(m=100000),
     "perturbations.grid.m is 100000 but a class has only"),
])
def test_counts_the_dataset_cannot_supply_stop_the_run_naming_the_key_and_the_limit(tmp_path, change, expected):
    from advflow.workflow.catalog import split_sizes
    from advflow.config import check_sizes

    config = tiny_config()
    change(config)
    sizes = split_sizes("synthetic", config["datasets"]["synthetic"])
    with pytest.raises(ConfigError, match=re.escape(expected.format(**sizes))):
        check_sizes(config)
    check_sizes(tiny_config())  # the shipped config fits


def test_sizes_come_from_the_prepared_file_when_there_is_one(tmp_path):
    import h5py
    import numpy as np

    from advflow.config import check_sizes

    prepared = tmp_path / "mnist.h5"
    with h5py.File(prepared, "w") as h5:
        h5.create_dataset("train/labels", data=np.arange(100) % 4)
        h5.create_dataset("test/labels", data=np.arange(5) % 4)
    config = tiny_config()
    config["dataset"] = "mnist"
    with pytest.raises(ConfigError, match=rf"inputs\.n is 6 but the test split has 5 images \({prepared}\)"):
        check_sizes(config, prepared)
    # The synthetic dataset's sizes come from its settings: an older prepared file is rebuilt when they change.
    synthetic = tiny_config()
    synthetic["datasets"]["synthetic"]["n_test"] = 500
    synthetic["inputs"]["n"] = 300
    check_sizes(synthetic, prepared)


def test_fixed_datasets_have_their_known_sizes():
    from advflow.config import size_errors
    from advflow.workflow.catalog import split_sizes

    config = default_config()
    config["inputs"] = {"n": 10001}
    assert size_errors(config, split_sizes("fashion_mnist", {})) == [
        "inputs.n is 10001 but the test split has 10000 images (the fashion_mnist files); lower inputs.n to at most "
        "10000"]


@pytest.mark.parametrize("text, expected", [
    ("seed: 0\ndataset: synthetic\nmodels: {good_init: {}\n  bad: [\n", r"bad\.yaml, line \d+, column \d+: not valid YAML"),
    ("", r"bad\.yaml: empty; a config is a mapping of keys"),
    ("- seed\n- dataset\n", r"bad\.yaml: a list at the top level; a config is a mapping of keys"),
    ("seed: 0\n\tdataset: synthetic\n", r"bad\.yaml, line 2, column 1: not valid YAML"),
])
def test_a_config_file_that_does_not_parse_gives_its_path_and_line(tmp_path, text, expected):
    from advflow.config import load_config_file, main

    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config_file(tmp_path / "bad.yaml")
    assert main([str(tmp_path / "bad.yaml")]) == 1  # python -m advflow.config: what to run on Snakemake's message


def test_a_binary_file_given_as_a_config_is_one_line_naming_it(tmp_path, capsys):
    from advflow.config import load_config_file, main

    (tmp_path / "set.h5").write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe" + bytes(range(256)))
    with pytest.raises(ConfigError, match=r"set\.h5: not a text file \(byte \d+ is not UTF-8\)"):
        load_config_file(tmp_path / "set.h5")
    assert main([str(tmp_path / "set.h5")]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_the_config_checker_command_passes_the_shipped_configs_and_names_a_bad_key(tmp_path, capsys):
    from advflow.config import main

    assert main([str(REPO / "configs" / "tiny.yaml")]) == 0
    (tmp_path / "nan.yaml").write_text("attacks: {fgsm: {epsilon: .nan}}\n")
    assert main([str(REPO / "configs" / "tiny.yaml"), str(tmp_path / "nan.yaml")]) == 1
    assert "config key 'attacks.fgsm.epsilon' is nan; it must be a finite number" in capsys.readouterr().err


def test_a_default_config_yaml_that_does_not_parse_stops_snakemake_with_its_line(tmp_path):
    import shutil

    repo = tmp_path / "repo"  # a copy of the workflow whose config.yaml is broken at line 3 (the workflow's own
    # parts only: not a virtual environment that may live in the checkout, gigabytes of it in CI)
    repo.mkdir()
    for part in ("Snakefile", "rules", "workflow_scripts", "schemas", "envs", "report", "profiles", "src"):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, repo / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif source.is_file():
            shutil.copy(source, repo / part)
    (repo / "config.yaml").write_text("seed: 0\ndataset: synthetic\nmodels: [good_init\n")
    work = tmp_path / "work"
    work.mkdir()
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(work), "-n"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo / "src")})
    assert result.returncode != 0
    assert f"{repo / 'config.yaml'}, line 4, column 1: not valid YAML" in result.stdout + result.stderr


def test_nan_in_a_config_stops_snakemake_before_any_job(tmp_path):
    config = tiny_config()
    config["attacks"]["fgsm"]["epsilon"] = float("nan")
    (tmp_path / "nan.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", "nan.yaml", workdir=tmp_path, check=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0 and "config key 'attacks.fgsm.epsilon' is nan; it must be a finite number" in log
    assert planned_jobs(result) == {} and not (tmp_path / "results").exists()


# --- every limit at its boundary: the largest value accepted, the next one refused ----------------------------------


def _size_problems(change):
    from advflow.workflow.catalog import split_sizes
    from advflow.config import size_errors

    config = tiny_config()
    change(config)
    return size_errors(config, split_sizes("synthetic", config["datasets"]["synthetic"]))


WHERE = "the synthetic dataset's settings"


def _set_model(model, **values):
    return lambda c: c["models"][model].update(values)


@pytest.mark.parametrize("accepted, refused, expected", [
    # tiny: 500 training images, val_size 100 held out -> 400 left to train on (not 500)
    (_set_model("good_init", train_size=400), _set_model("good_init", train_size=401),
     f"train_size (for good_init) is 401 but 500 training images less val_size 100 leave 400 ({WHERE}); lower it to "
     f"at most 400"),
    (lambda c: (c["training"].update(val_size=150), c["models"]["deep_conv"].update(train_size=350)),
     lambda c: (c["training"].update(val_size=150), c["models"]["deep_conv"].update(train_size=351)),
     f"train_size (for deep_conv) is 351 but 500 training images less val_size 150 leave 350 ({WHERE}); lower it to "
     f"at most 350"),
    (_set_model("compressed", finetune_size=400), _set_model("compressed", finetune_size=401),
     f"finetune_size (for compressed) is 401 but 500 training images less val_size 100 leave 400 ({WHERE}); lower it "
     f"to at most 400"),
    (lambda c: c["training"].update(val_size=499), lambda c: c["training"].update(val_size=500),
     f"training.val_size (for good_init) is 500 but the training split has 500 images ({WHERE}); lower it below 500"),
    (lambda c: c["inputs"].update(n=200), lambda c: c["inputs"].update(n=201),
     f"inputs.n is 201 but the test split has 200 images ({WHERE}); lower inputs.n to at most 200"),
    (lambda c: c["defense"].update(n=80), lambda c: c["defense"].update(n=81),  # + validation 60 + clean 60
     f"defense.n + defense.validation + defense.clean = 201 disjoint test images, but the test split has 200 "
     f"({WHERE}); lower them"),
    # 202 test images of 4 classes: 51, 51, 50, 50 per class -> M at most the smallest class, 50
    (lambda c: (c["datasets"]["synthetic"].update(n_test=202), c["perturbations"]["grid"].update(m=50)),
     lambda c: (c["datasets"]["synthetic"].update(n_test=202), c["perturbations"]["grid"].update(m=51)),
     f"perturbations.grid.m is 51 but a class has only 50 test images ({WHERE}); lower it to at most 50"),
], ids=["train_size", "train_size_other_val", "finetune_size", "val_size", "inputs.n", "defense", "grid.m"])
def test_each_count_is_accepted_at_its_limit_and_refused_one_above(accepted, refused, expected):
    from advflow.config import check_sizes

    assert _size_problems(accepted) == []
    problems = _size_problems(refused)
    assert expected in problems, problems
    config = tiny_config()
    refused(config)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        check_sizes(config)
    config = tiny_config()
    accepted(config)
    check_sizes(config)


def test_trajectories_n_may_equal_inputs_n():
    config = tiny_config()
    config["trajectories"]["n"] = config["inputs"]["n"]
    assert config_errors(config, load_schema(SCHEMA)) == []


def _schema_problems(section, key, value):
    config = tiny_config()
    config["attacks"].setdefault(section, {})[key] = value
    return config_errors(config, load_schema(SCHEMA))


@pytest.mark.parametrize("section, key, low, high", [
    ("fgsm", "epsilon", 0, 2), ("igsm", "epsilon", 0, 2), ("pgd", "epsilon", 0, 2), ("igsm", "alpha", 0, 2),
    ("pgd", "alpha", 0, 2),
    ("jsma", "gamma", 0, 1), ("jsma_adaptive", "gamma", 0, 1),  # gamma in (0, 1]: a share of the features
])
def test_budgets_and_shares_refuse_zero_and_accept_their_maximum_but_nothing_above(section, key, low, high):
    """ε, α in (0, 2] (the box's width in model space), γ in (0, 1]: 0 refused, the smallest positive and the
    maximum accepted, just above the maximum refused."""
    assert _schema_problems(section, key, 1e-9) == []
    assert _schema_problems(section, key, high) == []
    zero = _schema_problems(section, key, low)
    assert any(m.startswith(f"config key 'attacks.{section}.{key}' is 0; it must be above 0") for m in zero), zero
    above = _schema_problems(section, key, high + 1e-6)
    assert any(m.startswith(f"config key 'attacks.{section}.{key}' is {high + 1e-6!r}; it must be at most {high}")
               for m in above), above


@pytest.mark.parametrize("theta", [2, -2, 1e-9, -1e-9])
def test_jsma_theta_is_accepted_up_to_the_boxs_width(theta):
    assert _schema_problems("jsma", "theta", theta) == []
    beyond = theta * (1 + 1e-6) if abs(theta) == 2 else None
    if beyond is not None:
        relation = "at most 2" if theta > 0 else "at least -2"
        assert any(m.startswith(f"config key 'attacks.jsma.theta' is {beyond!r}; it must be {relation}")
                   for m in _schema_problems("jsma", "theta", beyond))


@pytest.mark.parametrize("epsilons, problem", [
    ([1e-9, 1.0], None), ([0.5, 1.0 + 1e-6], "at most 1"), ([0, 0.5], "above 0"), ([0.0], "above 0"),
])
def test_the_defense_sweeps_epsilons_in_0_1_both_where_the_schema_and_where_the_stage_check_them(epsilons, problem):
    from advflow.defenses.settings import defense_settings

    config = tiny_config()
    config["defense"]["epsilons"] = epsilons
    config["defense"].pop("adaptive")  # its budgets are drawn from the sweeps' grid (tested on their own)
    messages = config_errors(config, load_schema(SCHEMA))
    if problem is None:
        assert messages == []
        assert defense_settings(config)["epsilons"] == epsilons
        return
    bad = next(v for v in epsilons if not 0 < v <= 1)
    index = epsilons.index(bad)
    assert any(m.startswith(f"config key 'defense.epsilons.{index}' is {bad!r}; it must be {problem}")
               for m in messages), messages
    with pytest.raises(ConfigError, match=re.escape(f"defense.epsilons: {bad!r} is out of range: ε in (0, 1]")):
        defense_settings(config)


@pytest.mark.parametrize("key", ["epsilon", "rel_stepsize"])
def test_the_grids_epsilon_and_step_must_be_positive(key):
    from advflow.perturbations.settings import perturbation_settings

    config = tiny_config()
    config["perturbations"]["grid"][key] = 1e-9
    assert perturbation_settings(config)["grid"][key] == 1e-9
    for bad in (0, 0.0, -1e-9):
        config["perturbations"]["grid"][key] = bad
        with pytest.raises(ConfigError, match=re.escape(f"perturbations.grid.{key}: must be a positive finite number; "
                                                        f"got {bad!r}")):
            perturbation_settings(config)


@pytest.mark.parametrize("key", ["m", "steps"])
def test_the_grids_counts_accept_1_and_refuse_0(key):
    from advflow.perturbations.settings import perturbation_settings

    config = tiny_config()
    config["perturbations"]["grid"][key] = 1
    assert perturbation_settings(config)["grid"][key] == 1
    config["perturbations"]["grid"][key] = 0
    with pytest.raises(ConfigError, match=re.escape(f"perturbations.grid.{key}: must be a positive integer; got 0")):
        perturbation_settings(config)


def test_a_train_size_above_train_less_val_stops_snakemake_before_any_job(tmp_path):
    """The workflow checks the counts (rules/common.smk calls check_sizes) before it plans a job."""
    config = tiny_config()
    config["models"]["good_init"]["train_size"] = 401  # 500 training images less val_size 100 leave 400
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", "big.yaml", workdir=tmp_path, check=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "train_size (for good_init) is 401 but 500 training images less val_size 100 leave 400" in log
    assert planned_jobs(result) == {} and not (tmp_path / "results").exists()


def test_the_config_checker_command_has_help_and_names_what_it_needs(capsys):
    from advflow.config import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m advflow.config [-h] CONFIG.yaml") and "merged in order" in out
    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 2 and "the following arguments are required: CONFIG.yaml" in capsys.readouterr().err
