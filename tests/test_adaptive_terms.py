"""The detectors' differentiable scores (Detector.differentiable_score), the adaptive attacker's terms: for MagNet's
reconstruction errors and JSD, MID, Mahalanobis and LID each is the detector's own score (adaptive_surrogate "exact"),
equal to score(x) and with a gradient that lowers it. Small detectors on the conftest blob model; a few seconds."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from advflow.data import to_model_space
from advflow.defenses.lid import LIDDetector
from advflow.defenses.magnet import JSDDetector, ReconstructionDetector, Reformer
from advflow.defenses.mahalanobis import MahalanobisDetector
from advflow.defenses.mine import MIDDetector, MineSettings
from advflow.defenses.training import AutoencoderSettings, train_autoencoder

from conftest import blobs

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["magnet_l1", "magnet_l2", "magnet_jsd_T10", "mid", "mahalanobis", "lid"]
CLASSES = {"magnet_l1": ReconstructionDetector, "magnet_l2": ReconstructionDetector, "magnet_jsd_T10": JSDDetector,
           "mid": MIDDetector, "mahalanobis": MahalanobisDetector, "lid": LIDDetector}
#: Long enough that AE(x) keeps the class of a clean blob (else f(AE(x)) is one blur for all, and MID's MI is 0).
AUTOENCODERS = {"ae_i": AutoencoderSettings(epochs=20, batch_size=16, lr=1e-2, log_every=1000),
                "ae_ii": AutoencoderSettings(epochs=10, batch_size=16, lr=1e-2, log_every=1000)}
#: The adaptive descent: signed-gradient steps, projected to an L-inf ball around the start and to model space.
STEPS, STEP, RADIUS = 20, 0.01, 0.3


def model_space(images: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(to_model_space(images.astype(np.float32)))


def noisy(x: torch.Tensor, size: float, seed: int) -> torch.Tensor:
    """``x`` plus uniform noise in [-size, size] per pixel, in [-1, 1]."""
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return (x + size * noise).clamp(-1, 1)


@pytest.fixture(scope="module")
def train_set() -> tuple[np.ndarray, np.ndarray]:
    return blobs(400, seed=0)  # the images the conftest model was trained on


@pytest.fixture(scope="module")
def detectors(model, train_set) -> dict[str, object]:
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    images, labels = train_set
    ae = {name: train_autoencoder(name, images, settings) for name, settings in AUTOENCODERS.items()}
    x = model_space(images)
    return {"magnet_l1": ReconstructionDetector(ae["ae_ii"], 1), "magnet_l2": ReconstructionDetector(ae["ae_i"], 2),
            "magnet_jsd_T10": JSDDetector(ae["ae_i"], model, 10.0),
            # as the registry builds MID: the reformer of AE-I reconstructs
            "mid": MIDDetector(model, Reformer(ae["ae_i"]), settings=MineSettings(steps=200, batch_size=200),
                               references=64).fit(x),
            "mahalanobis": MahalanobisDetector(model).fit(x, labels),
            "lid": LIDDetector(model, k=10, references=50).fit(x)}


def oblivious_attack(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """20 signed-gradient steps of 0.05 up the classifier's loss, within 0.6 of ``x`` (L-inf): most inputs change
    class, and every detector scores them above clean inputs."""
    adversarial = x.clone()
    for _ in range(20):
        adversarial.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(adversarial), labels)
        (gradient,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            adversarial = (adversarial + 0.05 * gradient.sign()).clamp(x - 0.6, x + 0.6).clamp(-1, 1)
    return adversarial.detach()


@pytest.fixture(scope="module")
def inputs(model) -> dict[str, torch.Tensor]:
    """16 fresh clean blobs, the same with uniform noise of 0.3, and an oblivious attack's adversarial examples."""
    images, labels = blobs(16, seed=5)
    clean = model_space(images)
    adversarial = oblivious_attack(model, clean, torch.as_tensor(labels))
    with torch.no_grad():
        assert (model(adversarial).argmax(1) != torch.as_tensor(labels)).float().mean() >= 0.75
    return {"clean": clean, "noisy": noisy(clean, 0.3, seed=1), "adversarial": adversarial}


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_score_equals_its_score_and_has_a_gradient(detectors, inputs, name):
    detector = detectors[name]
    x = torch.cat([inputs["clean"], inputs["noisy"], inputs["adversarial"]]).requires_grad_(True)
    differentiable = detector.differentiable_score(x)
    assert differentiable.shape == (48,) and differentiable.dtype in (torch.float32, torch.float64)
    assert differentiable.requires_grad
    np.testing.assert_allclose(differentiable.detach().cpu().numpy(), detector.score(x.detach()), rtol=1e-4,
                               atol=1e-5)
    differentiable.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().amax(dim=1) > 0).all(), "every input's score must depend on the input"


