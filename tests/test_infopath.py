"""The information-path detector (issue 28, item 1; advflow.defenses.infopath): calibrated per-layer tails, their
combination, thresholds with their FPR on clean data, the per-layer view and its figure, and the values equal to
the API's information paths on a tiny ConvNet. Synthetic per-layer values stand in for a trained model's."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2

import advflow
from advflow.defenses import flagged, threshold
from advflow.defenses.infopath import InfoPathDetector, TailCombiner, path_values, value_names
from advflow.defenses.layer_view import layer_separation, layer_separation_figure
from advflow.defenses.metrics import auc_interval, roc_auc
from advflow.models.architectures import ConvNet

M, D, N = 2000, 10, 1000
PNG = b"\x89PNG\r\n\x1a\n"


def draws(rng: np.random.Generator, n: int, d: int = D, rho: float = 0.0) -> np.ndarray:
    """``(n, d)`` standard normal values with correlation ``rho`` between every two columns (one shared factor)."""
    return math.sqrt(1.0 - rho) * rng.normal(size=(n, d)) + math.sqrt(rho) * rng.normal(size=(n, 1))


def binomial_ok(rate: float, fpr: float, n_validation: int, n_fresh: int) -> bool:
    """The flagged share of fresh clean inputs within 4 sd of ``fpr`` (the threshold's own sampling error, from the
    validation set, and the fresh set's)."""
    return abs(rate - fpr) <= 4.0 * math.sqrt(fpr * (1.0 - fpr) * (1.0 / n_validation + 1.0 / n_fresh))


def test_a_planted_shift_in_one_layer_is_detected_and_the_per_layer_view_picks_that_layer():
    rng = np.random.default_rng(1)
    combiner = TailCombiner().fit(draws(rng, M))
    clean, adversarial = draws(rng, N), draws(rng, N)
    adversarial[:, 3] += 4.0  # 4 sd in one of 10 values (at 3 sd no rule reliably reaches 0.9: 0.85-0.9)
    assert roc_auc(combiner.score(clean), combiner.score(adversarial)) > 0.9
    names = [f"v{j}" for j in range(D)]
    rows = layer_separation(clean, adversarial, names)
    assert rows[0]["column"] == 3 and rows[0]["value"] == "v3" and rows[0]["direction"] == "higher"
    assert rows[0]["auc"] > 0.95 and all(row["separation"] < 0.6 for row in rows[1:])
    per_value = -2 * np.log(combiner.tails(adversarial))
    assert int(np.argmax(per_value.mean(axis=0))) == 3


def test_with_no_shift_the_auc_interval_holds_one_half():
    rng = np.random.default_rng(2)
    combiner = TailCombiner().fit(draws(rng, M, rho=0.5))
    clean, fresh = combiner.score(draws(rng, 500, rho=0.5)), combiner.score(draws(rng, 500, rho=0.5))
    low, high = auc_interval(clean, fresh)
    assert low < 0.5 < high


@pytest.mark.parametrize("rule", ["omnibus", "fisher"])
@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_thresholds_give_their_fpr_on_clean_data_whatever_the_layers_correlation(rule, rho):
    rng = np.random.default_rng(3)
    combiner = TailCombiner(rule=rule).fit(draws(rng, M, rho=rho))
    validation, fresh = combiner.score(draws(rng, M, rho=rho)), combiner.score(draws(rng, M, rho=rho))
    for fpr in (0.05, 0.01):
        rate = float(flagged(fresh, threshold(validation, fpr)).mean())
        assert binomial_ok(rate, fpr, M, M), (rule, rho, fpr, rate)
    if rule == "fisher" and rho > 0:
        # Fisher's chi-square null (2D degrees of freedom) assumes independent layers: under correlated layers its
        # 5 % quantile flags far more than 5 % of clean inputs. We never use it; the empirical threshold holds.
        assert float((fresh > chi2.isf(0.05, 2 * D)).mean()) > 0.1


def test_the_omnibus_rule_is_near_the_better_of_fisher_and_tippett():
    """Why the default rule is not Fisher alone: one shifted layer among correlated ones (Fisher diluted) and a small
    shift in every independent layer (Tippett weak); the omnibus stays near the better rule in both."""
    rng = np.random.default_rng(4)
    scenarios = {"one layer, correlated": (10, 0.6, lambda a: a[:, 3].__iadd__(3.0)),
                 "every layer, independent": (30, 0.0, lambda a: a.__iadd__(0.8))}
    for scenario, (d, rho, shift) in scenarios.items():
        reference, clean, adversarial = draws(rng, M, d, rho), draws(rng, N, d, rho), draws(rng, N, d, rho)
        shift(adversarial)
        aucs = {}
        for rule in ("omnibus", "fisher", "tippett"):
            combiner = TailCombiner(rule=rule).fit(reference)
            aucs[rule] = roc_auc(combiner.score(clean), combiner.score(adversarial))
        better = max(aucs["fisher"], aucs["tippett"])
        assert aucs["omnibus"] >= better - 0.05, (scenario, aucs)
        assert min(aucs["fisher"], aucs["tippett"]) < better - 0.08, (scenario, aucs)


def test_tails_are_valid_two_sided_p_values_never_zero():
    rng = np.random.default_rng(5)
    combiner = TailCombiner(max_reference=500).fit(draws(rng, M))
    assert combiner.reference.shape == (500, D) and combiner.fitted_inputs == M
    tails = combiner.tails(draws(rng, 4000))
    assert tails.min() >= 2 / 501 and tails.max() <= 1
    assert abs(float((tails <= 0.1).mean()) - 0.1) < 0.02  # uniform-ish on clean inputs
    far = combiner.tails(np.full((2, D), 1e6) * np.array([[1], [-1]]))  # beyond the clean range either way
    np.testing.assert_allclose(far, 2 / 501)


def test_a_constant_column_is_left_out_and_scores_stay_finite():
    rng = np.random.default_rng(6)
    clean = draws(rng, M)
    clean[:, 1] = 0.0  # e.g. the OIP at 1x1 target maps
    combiner = TailCombiner().fit(clean)
    assert combiner.informative.tolist() == [j != 1 for j in range(D)]
    fresh = draws(rng, 50)
    fresh[:, 1] = 0.0
    moved = fresh.copy()
    moved[:, 1] = 5.0
    scores = combiner.score(fresh)
    assert np.isfinite(scores).all() and np.isfinite(combiner.score(moved)).all()
    np.testing.assert_array_equal(scores, combiner.score(moved))
    assert (combiner.tails(moved)[:, 1] == 1).all()
    with pytest.raises(ValueError, match="constant"):
        TailCombiner().fit(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="NaN"):
        combiner.tails(np.full((1, D), np.nan))


def tiny_convnet() -> ConvNet:
    torch.manual_seed(0)
    arch = {"name": "tiny", "in_channels": 1, "image_size": [8, 8], "num_classes": 3,
            "blocks": [{"channels": 4, "pool": False, "dropout": 0.0}, {"channels": 4, "pool": True, "dropout": 0.0},
                       {"channels": 6, "pool": False, "dropout": 0.0}],
            "head": "global_max", "hidden": [], "fc_dropout": 0.0}
    return ConvNet(arch).eval()


def test_path_values_are_the_apis_information_paths_and_the_state_round_trips(tmp_path):
    model = tiny_convnet()
    x = torch.rand(40, 1, 8, 8) * 2 - 1
    values = path_values(model, x, batch_size=16)
    paths = advflow.information_paths(model, x, batch_size=16)
    assert paths.layers == ["conv1", "conv2", "conv3"] and values.shape == (40, 6)
    np.testing.assert_array_equal(values[:, 0::2], paths.mu_s)
    np.testing.assert_array_equal(values[:, 1::2], paths.mu_t)
    np.testing.assert_allclose(path_values(model, x, batch_size=7), values, rtol=1e-6, atol=1e-9)
    sequential = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                     torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU()).eval()
    theirs = advflow.information_paths(sequential, x[:8])
    np.testing.assert_array_equal(path_values(sequential, x[:8])[:, 0::2], theirs.mu_s)

    detector = InfoPathDetector(model, buckets=8, batch_size=16).fit(x)
    assert detector.value_names == value_names(["conv1", "conv2", "conv3"]) == [
        "iip_conv1", "oip_conv1", "iip_conv2", "oip_conv2", "iip_conv3", "oip_conv3"]
    probe = torch.rand(12, 1, 8, 8) * 2 - 1
    scores = detector.score(probe)
    assert scores.shape == (12,) and np.isfinite(scores).all()
    assert detector.layer_scores(probe).shape == (12, 6)
    torch.save(detector.state_dict(), tmp_path / "infopath.pt")
    loaded = InfoPathDetector(model, buckets=8, batch_size=16)
    loaded.load_state_dict(torch.load(tmp_path / "infopath.pt", weights_only=True))
    np.testing.assert_array_equal(loaded.score(probe), scores)
    np.testing.assert_array_equal(loaded.informative, detector.informative)
    state = detector.state_dict()
    with pytest.raises(ValueError, match="missing null_fisher"):
        loaded.load_state_dict({k: v for k, v in state.items() if k != "null_fisher"})
    with pytest.raises(ValueError, match="missing .*unexpected"):
        loaded.load_state_dict({"references": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="buckets"):
        InfoPathDetector(model, buckets=4).load_state_dict(state)


def test_the_per_layer_figure_renders():
    rng = np.random.default_rng(7)
    names = value_names(["conv1", "conv2", "conv3"])
    clean = draws(rng, 200, 6)
    clean[:, 5] = 0.0
    rows = {}
    for attack, column in (("FGSM", 2), ("C&W-L2", 4)):
        adversarial = draws(rng, 200, 6)
        adversarial[:, 5] = 0.0
        adversarial[:, column] -= 2.0
        rows[attack] = layer_separation(clean, adversarial, names)
        assert rows[attack][0]["column"] == column and rows[attack][0]["direction"] == "lower"
    figure = layer_separation_figure(rows, dpi=60)
    assert figure.name == "infopath_layers.png" and figure.image[:8] == PNG and figure.image.pdf[:4] == b"%PDF"
    assert "†" in figure.caption
    from PIL import Image

    assert Image.open(io.BytesIO(figure.image)).size[0] > 300
    with pytest.raises(ValueError, match="at least one attack"):
        layer_separation_figure({}, dpi=60)
