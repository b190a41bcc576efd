"""Adaptive attacks (advflow.defenses.adaptive): success needs the misclassification and no flag, the guard's term
lowers its detector's score, the dropout vote is attacked with EOT and judged on fresh masks, and the sanity checks
(gradient masking, convergence) fire when they should."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from advflow.defenses import Detector
from advflow.defenses.adaptive import (DefendedSystem, Guard, convergence, cw_l2, guard, masking_flag, pgd, rate,
                                       surrogate_correlation)
from advflow.defenses.dropout import DropoutVote

EPSILON = 0.4  # pixel units: PGD fools the fixture model on every seed


class Brightness(Detector):
    """A toy detector: the mean pixel value (model space), exact and differentiable."""

    name = "brightness"
    adaptive_surrogate = "exact"

    def score(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().flatten(1).mean(1).double().cpu().numpy()

    def differentiable_score(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1)


class Corner(Detector):
    """A toy detector reading one pixel, to flag chosen inputs."""

    name = "corner"

    def score(self, x: torch.Tensor) -> np.ndarray:
        return x.detach()[:, 0, 0, 0].double().cpu().numpy()


class Quantized(nn.Module):
    """The model behind a planted non-differentiable step (rounding: zero gradient almost everywhere)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 4) / 4)


def test_success_requires_the_misclassification_and_no_flag(model, seeds):
    x, y = seeds
    plain = pgd(DefendedSystem(model), x, y, epsilon=EPSILON, steps=20, seed=0)
    assert plain.success.all()  # every seed fooled, nothing guards it
    corner = Corner()
    values = corner.score(plain.adversarial)
    limit = float(np.median(values))
    system = DefendedSystem(model, guards={"corner": Guard(corner, limit), "bright": Guard(Brightness(), 10.0)})
    outcome = system.evaluate(plain.adversarial, y)
    assert outcome.fooled.all()
    assert np.array_equal(outcome.flags["corner"], values > limit) and outcome.flags["corner"].any()
    assert not outcome.flags["bright"].any()
    # an input flagged by one detector is not a success, however fooled the classifier is
    assert np.array_equal(outcome.success, ~outcome.flags["corner"])
    # and an input nothing flags is no success unless the classifier is fooled
    clean = system.evaluate(x, y)
    assert not clean.fooled.any() and not clean.success.any()


def test_the_guards_term_lowers_its_detectors_score_against_the_plain_attack(model, seeds):
    x, y = seeds
    plain = pgd(DefendedSystem(model), x, y, epsilon=EPSILON, steps=20, seed=0)
    detector = Brightness()
    limit = float(np.quantile(detector.score(x), 0.5))
    adaptive = pgd(DefendedSystem(model, guards={"bright": Guard(detector, limit, scale=0.05)}), x, y,
                   epsilon=EPSILON, steps=40, seed=0)
    before, after = detector.score(plain.adversarial), adaptive.outcome.scores["bright"]
    assert after.mean() < before.mean() - 0.1
    assert (plain.outcome.flags == {} and (before > limit).mean() > 0.5)
    assert adaptive.success.mean() > (before <= limit).mean()  # evading it is what the term buys
    assert np.allclose(adaptive.surrogate["bright"], after)  # exact: the surrogate is the score


def test_the_kappa_margin_is_asked_of_the_defended_classifier(model, seeds):
    x, y = seeds
    result = cw_l2(DefendedSystem(model), x, y, kappa=2.0, steps=60, stepsize=0.05, binary_search_steps=3, c=1.0)
    assert result.success.mean() >= 0.9
    margins = result.outcome.margin[result.success]
    assert (margins >= 2.0).all()
    distance = (result.adversarial - x).flatten(1).norm(dim=1).numpy()
    assert np.isfinite(distance).all() and (distance[result.success] > 0).all()


def test_the_dropout_vote_is_attacked_with_eot_and_judged_on_fresh_masks(model, seeds, monkeypatch):
    x, y = seeds
    vote = DropoutVote(model, k=20, rate=0.25, seed=5)
    clean_spread = vote.score(x)
    system = DefendedSystem(model, vote=vote, vote_threshold=float(np.quantile(clean_spread, 0.9)) + 0.05, eot=4,
                            fresh_seed=424_242)
    drawn = []
    real_seed = torch.manual_seed

    def spy(value):
        drawn.append(int(value))
        return real_seed(value)

    monkeypatch.setattr(torch, "manual_seed", spy)
    result = pgd(system, x, y, epsilon=EPSILON, steps=20, seed=3)
    monkeypatch.undo()
    # The attack drew its masks from its own seeds; the judging vote's seed (fresh) is never one of them.
    attack_seeds = [s for s in drawn if s != 424_242]
    assert attack_seeds and 424_242 not in attack_seeds
    assert vote.seed == 5  # restored after judging
    # The outcome is the vote of fresh masks, recomputed directly.
    fresh = DropoutVote(model, k=20, rate=0.25, seed=424_242)
    _, plurality, spread = fresh.predict_and_score(result.adversarial, 4)
    assert np.array_equal(result.outcome.prediction, plurality)
    assert np.allclose(result.outcome.scores["dropout_vote"], spread)
    assert np.array_equal(result.success, (plurality != y.numpy()) & (spread <= system.vote_threshold))
    assert result.success.mean() >= 0.5  # EOT fools most masks at once


