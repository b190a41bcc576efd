"""Models of the user's own (``models: NAME: {module: "package.module:factory", ...}``; issue 30): the wrapper's
input convention, the layers chosen and stored, checkpoints of the workflow and of the user, the features recorded
on such a model, every bad input's message (the config key, the problem, the fix), the config-level rules, the
model's settings and digests, and the import recipe. Fast: no Snakemake run.

The user's module is imported with the working directory first on ``sys.path``, so each test works in its own
``tmp_path`` with a copy of ``tests/user_nets.py`` there (or a module of its own, under a name no other test uses).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from advflow.config import SCHEMA_PATH, config_errors, load_schema, model_settings, user_model_errors
from advflow.data import load_prepared, make_synthetic, to_model_space, write_prepared
from advflow.information.features import measured_layers, record_features
from advflow.models.architectures import load_checkpoint, save_checkpoint
from advflow.models.recipes import import_model
from advflow.models.user import UserModel, UserModelError, check_user_model
from advflow.workflow.digests import user_model_digests

NETS_SOURCE = (Path(__file__).resolve().parent / "user_nets.py").read_text()
SHAPE = (3, 16, 16)
CLASSES = 4
NAME = "my_model"


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A working directory with ``user_nets.py`` in it (as a user's run has), imported afresh by each test."""
    (tmp_path / "user_nets.py").write_text(NETS_SOURCE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "user_nets", raising=False)
    importlib.invalidate_caches()
    return tmp_path


def own_module(tmp_path, monkeypatch, name: str, source: str) -> str:
    """Write module ``name`` (a name only one test uses) into the working directory ``tmp_path``."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    return name


def check(settings, shape=SHAPE, classes=CLASSES):
    return check_user_model(NAME, settings, shape, classes)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every parameter and BatchNorm statistic random (so eval-mode BatchNorm matters)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            values = torch.rand(tensor.shape, generator=generator)
            tensor.copy_(0.5 + values if name.endswith("running_var") else values - 0.5)
    return model.eval()


def model_space(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def user_convention(x: torch.Tensor, low: float, high: float, mean, std) -> torch.Tensor:
    """The docstring's mapping, written out: r = lo + (x+1)/2*(hi-lo), then (r - mean)/std per channel."""
    mean = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    r = low + (x.double() + 1) / 2 * (high - low)
    return ((r - mean) / std).float()


def config_with(entry: dict, **top) -> dict:
    """A config of the synthetic 3x16x16 dataset (4 classes; nothing on disk) with ``entry`` as models.my_model."""
    return {"seed": 0, "dataset": "synthetic",
            "datasets": {"synthetic": {"size": 16, "channels": 3, "num_classes": CLASSES}},
            "models": {NAME: entry}, **top}


def one_error(entry: dict) -> str:
    messages = user_model_errors(config_with(entry))
    assert len(messages) == 1, messages
    return messages[0]


# --------------------------------------------------------------------------- the input convention


@pytest.mark.parametrize("convention, low, high, mean, std", [
    ({"range": [0, 1], "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.243, 0.261]}, 0.0, 1.0,
     [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]),
    ({"range": [0, 255], "mean": [125.3, 123.0, 113.9], "std": [63.0, 62.1, 66.7]}, 0.0, 255.0,
     [125.3, 123.0, 113.9], [63.0, 62.1, 66.7]),
    ({"range": [0, 255], "mean": 127.5, "std": 2}, 0.0, 255.0, [127.5] * 3, [2.0] * 3),
    (None, 0.0, 1.0, [0.0] * 3, [1.0] * 3),
], ids=["unit_range_normalized", "byte_range_normalized", "one_number_for_all_channels", "default"])
def test_wrapper_gives_the_network_its_input_convention(nets, convention, low, high, mean, std):
    model, arch = check({"module": "user_nets:recording_net", "input": convention})
    x = model_space(5)
    model(x)
    expected = user_convention(x, low, high, mean, std)
    torch.testing.assert_close(model.net.seen, expected, rtol=1e-5, atol=1e-5)
    assert arch["input"] == {"range": [low, high], "mean": mean, "std": std}


def test_default_convention_is_pixels_in_unit_range_without_normalization(nets):
    model, _ = check({"module": "user_nets:recording_net"})
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 16, 16).contiguous()
    model(x)
    seen = model.net.seen
    assert torch.allclose(seen[0, :, 0, 0], torch.tensor([0.0, 0.5, 1.0]), atol=1e-7)
    assert float(seen.min()) == 0.0 and float(seen.max()) == 1.0


