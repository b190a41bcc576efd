"""The API's default conv layers for any model (advflow.models.layers) and its aggregate, shift and verdict
functions: a ResNet's layers are its stem and its blocks' outputs (never a shortcut projection), a plain stack's
are the pool or activation after each conv, an advflow ConvNet keeps conv1 ... convK, doubtful models warn; the
shift and verdict say what their intervals say; the api module's examples run as doctests."""

from __future__ import annotations

import ast
import doctest
import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advflow
import advflow.api
from advflow.information.aggregate import aggregate_frame
from advflow.models.layers import LayerChoiceWarning, default_layers
from advflow.information.shifts import Interval, layer_scale, standardized
from advflow.models.architectures import ConvNet, architecture
from conftest import REPO


class BasicBlock(nn.Module):
    """A ResNet basic block. ``shared``: as torchvision writes it (one in-place ReLU run twice, ``out += identity``);
    else a ReLU module each and ``out + identity``."""

    def __init__(self, cin: int, cout: int, stride: int = 1, shared: bool = True) -> None:
        super().__init__()
        self.shared = shared
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=shared)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = self.relu if shared else nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        if self.shared:
            out += identity
        else:
            out = out + identity
        return self.relu2(out)


class TinyResNet(nn.Module):
    def __init__(self, shared: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(4, 4, shared=shared)
        self.layer2 = BasicBlock(4, 8, stride=2, shared=shared)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


def _randomize_norms(model: nn.Module) -> nn.Module:
    """BatchNorm statistics away from 0/1, so that a map before or after a ReLU differ."""
    torch.manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(autouse=True)
def _doubts_are_errors():
    """A LayerChoiceWarning a test does not expect fails it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerChoiceWarning)
        yield


@pytest.mark.parametrize("shared", [True, False], ids=["torchvision-style", "plain"])
def test_a_resnets_layers_are_its_stem_and_its_blocks_outputs_in_forward_order(shared, caplog):
    model = _randomize_norms(TinyResNet(shared))
    x = torch.rand(6, 1, 12, 12) * 2 - 1
    choice = advflow.default_layers(model, x)
    assert choice.names == ["stem.2", "layer1", "layer2"] and choice.target == "layer2"
    assert choice.modules == [model.stem[2], model.layer1, model.layer2] and not choice.warnings
    assert not any("downsample" in name or "conv" in name for name in choice.names)
    assert "residual block 'layer2'" in choice.describe() and "[target]" in choice.describe().splitlines()[-1]
    assert not model._forward_hooks and not model.layer1.relu._forward_pre_hooks  # the trace leaves no hooks
    with caplog.at_level(logging.INFO, logger="advflow.api"):
        maps = advflow.conv_layer_maps(model, x)
    assert "measuring layers: stem.2, layer1, layer2" in caplog.text
    assert list(maps) == choice.names and [tuple(m.shape[1:]) for m in maps.values()] == [(4, 12, 12), (4, 12, 12),
                                                                                           (8, 6, 6)]
    assert all(bool((m >= 0).all()) for m in maps.values())  # after the ReLUs
    torch.testing.assert_close(maps["layer2"], model.layer2(model.layer1(model.stem(x))))
    paths = advflow.information_paths(model, x, buckets=4)
    assert paths.layers == choice.names and paths.modules == choice.names and paths.mu_t.shape == (6, 3)
    # The target (the last layer) is the deepest block: T of the last layer is the MI of its maps with themselves.
    assert paths.mu_t[:, -1] == pytest.approx(advflow.mutual_information(maps["layer2"], maps["layer2"],
                                                                          buckets=4).mean(dim=(1, 2)).double())


def test_a_plain_stack_measures_each_convs_pool_or_its_activation_where_no_pool_follows():
    stack = _randomize_norms(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32, 2)))
    x = torch.rand(3, 1, 8, 8)
    assert advflow.default_layers(stack, x).names == ["3", "7"]
    no_pool = _randomize_norms(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveMaxPool2d(1),
        nn.Flatten(), nn.Linear(8, 2)))
    choice = advflow.default_layers(no_pool, x[0])  # one input (C, H, W) is enough
    assert choice.names == ["3", "6"]  # the global pooling is the head's, the dropout changes nothing in eval
    maps = advflow.conv_layer_maps(no_pool, x)
    torch.testing.assert_close(maps["6"], no_pool[:7](x))


class FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(1, 4, 3)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.features(x)).mean(dim=(2, 3)))


class LooseSkip(nn.Module):
    """A skip added in the model's own forward, with a 1x1 projection, and one ReLU module run twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c, self.proj, self.relu = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(4, 8, 1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.a(x))
        x = self.relu(x + self.bn(self.b(x)))
        return self.c(x) + self.proj(x)


def test_a_model_the_rule_cannot_read_warns_naming_the_modules_and_layers_overrides_it():
    model, x = FunctionalReLU(), torch.rand(2, 1, 8, 8)
    with pytest.warns(LayerChoiceWarning, match=r"layer 'features': .*activation \(Relu\).*pass layers="):
        paths = advflow.information_paths(model, x)
    assert paths.layers == ["features"] and "before it" in paths.warnings[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert advflow.information_paths(model, x, layers=["features"]).warnings == []  # layers= given: no doubt
    with pytest.warns(LayerChoiceWarning) as caught:
        choice = default_layers(LooseSkip(), x)
    said = " | ".join(str(w.message) for w in caught)
    assert "'relu' runs 2 times" in said and "conv 'proj' is a 1x1 projection shortcut" in said
    assert "layer 'bn': its output goes into an addition" in said
    assert choice.names == ["a", "bn", "c"] and "proj" not in choice.names and choice.warnings == [
        str(w.message) for w in caught]


def test_an_advflow_convnet_keeps_conv1_to_convk():
    torch.manual_seed(0)
    model = ConvNet(architecture("good_init", 1, (12, 12), 4)).eval()
    choice = advflow.default_layers(model)  # no input needed
    k = len(model.blocks)
    assert choice.names == [f"conv{i}" for i in range(1, k + 1)]
    assert choice.module_names == [f"blocks.{i}" for i in range(k)] and choice.modules == list(model.blocks)
    paths = advflow.information_paths(model, torch.rand(2, 1, 12, 12), buckets=4)
    assert paths.layers == choice.names and paths.modules == choice.module_names
    with pytest.raises(ValueError, match="needs one example input"):
        advflow.default_layers(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_numpy_input_gives_the_paths_of_the_tensor_with_the_default_layers():
    model = _randomize_norms(TinyResNet())
    x = np.random.default_rng(1).uniform(-1, 1, (4, 1, 10, 10))  # float64
    ours = advflow.information_paths(model, x, buckets=4)
    theirs = advflow.information_paths(model, torch.as_tensor(x, dtype=torch.float32), buckets=4)
    assert ours.layers == theirs.layers == ["stem.2", "layer1", "layer2"]
    np.testing.assert_array_equal(ours.mu_s, theirs.mu_s)
    np.testing.assert_array_equal(ours.mu_t, theirs.mu_t)


@pytest.fixture(scope="module")
def sets():
    """Paths of 20 clean inputs, the same inputs again, and the inputs under strong noise, on a small stack."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()).eval()
    x = torch.rand(20, 1, 16, 16) * 2 - 1
    noisy = x + 2.0 * torch.randn_like(x)
    return {name: advflow.information_paths(model, v) for name, v in (("clean", x), ("same", x.clone()),
                                                                       ("noisy", noisy))}


def test_the_shift_is_the_reports_standardized_paired_shift_and_the_verdict_reads_its_interval(sets):
    clean, same, noisy = sets["clean"], sets["same"], sets["noisy"]
    shift = advflow.path_shift(noisy, clean, resamples=200)
    sigma = clean.mu_t.std(axis=0, ddof=1)  # the spread over the normal inputs (here the clean ones)
    assert shift.estimate == pytest.approx(np.mean(np.abs((noisy.mu_t - clean.mu_t).mean(axis=0) / sigma)))
    assert shift.lower > 0 and advflow.verdict(shift) == "holds"
    none = advflow.path_shift(same, clean, resamples=200)  # identical inputs: no shift, an interval at 0
    assert (none.estimate, none.lower, none.upper) == (0.0, 0.0, 0.0) and advflow.verdict(none) == "inconclusive"
    more = advflow.shift_difference(noisy, same, clean, resamples=200)
    less = advflow.shift_difference(same, noisy, clean, resamples=200)
    assert more.lower > 0 and advflow.verdict(more) == "holds"
    assert less.upper < 0 and advflow.verdict(less) == "fails"
    assert advflow.verdict(more, less) == "fails" and advflow.verdict(more, none) == "inconclusive"
    assert advflow.verdict(Interval(float("nan"), float("nan"), float("nan"))) == "inconclusive"
    # normal inputs widen the scale: the report's sigma over normal_train and the seeds together
    normal = sets["noisy"]
    scale = layer_scale(np.concatenate([normal.mu_s, clean.mu_s]))
    with_normal = advflow.path_shift(noisy, clean, normal, path="iip", resamples=50)
    assert with_normal.estimate == pytest.approx(
        np.abs(standardized(noisy.mu_s, clean.mu_s, scale).mean(axis=0)).mean())
    oip_vs_iip = advflow.shift_difference(noisy, noisy, clean, path="oip", path_b="iip", resamples=50)
    assert oip_vs_iip.estimate == pytest.approx(shift.estimate - advflow.path_shift(noisy, clean, path="iip").estimate)


def test_the_shift_refuses_unpaired_sets_and_warns_on_few_inputs(sets):
    clean = sets["clean"]
    fewer = advflow.Paths(clean.layers, clean.mu_s[:3], clean.mu_t[:3])
    with pytest.raises(ValueError, match="paired"):
        advflow.path_shift(sets["noisy"], fewer)
    with pytest.warns(UserWarning, match="fewer than 5"):
        advflow.path_shift(fewer, fewer, resamples=10)
    with pytest.raises(ValueError, match="path must be one of iip, oip"):
        advflow.path_shift(clean, clean, path="ioc")
    with pytest.raises(TypeError, match="Interval"):
        advflow.verdict(0.3)
    evidence = ast.parse((REPO / "src" / "advflow" / "report" / "evidence.py").read_text())
    stated = [node.value.value for node in evidence.body if isinstance(node, ast.Assign)
              and any(getattr(t, "id", None) == "MIN_INPUTS" for t in node.targets)]
    assert stated == [advflow.api.MIN_INPUTS]  # the report's floor


def test_aggregate_is_the_workflows_gp_aggregate_of_the_paths(sets):
    clean = sets["clean"]
    aggregated = advflow.aggregate(clean)
    n, k = clean.mu_s.shape
    expected = aggregate_frame(np.tile(np.arange(1.0, k + 1), n), clean.mu_s.ravel(), clean.mu_t.ravel())
    assert set(aggregated) == {"iip", "oip"} and isinstance(aggregated["oip"], advflow.AggregatedPath)
    for name in ("iip", "oip"):
        assert aggregated[name].layers.tolist() == [1.0, 2.0, 3.0]
        np.testing.assert_allclose(aggregated[name].mean, expected[name].mean)
        assert np.all(aggregated[name].lower <= aggregated[name].mean)
        assert np.all(aggregated[name].mean <= aggregated[name].upper)


def test_the_api_modules_examples_run_as_doctests():
    result = doctest.testmod(advflow.api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 14 and result.failed == 0


def test_the_new_api_is_exposed_lazily():
    code = ("import sys, advflow; assert 'torch' not in sys.modules; "
            "names = ['default_layers', 'aggregate', 'path_shift', 'shift_difference', 'verdict', 'Interval', "
            "'LayerChoice', 'LayerChoiceWarning', 'AggregatedPath']; "
            "assert all(n in advflow.__all__ for n in names); [getattr(advflow, n) for n in names]")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(advflow.api.__all__) <= set(advflow.__all__)
