"""MINE and the MID detector (advflow.defenses.mine): MINE recovers the mutual information of correlated Gaussians;
its step is Algorithm 1's moving-average-corrected gradient; MID scores toy adversarial inputs above clean ones, is
seeded, scores in batches exactly as the method's (docs/method.md) i(x) says, and its fitted state round-trips through torch.save and
torch.load(weights_only=True)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from advflow.defenses import flagged, mine, threshold
from advflow.defenses.mine import MIDDetector, MineSettings, ema_step, estimate_mi

pytestmark = pytest.mark.usefixtures("one_thread")

GAUSSIAN_SAMPLES = 40_000


def _correlated_gaussians(rho: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 1)`` samples a, b of a standard bivariate normal with correlation ``rho``."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 1))
    return a, rho * a + math.sqrt(1.0 - rho**2) * rng.standard_normal((n, 1))


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_mine_recovers_the_mi_of_correlated_gaussians_within_10_percent(rho):
    truth = -0.5 * math.log(1.0 - rho**2)  # 0.1438 and 0.8304 nats
    estimate = estimate_mi(*_correlated_gaussians(rho, GAUSSIAN_SAMPLES, seed=0), MineSettings())
    assert abs(estimate - truth) <= 0.1 * truth, f"MINE estimated {estimate:.4f} nats; the truth is {truth:.4f}"


def test_ema_step_is_the_dv_gradient_with_a_moving_average_denominator():
    """v <- (1 - r) v + r mean exp T_marg; the loss's gradient is -(grad mean T_joint - grad mean exp T_marg / v)."""
    generator = torch.Generator().manual_seed(0)
    t_joint = torch.randn(8, generator=generator, requires_grad=True)
    t_marginal = torch.randn(6, generator=generator, requires_grad=True)
    rate, previous = 0.1, 0.3
    loss, log_ema = ema_step(t_joint, t_marginal, torch.tensor(previous), rate)
    ema = (1 - rate) * math.exp(previous) + rate * float(t_marginal.detach().exp().mean())
    assert not log_ema.requires_grad and float(log_ema) == pytest.approx(math.log(ema), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(t_joint.grad, torch.full((8,), -1 / 8))
    torch.testing.assert_close(t_marginal.grad, t_marginal.detach().exp() / (6 * ema))
    # The first step (no average yet) and rate 1 both use the batch itself: the plain DV gradient.
    for log_ema_before, rate in ((None, 0.01), (torch.tensor(previous), 1.0)):
        t_marginal.grad = None
        ema_step(t_joint, t_marginal, log_ema_before, rate)[0].backward()
        torch.testing.assert_close(t_marginal.grad, torch.softmax(t_marginal.detach(), 0))


def test_estimate_mi_is_seeded_and_leaves_the_global_rng_alone():
    a, b = _correlated_gaussians(0.7, 500, seed=1)
    quick = MineSettings(steps=40, batch_size=100)
    state = torch.get_rng_state()
    first = estimate_mi(a, b, quick)
    assert torch.equal(torch.get_rng_state(), state)
    assert estimate_mi(a, b, quick) == first
    assert estimate_mi(a, b, MineSettings(steps=40, batch_size=100, seed=1)) != first


@pytest.mark.parametrize(("a", "b", "message"), [
    (np.zeros(10), np.zeros((10, 1)), "reshape"),
    (np.zeros((10, 1)), np.zeros((9, 1)), "same number"),
    (np.full((10, 1), np.nan), np.zeros((10, 1)), "NaN"),
])
def test_estimate_mi_rejects_bad_samples(a, b, message):
    with pytest.raises(ValueError, match=message):
        estimate_mi(a, b, MineSettings(steps=1))


@pytest.mark.parametrize("field", [{"ema_rate": 0.0}, {"ema_rate": 1.5}, {"steps": 0}, {"lr": -1.0}, {"hidden": 2.5}])
def test_settings_reject_impossible_values(field):
    with pytest.raises(ValueError, match=next(iter(field))):
        MineSettings(**field)


# ------------------------------------------------------------------------- MID on a toy classifier and autoencoder

SIDE, CLASSES = 4, 3
_BASIS = torch.linalg.qr(torch.randn(SIDE * SIDE, SIDE * SIDE, generator=torch.Generator().manual_seed(0)))[0]
ON, OFF = _BASIS[:, :2], _BASIS[:, 2:2 + CLASSES]  # the clean images' plane; directions off it
CENTERS = torch.tensor([[math.cos(2 * math.pi * k / CLASSES), math.sin(2 * math.pi * k / CLASSES)]
                        for k in range(CLASSES)])
TOY_SETTINGS = MineSettings(steps=300, batch_size=256)


class ToyClassifier(nn.Module):
    """Logits of (N, 1, 4, 4) images: 6 <center_k, position in the plane> + 30 <off_k, image>, so a step of 0.4
    along off_k, which the plane's projection removes, moves an image to class k."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(SIDE * SIDE, CLASSES)
        with torch.no_grad():
            self.linear.weight.copy_(6 * CENTERS @ ON.T + 30 * OFF.T)
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def project(x: torch.Tensor) -> torch.Tensor:
    """The toy 'autoencoder': orthogonal projection onto the clean images' plane."""
    return (x.flatten(1) @ ON @ ON.T).reshape(x.shape).clamp(-1, 1)


def clean_images(n: int, seed: int) -> torch.Tensor:
    """(n, 1, 4, 4) images near the plane, in three clusters (one per class), within [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    position = CENTERS[torch.arange(n) % CLASSES] + 0.5 * torch.randn(n, 2, generator=generator)
    x = 0.5 * position @ ON.T + 0.01 * torch.randn(n, SIDE * SIDE, generator=generator)
    return x.clamp(-1, 1).reshape(n, 1, SIDE, SIDE)


def adversarial_images(n: int, seed: int) -> torch.Tensor:
    """Clean images stepped off the plane towards the next class: the classifier's softmax changes, and the
    projection takes it back."""
    step = 0.4 * OFF.T[(torch.arange(n) + 1) % CLASSES]
    return (clean_images(n, seed).flatten(1) + step).clamp(-1, 1).reshape(n, 1, SIDE, SIDE)


@pytest.fixture(scope="module")
def toy(one_thread):
    f = ToyClassifier().eval()
    detector = MIDDetector(f, project, settings=TOY_SETTINGS, references=128).fit(clean_images(2000, seed=1))
    return f, detector, clean_images(400, seed=2), adversarial_images(400, seed=3)


def test_the_toy_attack_changes_the_class_and_the_projection_undoes_it(toy):
    f, _, clean, adversarial = toy
    with torch.no_grad():
        assert (f(adversarial).argmax(1) != f(project(adversarial)).argmax(1)).float().mean() > 0.9
        assert (f(clean).argmax(1) != f(project(clean)).argmax(1)).float().mean() < 0.05


def test_mid_scores_adversarial_inputs_above_clean_ones(toy):
    _, detector, clean, adversarial = toy
    clean_scores, adversarial_scores = detector.score(clean), detector.score(adversarial)
    for scores in (clean_scores, adversarial_scores):
        assert scores.dtype == np.float64 and scores.shape == (400,) and np.isfinite(scores).all()
    assert adversarial_scores.mean() > clean_scores.mean()
    auc = roc_auc_score(np.r_[np.zeros(400), np.ones(400)], np.r_[clean_scores, adversarial_scores])
    assert auc > 0.95, f"ROC AUC {auc:.3f}"
    limit = threshold(detector.score(clean_images(400, seed=4)), 0.05)
    assert flagged(adversarial_scores, limit).mean() > 0.8
    assert detector.fitted_mi > 0.5  # nats between f(x) and f(AE(x)) on clean images: AE keeps the class


def test_mid_score_is_the_pointwise_estimate_and_batching_does_not_change_it(toy, monkeypatch):
    _, detector, clean, adversarial = toy
    x = torch.cat([clean[:5], adversarial[:5]])
    p, q = detector.features(x)
    network, refs = detector.network, detector.reference_features
    with torch.no_grad():
        expected = [float(network(p[i:i + 1], q[i:i + 1])[0] - torch.log(torch.exp(network(
            p[i:i + 1].expand(len(refs), -1), refs)).mean())) for i in range(len(x))]
    whole = detector.score(x)
    np.testing.assert_allclose(whole, -np.array(expected), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(mine, "PAIR_CHUNK", 3 * len(refs))  # three inputs at a time
    np.testing.assert_allclose(detector.score(x), whole, rtol=1e-6, atol=1e-6)


def test_mid_is_seeded_and_keeps_the_classifiers_mode(toy):
    f, detector, clean, _ = toy
    f.train()
    again = MIDDetector(f, project, settings=TOY_SETTINGS, references=128).fit(clean_images(2000, seed=1))
    assert f.training, "the detector must give the classifier its mode back"
    f.eval()
    assert np.array_equal(again.score(clean), detector.score(clean))


def test_mid_state_round_trips_through_torch_save_with_weights_only(toy, tmp_path):
    f, detector, clean, adversarial = toy
    torch.save(detector.state_dict(), tmp_path / "mid.pt")
    loaded = MIDDetector(f, project)
    loaded.load_state_dict(torch.load(tmp_path / "mid.pt", weights_only=True))
    x = torch.cat([clean, adversarial])
    assert np.array_equal(loaded.score(x), detector.score(x))
    assert loaded.fitted_mi == detector.fitted_mi


def test_mid_refuses_to_score_before_fitting():
    detector = MIDDetector(ToyClassifier(), project)
    with pytest.raises(RuntimeError, match="not fitted"):
        detector.score(clean_images(4, seed=0))
    with pytest.raises(RuntimeError, match="not fitted"):
        detector.state_dict()


@pytest.mark.parametrize(("images", "message"), [
    (torch.zeros(4, 1, SIDE, SIDE, dtype=torch.uint8), "float tensor"),
    (torch.zeros(4, SIDE * SIDE), r"\(N, C, H, W\)"),
    (np.zeros((4, 1, SIDE, SIDE), dtype=np.float32), "float tensor"),
    (torch.zeros(4, 1, SIDE + 1, SIDE), "fitted on images of shape"),
    (torch.full((4, 1, SIDE, SIDE), 255.0), r"\[-1, 1\]"),
    (torch.full((4, 1, SIDE, SIDE), float("nan")), "finite"),
])
def test_mid_rejects_inputs_of_the_wrong_type_shape_or_range(toy, images, message):
    with pytest.raises(ValueError, match=message):
        toy[1].score(images)
