"""The study's attacks behind run_attack: FGSM by hand, the box, norm budgets, success flags."""

import pytest
import torch
from torch import nn

from advflow.attacks import registry
from advflow.attacks.library import run_attack
from conftest import BLOB_CLASSES

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {
    "fgsm": {"epsilon": 0.025},
    "igsm": {"epsilon": 0.025, "alpha": 0.002, "steps": 20},
    "pgd": {"epsilon": 0.1, "alpha": 0.01, "steps": 20},
    "jsma": {"theta": 1.0, "gamma": 0.1},
    "jsma_adaptive": {"theta": 1.0, "gamma": 0.2, "temperature": 40.0},
    "jsma_control": {"theta": 1.0, "gamma": 0.2, "temperature": 1.0},
    "deepfool": {"steps": 50, "overshoot": 0.02},
    "cw": {"binary_search_steps": 4, "steps": 50, "stepsize": 0.05, "kappa": 0.0, "c": 0.25},
    "ead_l1": {"binary_search_steps": 4, "steps": 50, "stepsize": 0.01, "kappa": 0.0, "c": 0.25, "beta": 0.1},
    "ead_en": {"binary_search_steps": 4, "steps": 50, "stepsize": 0.01, "kappa": 0.0, "c": 0.25, "beta": 0.1},
}


class Linear(nn.Module):
    """logits = W x + b on flattened inputs: the loss gradient is known in closed form."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias


def test_fgsm_is_x_plus_epsilon_sign_of_the_gradient_clipped_to_the_box():
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 16), torch.zeros(3)
    x = (torch.rand(8, 1, 4, 4) * 2 - 1)
    x[0, 0, 0, 0], x[1, 0, 0, 1] = 0.999, -0.999  # near the box: clipping must apply
    labels = torch.arange(8) % 3
    outcome = run_attack("fgsm", Linear(weight, bias), x, labels, {"epsilon": 0.025}, num_classes=3)
    # d CE / d x = W^T (softmax(Wx + b) - onehot(y)), computed by hand.
    probs = torch.softmax(x.flatten(1) @ weight.T + bias, dim=1)
    grad = (probs - torch.nn.functional.one_hot(labels, 3).float()) @ weight
    expected = (x.flatten(1) + 0.025 * grad.sign()).clamp(-1, 1).view_as(x)
    torch.testing.assert_close(outcome.adversarial, expected)


@pytest.mark.parametrize("name", registry.names())
def test_every_attack_stays_in_the_box_and_its_success_flags_agree_with_predictions(name, model, seeds):
    x, y = seeds
    outcome = run_attack(name, model, x, y, SETTINGS[name], num_classes=BLOB_CLASSES)
    adv = outcome.adversarial
    assert adv.shape == x.shape and adv.min() >= -1 and adv.max() <= 1
    with torch.no_grad():
        prediction = model(adv).argmax(1)
    assert torch.equal(outcome.prediction, prediction)
    assert torch.equal(outcome.success, prediction != y)
    r = (adv - x).flatten(1)
    if name in ("fgsm", "igsm", "pgd"):
        assert r.abs().max() <= SETTINGS[name]["epsilon"] + 1e-6
    if name.startswith("jsma"):
        budget = SETTINGS[name]["gamma"] * x[0].numel()
        assert int((r != 0).sum(1).max()) <= budget
    if name in ("deepfool", "cw", "ead_l1", "ead_en"):
        assert outcome.success.float().mean() > 0.5  # minimisation attacks: most inputs flip


def test_unknown_attack_name_lists_the_allowed_ones(model, seeds):
    with pytest.raises(ValueError, match="unknown attack 'fgm'; allowed: fgsm, igsm, pgd"):
        run_attack("fgm", model, *seeds, {}, num_classes=BLOB_CLASSES)


@pytest.mark.parametrize("name", ["cw", "ead_l1", "ead_en"])
def test_failed_optimisation_attacks_return_their_seed_not_a_blank_image(name, model, seeds):
    x, y = seeds
    hopeless = {**SETTINGS[name], "binary_search_steps": 1, "steps": 2, "c": 1e-6}
    outcome = run_attack(name, model, x, y, hopeless, num_classes=BLOB_CLASSES)
    failed = ~outcome.success
    assert failed.any(), "the budget is meant to be too small for some inputs"
    assert torch.equal(outcome.adversarial[failed], x[failed])
    assert not (outcome.adversarial.flatten(1) == 0).all(1).any()


def test_long_attacks_log_progress_while_a_batch_runs(model, seeds, caplog, monkeypatch):
    from advflow.attacks import library

    monkeypatch.setattr(library._Heartbeat.__init__, "__defaults__", (0.0,))  # a line at every query
    x, y = seeds
    with caplog.at_level("INFO", logger="advflow.attacks"):
        run_attack("cw", model, x[:4], y[:4], SETTINGS["cw"], num_classes=BLOB_CLASSES)
    beats = [r.getMessage() for r in caplog.records if "model queries so far" in r.getMessage()]
    assert len(beats) > 10 and beats[0].startswith("cw: batch 1/1")
