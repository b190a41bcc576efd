"""Bad config and missing data stop the run with a message naming the problem and the fix."""

import copy

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
     "unknown config key 'resnet' under 'models'; allowed: compressed, deep_conv, distilled, ensemble, good_init, "
     "vgg_like"),
    (lambda c: c.update(dataset="cifar100"),
     "config key 'dataset' is 'cifar100'; allowed: 'fashion_mnist', 'mnist', 'cifar10', 'synthetic'"),
    (lambda c: c["training"].update(batchsize=64),
     "unknown config key 'batchsize' under 'training'; allowed: batch_size,"),
    (lambda c: c["models"]["ensemble"].update(members=["good_init", "alexnet"]),
     "config key 'models.ensemble.members.1' is 'alexnet'; allowed: 'good_init'"),
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
    assert "unknown config key 'resnet50' under 'models'; allowed: compressed, deep_conv" in result.stdout + result.stderr


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