# --------------------------------------------------------------------------- layers


def test_default_layers_of_a_resnet_are_the_stem_activation_and_the_two_blocks(nets):
    model, arch = check({"module": "user_nets:small_resnet"})
    assert arch["layers"] == ["stem.2", "layer1", "layer2"]
    assert arch["layer_warnings"] == []
    assert model.arch["layers"] == arch["layers"]
    choice = measured_layers(model)
    assert choice.names == ["stem.2", "layer1", "layer2"]
    assert choice.modules == [model.net.stem[2], model.net.layer1, model.net.layer2]


def test_explicit_layers_are_kept_as_given(nets):
    layers = ["layer2.conv1", "stem.0", "layer1.bn2"]
    model, arch = check({"module": "user_nets:small_resnet", "layers": layers})
    assert arch["layers"] == layers
    assert measured_layers(model).names == layers


# --------------------------------------------------------------------------- workflow checkpoints


def test_checkpoint_of_a_user_model_round_trips_to_identical_logits(nets, tmp_path):
    model, arch = check({"module": "user_nets:small_resnet", "kwargs": {"width": 6},
                         "input": {"range": [0, 255], "mean": [120, 110, 100], "std": [60, 61, 62]}})
    randomized(model)
    path = tmp_path / "models" / "my_model.pt"
    save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert isinstance(loaded, UserModel) and not loaded.training
    assert loaded.arch == arch
    x = model_space(8, seed=1)
    with torch.no_grad():
        expected, got = model.eval()(x), loaded(x)
    assert torch.equal(got, expected)
    assert not torch.equal(expected[0], expected[1])  # the logits depend on the input: the comparison means something


@pytest.mark.parametrize("breakage", ["module_removed", "factory_renamed"])
def test_checkpoint_whose_module_no_longer_imports_raises_and_is_not_moved_aside(tmp_path, monkeypatch, breakage):
    name = f"vanishing_nets_{breakage}"
    own_module(tmp_path, monkeypatch, name, NETS_SOURCE)
    model, _ = check({"module": f"{name}:small_resnet"})
    folder = tmp_path / "models"
    path = folder / "my_model.pt"
    save_checkpoint(model, path)
    content = path.read_bytes()
    if breakage == "module_removed":
        (tmp_path / f"{name}.py").unlink()
    else:
        (tmp_path / f"{name}.py").write_text(NETS_SOURCE.replace("def small_resnet(", "def smaller_resnet("))
    monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    with pytest.raises(UserModelError, match=f"models.my_model.module: .*{name}"):
        load_checkpoint(path)
    assert sorted(p.name for p in folder.iterdir()) == ["my_model.pt"]  # no .damaged sibling
    assert path.read_bytes() == content


# --------------------------------------------------------------------------- features