def test_the_gradient_masking_flag_fires_on_a_planted_non_differentiable_step(model, seeds):
    x, y = seeds
    undefended = pgd(DefendedSystem(model), x, y, epsilon=EPSILON, steps=20, seed=0)
    masked = pgd(DefendedSystem(Quantized(model)), x, y, epsilon=EPSILON, steps=20, seed=0)
    assert undefended.success.mean() == 1.0
    assert masked.success.mean() < 0.2  # the rounding hides the gradient: the attack goes nowhere
    assert masking_flag(masked.success, undefended.success)
    assert not masking_flag(undefended.success, undefended.success)
    # a weak undefended attack (small budget) cannot make the flag fire: there is nothing to fall short of
    weak = pgd(DefendedSystem(model), x, y, epsilon=0.05, steps=20, seed=0)
    assert weak.success.mean() < 0.9 and not masking_flag(masked.success, weak.success)


def test_convergence_counts_the_seeds_only_the_longer_attack_fooled():
    base = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0] * 4, bool)
    same = convergence(base, base | np.eye(1, 40, 2, dtype=bool)[0])
    assert same == {"n": 40, "base": 12, "longer": 13, "gained": 1, "verdict": "converged"}
    longer = base.copy()
    longer[[2, 3, 4, 6]] = True
    assert convergence(base, longer)["verdict"] == "not converged"
    with pytest.raises(ValueError, match="same seeds"):
        convergence(base, base[:5])


def test_rate_and_surrogate_correlation():
    r = rate(np.array([True, False, True, True]))
    assert r["n"] == 4 and r["rate"] == 0.75 and 0 < r["low"] < 0.75 < r["high"] <= 1
    assert np.isnan(rate(np.zeros(0, bool))["rate"])
    values = np.arange(10.0)
    both = surrogate_correlation(values, values ** 3)
    assert both["spearman"] == pytest.approx(1.0) and 0.8 < both["pearson"] < 1.0
    assert np.isnan(surrogate_correlation(values, np.ones(10))["pearson"])


def test_guard_sets_the_threshold_as_the_defense_stage_does(seeds):
    from advflow.defenses import threshold

    x, _ = seeds
    g = guard(Brightness(), x, 0.25)
    scores = Brightness().score(x)
    assert g.threshold == threshold(scores, 0.25)
    q1, q3 = np.quantile(scores, [0.25, 0.75])
    assert g.scale == pytest.approx(q3 - q1)
    with pytest.raises(ValueError, match="threshold must be finite"):
        Guard(Brightness(), float("nan"))


@pytest.mark.parametrize("change, key", [
    ({"n": 0}, "adaptive.n"), ({"n": 1000}, "adaptive.n"), ({"eot": 2.5}, "adaptive.eot"),
    ({"pgd": {"rel_stepsize": float("nan")}}, "adaptive.pgd.rel_stepsize"), ({"pgd": {"step": 3}}, "adaptive.pgd.step"),
    ({"targets": ["magnet_l9"]}, "adaptive.targets"), ({"attacks": ["fgsm"]}, "adaptive.attacks"),
    ({"epsilons": [0.25]}, "adaptive.epsilons"), ({"kappas": []}, "adaptive.kappas"), ({"longer": 1}, "adaptive.longer"),
    ({"budget": 3}, "adaptive.budget"),
])
def test_a_bad_adaptive_block_is_refused_naming_the_key(change, key):
    import yaml

    from advflow.defenses.settings import defense_settings
    from advflow.workflow.errors import ConfigError

    config = yaml.safe_load(open("configs/tiny.yaml"))
    config["defense"]["adaptive"].update(change)
    with pytest.raises(ConfigError, match=rf"defense\.{re.escape(key)}"):
        defense_settings(config)


def test_the_adaptive_sets_and_targets_of_a_block():
    import yaml

    from advflow.defenses.settings import adaptive_guards_of, adaptive_sets, adaptive_targets, defense_settings

    config = yaml.safe_load(open("configs/tiny.yaml"))
    config["defense"]["adaptive"]["targets"] = None
    settings = defense_settings(config)
    assert adaptive_targets(settings) == ["undefended", "defense", "magnet_l1", "magnet_l2", "magnet_jsd_T10", "mid",
                                          "dropout_vote", "infopath", "mahalanobis", "lid"]
    assert adaptive_sets(settings) == {"pgd_eps0.3": ("pgd", 0.3, False), "pgd_eps0.3_longer": ("pgd", 0.3, True),
                                       "cw_kappa0": ("cw", 0.0, False), "cw_kappa0_longer": ("cw", 0.0, True)}
    assert adaptive_guards_of("defense", settings) == ["magnet_l1", "magnet_l2", "magnet_jsd_T10", "mid"]
    assert adaptive_guards_of("undefended", settings) == [] and adaptive_guards_of("lid", settings) == ["lid"]
    config["defense"]["adaptive"] = None
    assert adaptive_sets(defense_settings(config)) == {}