def descend(start: torch.Tensor, direction) -> torch.Tensor:
    """``STEPS`` steps of ``STEP`` against ``direction(x)``'s signs, projected to the ball of ``RADIUS`` around
    ``start`` (L-inf) and to [-1, 1]."""
    x = start.clone()
    for _ in range(STEPS):
        step = direction(x).sign()
        x = (x - STEP * step).clamp(start - RADIUS, start + RADIUS).clamp(-1, 1)
    return x


@pytest.mark.parametrize("name", NAMES)
def test_adaptive_term_lowers_its_score(detectors, inputs, name):
    """Signed-gradient descent on the differentiable score, from the attack's adversarial examples, lowers the mean
    real score by at least a quarter of its gap above clean inputs, and by more than twice as much as the same steps
    along a fixed random sign pattern do (a zero, wrong-signed or unrelated gradient fails)."""
    detector = detectors[name]
    start, clean = inputs["adversarial"], detector.score(inputs["clean"]).mean()
    before = detector.score(start).mean()
    assert before > clean, "the adversarial examples must score above clean inputs"

    def gradient(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return torch.autograd.grad(detector.differentiable_score(x).sum(), x)[0]

    pattern = torch.randn(start.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adaptive = before - detector.score(descend(start, gradient)).mean()
        random = before - detector.score(descend(start, lambda x: pattern)).mean()
    assert adaptive >= 0.25 * (before - clean) and adaptive > 2 * random, \
        f"mean score {before:.4g} lowered by {adaptive:.4g} (random steps: {random:.4g}); clean {clean:.4g}"


@pytest.mark.parametrize("name", NAMES)
def test_each_detector_says_its_adaptive_term_is_exact(detectors, name):
    assert CLASSES[name].adaptive_surrogate == "exact"
    assert detectors[name].adaptive_surrogate == "exact" and detectors[name].name == name


def test_mid_refuses_a_reconstruct_that_cuts_the_gradient(model, detectors, inputs):
    reformer = detectors["mid"].reconstruct
    cut = MIDDetector(model, lambda x: reformer(x))  # the reformer's call runs under torch.no_grad
    cut.load_state_dict(detectors["mid"].state_dict())
    x = inputs["clean"].clone().requires_grad_(True)
    np.testing.assert_array_equal(cut.score(x.detach()), detectors["mid"].score(x.detach()))
    with pytest.raises(ValueError, match="no gradient"):
        cut.differentiable_score(x)


@pytest.mark.parametrize("name", NAMES)
def test_the_adaptive_attack_lowers_its_detectors_score_against_the_plain_attack_at_the_same_budget(model, detectors,
                                                                                                   name):
    """PGD at ε = 0.3 (pixel units) on the undefended classifier, and the same PGD with the detector as a guard
    (advflow.defenses.adaptive): the guard's term brings the detector's mean real score on the adversarial inputs at
    least half-way back to the clean inputs' mean, and more of them pass unflagged."""
    from advflow.defenses.adaptive import DefendedSystem, guard, pgd

    detector = detectors[name]
    images, labels = blobs(16, seed=5)
    x, y = model_space(images), torch.as_tensor(labels)
    validation = model_space(blobs(64, seed=7)[0])
    plain = pgd(DefendedSystem(model), x, y, epsilon=0.3, steps=20, seed=0)
    guarded = guard(detector, validation, 0.1)
    adaptive = pgd(DefendedSystem(model, guards={name: guarded}), x, y, epsilon=0.3, steps=20, seed=0)
    before, after = detector.score(plain.adversarial), adaptive.outcome.scores[name]
    clean = detector.score(x).mean()
    assert before.mean() > clean
    assert after.mean() < before.mean() - 0.5 * (before.mean() - clean)  # at least half-way back to clean
    assert (after <= guarded.threshold).sum() > (before <= guarded.threshold).sum()