def test_record_features_of_a_user_model_matches_plain_hooks_on_its_network(nets, tmp_path):
    convention = {"range": [0, 255], "mean": [125.0, 120.0, 110.0], "std": [60.0, 62.0, 64.0]}
    model, arch = check({"module": "user_nets:small_resnet", "input": convention})
    randomized(model, seed=3)
    model_path = tmp_path / "models" / "my_model.pt"
    save_checkpoint(model, model_path)
    x = model_space(7, seed=4)
    labels = np.arange(7) % CLASSES
    set_path = tmp_path / "adv" / "set.h5"
    set_path.parent.mkdir()
    with h5py.File(set_path, "w") as h5:
        h5.create_dataset("adversarial", data=x.numpy())
        h5.create_dataset("labels", data=labels)
    out = tmp_path / "features" / "set.h5"
    record_features(model_path, set_path, out, set_name="fgsm@my_model", dtype="float32", compression="none",
                    batch_size=3)

    net = load_checkpoint(model_path).net  # the user's network, hooked directly
    names = ["stem.2", "layer1", "layer2"]
    modules = dict(net.named_modules())
    maps: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: maps.__setitem__(n, o.detach().clone()))
               for n in names]
    with torch.no_grad():
        logits = net(user_convention(x, 0.0, 255.0, convention["mean"], convention["std"]))
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        model_logits = model(x)

    with h5py.File(out, "r") as h5:
        assert json.loads(h5.attrs["layers"]) == names == arch["layers"]
        assert sorted(h5["layers"]) == sorted(names)
        for name in names:
            np.testing.assert_allclose(h5["layers"][name][:], maps[name].numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(h5["predictions"][:], model_logits.argmax(1).numpy())
        np.testing.assert_array_equal(h5["predictions"][:], logits.argmax(1).numpy())
        np.testing.assert_array_equal(h5["labels"][:], labels)
        np.testing.assert_array_equal(h5["input"][:], x.numpy())
        assert h5.attrs["model"] == NAME


# --------------------------------------------------------------------------- bad inputs: the factory


def test_a_config_of_working_user_models_has_no_errors(nets):
    config = config_with({"module": "user_nets:small_resnet", "kwargs": {"width": 4}})
    config["models"]["other"] = {"module": "user_nets:recording_net", "input": {"range": [0, 255]}}
    assert user_model_errors(config) == []


def test_module_that_does_not_exist_names_the_path_and_the_import_error(nets):
    message = one_error({"module": "no_such_user_module:small_resnet"})
    assert "models.my_model.module" in message
    assert "importing 'no_such_user_module' failed (ModuleNotFoundError: No module named 'no_such_user_module')" \
        in message
    assert "make it importable from the run's working directory" in message


def test_module_whose_import_fails_names_the_module_and_its_error(tmp_path, monkeypatch):
    name = own_module(tmp_path, monkeypatch, "broken_nets_import",
                      "import torch\nimport not_a_real_package_xyz\n\ndef net():\n    return torch.nn.Linear(1, 1)\n")
    message = one_error({"module": f"{name}:net"})
    assert message.startswith("models.my_model.module: importing 'broken_nets_import' failed")
    assert "ModuleNotFoundError: No module named 'not_a_real_package_xyz'" in message
    assert "fix the module" in message


def test_module_that_raises_while_importing_names_the_error(tmp_path, monkeypatch):
    name = own_module(tmp_path, monkeypatch, "broken_nets_raise", "raise RuntimeError('no GPU driver found')\n")
    message = one_error({"module": f"{name}:net"})
    assert "models.my_model.module: importing 'broken_nets_raise' failed (RuntimeError: no GPU driver found)" \
        in message


@pytest.mark.parametrize("path", ["user_nets.small_resnet", "user_nets:small_resnet:x", ":small_resnet",
                                  "user_nets:"])
def test_module_path_that_is_not_package_module_colon_factory_says_the_form(nets, path):
    message = one_error({"module": path})
    assert message.startswith(f"models.my_model.module: {path!r} is not 'package.module:factory'")
    assert "after a colon, the function or class" in message


def test_missing_factory_lists_what_the_module_defines(tmp_path, monkeypatch):
    name = own_module(tmp_path, monkeypatch, "listing_nets",
                      "from torch import nn\n\ndef make_net():\n    return nn.Conv2d(3, 4, 3)\n\nWIDTH = 8\n"
                      "_hidden = 1\n")
    message = one_error({"module": f"{name}:make_network"})
    assert message == "models.my_model.module: module 'listing_nets' has no 'make_network'; it defines 'WIDTH', " \
                      "'make_net', 'nn'"


def test_factory_that_is_not_callable_says_what_it_is(nets):
    message = one_error({"module": "user_nets:NOT_CALLABLE"})
    assert "models.my_model.module: 'user_nets:NOT_CALLABLE' is a int, not callable" in message
    assert "name a function or class that returns your nn.Module" in message


def test_factory_that_returns_no_module_says_what_it_returned(nets):
    message = one_error({"module": "user_nets:not_a_module"})
    assert "models.my_model: user_nets:not_a_module returned a dict, not a torch.nn.Module" in message
    assert "the factory must return the network" in message


@pytest.mark.parametrize("kwargs, error", [
    ({"width": 3}, "RuntimeError: cannot build a network of width 3"),
    ({"depth": 3}, "TypeError: raising_factory() got an unexpected keyword argument 'depth'"),
])
def test_factory_that_raises_names_its_error_and_the_kwargs(nets, kwargs, error):
    message = one_error({"module": "user_nets:raising_factory", "kwargs": kwargs})
    assert f"models.my_model: user_nets:raising_factory(**kwargs) raised {error}" in message
    assert "fix the factory or models.my_model.kwargs" in message


# --------------------------------------------------------------------------- bad inputs: the user's checkpoint


def test_user_checkpoint_loads_its_weights(nets, tmp_path):
    sys.path.insert(0, str(tmp_path))
    try:
        import user_nets
    finally:
        sys.path.remove(str(tmp_path))
    net = randomized(user_nets.small_resnet())
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, tmp_path / "mine.pt")
    model, _ = check({"module": "user_nets:small_resnet", "checkpoint": str(tmp_path / "mine.pt")})
    for key, value in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[key], value), key


