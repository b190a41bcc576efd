"""Network Trimming: APoZ, physical pruning, the prune/fine-tune loop."""

import numpy as np
import pytest
import torch

from advflow.models.architectures import ConvNet, architecture, count_parameters
from advflow.models.trimming import apoz, layer_widths, network_trimming, parameter_count, prune, select_removals


def tiny_net() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet(architecture("good_init", 1, (8, 8), 3)).eval()


def test_apoz_is_the_per_channel_share_of_zeros_over_held_out_inputs():
    model = tiny_net()
    conv = model.blocks[0].conv
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.fill_(0.5)               # every channel positive: APoZ 0 ...
        conv.bias[3] = -1.0                # ... except channel 3, always zero: APoZ 1
        conv.weight[5, 0, 1, 1] = 1.0      # channel 5 copies the input pixel with bias -0.5:
        conv.bias[5] = -0.5                #   zero wherever the pixel is <= 0.5
    inputs = torch.zeros(4, 1, 8, 8)
    inputs[:, :, :2, :] = 1.0              # 16 of 64 pixels are 1 -> channel 5 zero on 48 of 64
    scores = apoz(model, inputs)
    first = scores["blocks.0"]
    assert first.shape == (32,)
    assert first[3] == 1.0
    assert first[5] == pytest.approx(48 / 64)
    assert torch.all(first[[i for i in range(32) if i not in (3, 5)]] == 0.0)
    assert set(scores) == {f"blocks.{i}" for i in range(15)} | {"fc.0"}
    assert scores["fc.0"].shape == (500,)


@pytest.mark.parametrize("name", ["good_init", "deep_conv"])
def test_pruning_dead_units_removes_them_physically_without_changing_outputs(name):
    torch.manual_seed(0)
    model = ConvNet(architecture(name, 1, (8, 8), 3)).eval()
    with torch.no_grad():  # make channels 0-3 of block 1 and neurons 0-9 of fc.0 dead
        model.blocks[1].conv.bias[:4] = -1e6
        model.fc[0].bias[:10] = -1e6
    keep = {"blocks.1": torch.arange(4, 32), "fc.0": torch.arange(10, model.fc[0].out_features)}
    pruned = prune(model, keep).eval()
    assert pruned.blocks[1].conv.out_channels == 28 and pruned.blocks[2].conv.in_channels == 28
    assert pruned.fc[0].out_features == model.fc[0].out_features - 10
    assert count_parameters(pruned) < count_parameters(model)
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-4, atol=1e-4)


def test_parameter_count_formula_matches_the_built_model():
    for name in ("good_init", "deep_conv", "vgg_like"):
        arch = architecture(name, 3, (32, 32), 10)
        assert parameter_count(arch) == count_parameters(ConvNet(arch))


def test_network_trimming_reaches_the_target_by_removing_highest_apoz_units():
    model = tiny_net()
    with torch.no_grad():
        model.blocks[14].conv.bias[:20] = -1e6  # 20 dead channels in the last conv layer
    target = int(0.9 * count_parameters(model))
    calls = []
    held_out = (np.random.default_rng(0).random((32, 1, 8, 8)) * 255).astype(np.uint8)
    pruned, rounds = network_trimming(model, held_out, lambda m, r: calls.append(r), target_parameters=target,
                                      step=0.05, min_keep=0.5)
    assert count_parameters(pruned) <= target
    assert calls == [r["round"] for r in rounds] and len(rounds) >= 2
    # Dead units (APoZ 1, like the 20 made above) go first.
    assert rounds[0]["mean_apoz_removed"] == 1.0


def test_removal_takes_the_highest_apoz_units_until_the_parameter_goal():
    arch = architecture("deep_conv", 1, (8, 8), 3)
    rng = np.random.default_rng(0)
    scores = {key: torch.tensor(rng.random(width), dtype=torch.float32)
              for key, width in layer_widths(arch).items()}
    goal = parameter_count(arch) - 20_000
    keep = select_removals(arch, scores, parameter_goal=goal, original_widths=layer_widths(arch), min_keep=0.1)
    removed = [(float(scores[k][i]), k, i) for k in scores for i in range(len(scores[k])) if i not in keep[k]]
    kept = [float(scores[k][i]) for k in scores for i in keep[k].tolist()]
    assert removed and min(r[0] for r in removed) >= max(kept)
    widths = {k: len(v) for k, v in keep.items()}
    assert parameter_count({**arch, "blocks": [dict(b, channels=widths[f"blocks.{i}"]) for i, b in
                                               enumerate(arch["blocks"])],
                            "hidden": [widths[f"fc.{j}"] for j in range(len(arch["hidden"]))]}) <= goal
