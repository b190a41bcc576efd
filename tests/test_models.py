"""The model zoo's architectures (docs/method.md, "Models"; paper Table X, Table VII)."""

import pytest
import torch

from advflow.models.architectures import (
    ConvNet, LogitEnsemble, architecture, build_model, count_parameters, load_checkpoint, lsuv_init,
    save_checkpoint,
)

CIFAR = dict(in_channels=3, image_size=(32, 32), num_classes=10)


def test_good_init_has_1071542_parameters_on_cifar10_shapes():
    assert count_parameters(ConvNet(architecture("good_init", **CIFAR))) == 1_071_542


def test_deep_conv_has_2915114_parameters_on_cifar10_shapes():
    assert count_parameters(ConvNet(architecture("deep_conv", **CIFAR))) == 2_915_114


def test_good_init_has_15_conv_layers_ending_in_128_maps_of_8x8():
    model = ConvNet(architecture("good_init", **CIFAR))
    assert len(model.blocks) == 15
    x = torch.zeros(2, 3, 32, 32)
    for block in model.blocks:
        x = block.output_maps(x)
    assert tuple(x.shape) == (2, 128, 8, 8)


def test_vgg_like_is_a_vgg_pattern_of_doubling_widths():
    arch = architecture("vgg_like", **CIFAR)
    assert [b["channels"] for b in arch["blocks"]] == [32, 32, 64, 64, 128, 128, 128]
    assert count_parameters(ConvNet(arch)) == 1_027_498


def test_unknown_architecture_names_the_allowed_models():
    with pytest.raises(ValueError, match="unknown model 'resnet'; allowed: good_init, deep_conv"):
        architecture("resnet", **CIFAR)


def test_ensemble_output_is_the_mean_of_member_logits():
    torch.manual_seed(0)
    members = [ConvNet(architecture(n, 1, (12, 12), 4)) for n in ("good_init", "deep_conv", "vgg_like")]
    ensemble = LogitEnsemble(members).eval()
    x = torch.rand(5, 1, 12, 12) * 2 - 1
    expected = sum(m.eval()(x) for m in members) / 3
    torch.testing.assert_close(ensemble(x), expected)


@pytest.mark.parametrize("name", ["good_init", "deep_conv", "ensemble"])
def test_checkpoint_loads_with_weights_only_and_gives_the_same_outputs(tmp_path, name):
    torch.manual_seed(1)
    if name == "ensemble":
        model = LogitEnsemble([ConvNet(architecture(n, 1, (12, 12), 4)) for n in ("good_init", "deep_conv")])
    else:
        model = ConvNet(architecture(name, 1, (12, 12), 4))
    model.eval()
    save_checkpoint(model, tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # must not need pickle of classes
    assert payload["architecture"] == model.arch
    loaded = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(3, 1, 12, 12) * 2 - 1
    torch.testing.assert_close(loaded(x), model(x))
    assert build_model(model.arch).__class__ is model.__class__


def test_damaged_checkpoint_names_the_file_and_the_fix_and_is_moved_aside(tmp_path):
    path = tmp_path / "good_init.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(OSError, match=r"good_init\.pt: damaged \(not a readable advflow checkpoint: .*\); it was moved "
                       r"to good_init\.pt\.damaged .*Run snakemake again: it rebuilds the file with the rule that "
                       r"trains the model"):
        load_checkpoint(path)
    assert not path.exists() and (tmp_path / "good_init.pt.damaged").read_bytes() == b"not a checkpoint"


def test_a_truncated_checkpoint_is_moved_aside_and_an_earlier_damaged_copy_kept(tmp_path):
    model = ConvNet(architecture("good_init", 1, (12, 12), 10))
    path = tmp_path / "good_init.pt"
    save_checkpoint(model, path)
    whole = path.read_bytes()
    (tmp_path / "good_init.pt.damaged").write_bytes(b"an earlier one")
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(OSError, match=r"moved to good_init\.pt\.damaged\.1"):
        load_checkpoint(path)
    assert (tmp_path / "good_init.pt.damaged").read_bytes() == b"an earlier one"  # never overwritten
    assert (tmp_path / "good_init.pt.damaged.1").read_bytes() == whole[: len(whole) // 2]


def test_a_checkpoint_that_would_run_code_is_refused_and_moved_aside(tmp_path):
    import pickle

    path = tmp_path / "good_init.pt"

    class RunsCode:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"architecture": RunsCode(), "state_dict": {}}, path, pickle_module=pickle)
    with pytest.raises(OSError, match=r"not a readable advflow checkpoint: Weights only load failed"):
        load_checkpoint(path)
    assert (tmp_path / "good_init.pt.damaged").exists()


def test_lsuv_init_gives_unit_output_variance_per_layer():
    torch.manual_seed(0)
    model = ConvNet(architecture("good_init", 1, (16, 16), 10))
    batch = torch.rand(64, 1, 16, 16) * 2 - 1
    lsuv_init(model, batch, tol=0.02)
    variances = []
    hooks = [b.conv.register_forward_hook(lambda m, i, o: variances.append(float(o.var()))) for b in model.blocks]
    with torch.no_grad():
        model.eval()(batch)
    for h in hooks:
        h.remove()
    assert all(abs(v - 1) < 0.05 for v in variances), variances