def _state(seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    namespace: dict = {}
    exec(compile(NETS_SOURCE, "user_nets_copy", "exec"), namespace)
    return namespace["small_resnet"](**kwargs).state_dict()


def test_checkpoint_with_other_keys_lists_missing_and_unexpected(nets, tmp_path):
    state = _state()
    state["head.weight"] = state.pop("fc.weight")
    del state["layer2.downsample.1.running_mean"]
    torch.save(state, tmp_path / "keys.pt")
    message = one_error({"module": "user_nets:small_resnet", "checkpoint": str(tmp_path / "keys.pt")})
    assert message.startswith("models.my_model.checkpoint: its keys do not match the network the factory builds")
    missing = message.split("missing keys ")[1].split(";")[0]
    assert sorted(missing.split(", ")) == ["'fc.weight'", "'layer2.downsample.1.running_mean'"]
    assert "unexpected keys 'head.weight'" in message
    assert "Give the checkpoint of this architecture (and the kwargs it was built with)" in message


def test_checkpoint_with_tensors_of_another_shape_lists_them(nets, tmp_path):
    torch.save(_state(width=4), tmp_path / "narrow.pt")
    message = one_error({"module": "user_nets:small_resnet", "checkpoint": str(tmp_path / "narrow.pt")})
    assert message.startswith("models.my_model.checkpoint: tensors of another shape: stem.0.weight (4, 3, 3, 3) "
                              "where the network has (8, 3, 3, 3)")
    assert "in all)" in message and "kwargs it was built with" in message


class _Payload:
    """Pickles as a call to ``open(marker, "w")``: loading it without weights_only creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_that_would_execute_code_is_refused_without_running_it(nets, tmp_path):
    state = _state()
    marker = tmp_path / "payload_ran"
    torch.save({**state, "extra": _Payload(marker)}, tmp_path / "evil.pt")
    message = one_error({"module": "user_nets:small_resnet", "checkpoint": str(tmp_path / "evil.pt")})
    assert message.startswith(f"models.my_model.checkpoint: {tmp_path / 'evil.pt'} would execute code when loaded")
    assert "(io.open)" in message and "it is not loaded" in message
    assert "Save only the weights: torch.save(model.state_dict(), path)" in message
    assert not marker.exists()
    # the payload is real: an unsafe load runs it
    control = tmp_path / "control_ran"
    torch.save({"extra": _Payload(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()


def test_truncated_checkpoint_says_it_cannot_be_read(nets, tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(_state(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = one_error({"module": "user_nets:small_resnet", "checkpoint": str(path)})
    assert message.startswith(f"models.my_model.checkpoint: {path} cannot be read (")
    assert "the file may be truncated or not a torch.save file: save it again" in message


def test_missing_checkpoint_names_the_path_and_the_alternatives(nets, tmp_path):
    message = one_error({"module": "user_nets:small_resnet", "checkpoint": "weights/none.pt"})
    assert message.startswith(f"models.my_model.checkpoint: no file {str(tmp_path / 'weights' / 'none.pt')!r}")
    assert "torch.save(model.state_dict(), path)" in message and "or null to train the model" in message


def test_checkpoint_without_a_state_dict_says_how_to_save_one(nets, tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    message = one_error({"module": "user_nets:small_resnet", "checkpoint": str(tmp_path / "list.pt")})
    assert "models.my_model.checkpoint:" in message and "holds no state dict" in message
    assert "torch.save(model.state_dict(), path)" in message


# --------------------------------------------------------------------------- bad inputs: shapes and layers


def test_network_that_rejects_the_dataset_shape_says_the_shape(nets):
    message = one_error({"module": "user_nets:grey_net"})
    assert message.startswith("models.my_model: the model rejects a batch of the dataset's images, shape "
                              "(2, 3, 16, 16) (N, C, H, W) (RuntimeError:")
    assert "make the network accept images of that shape, or use a dataset of the shape it expects" in message


def test_network_with_another_number_of_classes_says_both(nets):
    message = one_error({"module": "user_nets:small_resnet", "kwargs": {"num_classes": 7}})
    assert message == ("models.my_model: the model returns (2, 7) for a batch of 2 images; expected logits (2, 4), "
                       "one per class of the dataset")


def test_unknown_layer_names_lists_the_modules(nets):
    message = one_error({"module": "user_nets:small_resnet", "layers": ["stem.2", "layer3", "block9"]})
    assert message.startswith("models.my_model.layers: no module named 'layer3', 'block9' in the network; its modules "
                              "are 'stem', 'stem.0', 'stem.1', 'stem.2', 'layer1', 'layer1.conv1'")
    assert "in all)" in message


def test_layer_whose_output_is_not_maps_says_to_name_maps(nets):
    message = one_error({"module": "user_nets:small_resnet", "layers": ["layer1", "fc"]})
    assert message.startswith("models.my_model.layers: module 'fc' outputs shape (2, 4); maps must be (N, n, H, W)")
    assert "name modules whose outputs are maps (N, n, H, W)" in message


# --------------------------------------------------------------------------- bad inputs: the input convention


@pytest.mark.parametrize("convention, expected", [
    ({"range": [1, 1]}, "models.my_model.input.range: [1, 1] is not [low, high] with low < high (the pixel range "
                        "your model was trained on, e.g. [0, 1] or [0, 255])"),
    ({"range": [255, 0]}, "models.my_model.input.range: [255, 0] is not [low, high] with low < high"),
    ({"std": 0}, "models.my_model.input.std: [0.0, 0.0, 0.0] must be positive"),
    ({"std": [0.2, 0.0, 0.3]}, "models.my_model.input.std: [0.2, 0.0, 0.3] must be positive"),
    ({"mean": [0.5, 0.5]}, "models.my_model.input.mean: [0.5, 0.5] must be one number or one per channel "
                           "(3 channels)"),
], ids=["low_equals_high", "low_above_high", "zero_std", "one_zero_std", "mean_of_wrong_length"])
def test_bad_input_convention_names_the_key_and_what_is_allowed(nets, convention, expected):
    message = one_error({"module": "user_nets:small_resnet", "input": convention})
    assert message.startswith(expected), message


# --------------------------------------------------------------------------- config-level rules


BASE = config_with({"module": "user_nets:small_resnet"}, attack_sets={NAME: ["fgsm"]})


def _config_errors(change) -> list[str]:
    config = copy.deepcopy(BASE)
    change(config)
    return config_errors(config, load_schema(SCHEMA_PATH))


def test_base_config_of_a_user_model_is_valid():
    assert _config_errors(lambda c: None) == []


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["models"].update(good_init={"module": "user_nets:small_resnet"}),
     "models.good_init: 'good_init' is advflow's own model; give yours another name (e.g. my_good_init)"),
    (lambda c: c["models"].update({"my-model": {"module": "user_nets:small_resnet"}}),
     "models.my-model: a model's name is letters, digits and underscores, starting with a letter"),
    (lambda c: c.update(study={"base": "nope"}),
     "study.base names 'nope', which is not under 'models'; add it there, or set study.base: null"),
    (lambda c: c.update(study={"ensemble": NAME}),
     "study.ensemble is 'my_model'; the ensemble role is advflow's logit average of models.ensemble.members (which "
     "may be models of your own): set study.ensemble: ensemble or null"),
    (lambda c: (c["models"].update(good_init={}, compressed={}), c.update(study={"base": NAME,
                                                                                   "compressed": "compressed"})),
     "study.compressed is advflow's 'compressed' (Network Trimming of good_init), but study.base is 'my_model'; "
     "Network Trimming applies only to advflow's ConvNets, so it cannot compress 'my_model': give a pruned "
     "checkpoint of it as a model of your own for the compressed role, or set study.compressed: null"),
    (lambda c: (c.update(study={"distilled": NAME}), c["attack_sets"].update({NAME: ["jsma_adaptive"]})),
     "models.my_model: the adaptive JSMA (attack_sets.my_model) attacks the softmax at the temperature 'my_model' "
     "was distilled at: set models.my_model.temperature"),
    (lambda c: c.update(dataset="mine"),
     "dataset is 'mine', which is neither advflow's (fashion_mnist, mnist, cifar10, synthetic) nor one of yours "
     "under 'datasets' (datasets.mine: {format: npz or folder, path: ...}"),
], ids=["builtin_name_with_module", "hyphen_in_name", "base_not_under_models", "ensemble_role_user_model",
        "trimming_a_user_model", "distilled_without_temperature", "unknown_dataset"])
def test_config_error_names_the_key_the_problem_and_the_fix(change, expected):
    messages = _config_errors(change)
    assert any(expected in m for m in messages), messages


def test_distilled_user_model_with_a_temperature_passes():
    def change(c):
        c.update(study={"distilled": NAME})
        c["attack_sets"][NAME] = ["jsma_adaptive"]
        c["models"][NAME]["temperature"] = 20
    assert _config_errors(change) == []


# --------------------------------------------------------------------------- settings


def test_model_settings_of_a_user_model_take_training_keys_and_its_own():
    config = config_with({"module": "user_nets:small_resnet", "batch_size": 7, "kwargs": {"width": 4}},
                         training={"epochs": 3, "lr": 0.01, "batch_size": 64, "channels_last": True})
    settings = model_settings(config, NAME)
    assert settings["epochs"] == 3 and settings["lr"] == 0.01 and settings["batch_size"] == 7
    assert settings["init"] == "own"
    assert settings["channels_last"] is False  # training's channels_last does not reach a user's model
    assert settings["module"] == "user_nets:small_resnet" and settings["kwargs"] == {"width": 4}
    assert settings["checkpoint"] is None and settings["input"] is None and settings["layers"] is None
    assert "temperature" not in settings or settings["temperature"] is None

    config["models"][NAME]["channels_last"] = True
    assert model_settings(config, NAME)["channels_last"] is True
    config["models"][NAME].update(init="default", checkpoint="w.pt", layers=["layer1"],
                                  input={"range": [0, 255]})
    settings = model_settings(config, NAME)
    assert settings["init"] == "default" and settings["checkpoint"] == "w.pt"
    assert settings["layers"] == ["layer1"] and settings["input"] == {"range": [0, 255]}


# --------------------------------------------------------------------------- digests


def test_checkpoint_digest_follows_content_not_mtime(nets, tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"A" * 100)
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    settings = {"module": "user_nets:small_resnet", "checkpoint": str(path)}
    first = user_model_digests(settings)
    assert first["checkpoint_sha256"] == hashlib.sha256(b"A" * 100).hexdigest()

    os.utime(path, ns=(1_000_000_100_000_000_000, 1_000_000_100_000_000_000))  # touched only
    assert user_model_digests(settings) == first

    path.write_bytes(b"B" * 100)  # same size, a new content (and mtime, as an edit gives)
    os.utime(path, ns=(1_000_000_200_000_000_000, 1_000_000_200_000_000_000))
    second = user_model_digests(settings)
    assert second["checkpoint_sha256"] == hashlib.sha256(b"B" * 100).hexdigest() != first["checkpoint_sha256"]
    assert second["source_sha256"] == first["source_sha256"]

    path.write_bytes(b"B" * 101)  # another size
    assert user_model_digests(settings)["checkpoint_sha256"] == hashlib.sha256(b"B" * 101).hexdigest()
    assert user_model_digests({**settings, "checkpoint": None})["checkpoint_sha256"] is None


def test_source_digest_follows_the_module_text(nets):
    settings = {"module": "user_nets:small_resnet", "checkpoint": None}
    first = user_model_digests(settings)["source_sha256"]
    assert first == hashlib.sha256(NETS_SOURCE.encode()).hexdigest()
    source = nets / "user_nets.py"
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert user_model_digests(settings)["source_sha256"] == first
    edited = NETS_SOURCE.replace("width: int = 8", "width: int = 16")
    source.write_text(edited)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))
    second = user_model_digests(settings)["source_sha256"]
    assert second == hashlib.sha256(edited.encode()).hexdigest() != first


# --------------------------------------------------------------------------- the import recipe


def test_import_model_writes_a_loadable_checkpoint_and_a_record_of_its_source(nets, tmp_path):
    dataset = make_synthetic(size=16, channels=3, num_classes=4, n_train=60, n_test=40)
    data = tmp_path / "data" / "synthetic.h5"
    write_prepared(dataset, data)
    state = _state(seed=5)
    for key, value in state.items():  # random BatchNorm statistics too
        if value.is_floating_point():
            value.copy_(torch.rand_like(value) + 0.5 if key.endswith("running_var") else torch.randn_like(value) * 0.3)
    weights = tmp_path / "mine.pt"
    torch.save(state, weights)
    config = config_with({"module": "user_nets:small_resnet", "checkpoint": str(weights),
                          "input": {"range": [0, 1], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})
    settings = model_settings(config, NAME)
    out_pt, out_json = tmp_path / "models" / "my_model.pt", tmp_path / "models" / "my_model.json"
    record = import_model(NAME, data, settings, seed=0, device=torch.device("cpu"), out_pt=out_pt, out_json=out_json)

    loaded = load_checkpoint(out_pt)
    assert isinstance(loaded, UserModel) and loaded.arch["layers"] == ["stem.2", "layer1", "layer2"]
    for key, value in state.items():
        assert torch.equal(loaded.net.state_dict()[key], value), key
    written = json.loads(out_json.read_text())
    assert written == json.loads(json.dumps(record))
    assert written["source"] == "checkpoint"
    assert written["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert written["checkpoint"] == str(weights)
    test = load_prepared(data).test
    with torch.no_grad():
        logits = loaded(to_model_space(torch.as_tensor(test.images).float()))
    direct = float((logits.argmax(1).numpy() == test.labels).mean())
    assert written["test_accuracy"] == round(direct, 5)
    assert written["test_size"] == 40
    assert "history" not in written  # loaded, not trained
