"""Adaptive attacks (docs/method.md, "Defenses and detectors", "Adaptive attacks"): a white-box attacker who knows the
classifier, the reformer and every detector of a defense with its threshold.

**The target is the whole defended system** (:class:`DefendedSystem`): the classifier, MagNet's reformer where the
defense has one, and the detectors that guard it (:class:`Guard`: a detector and its threshold). An input is a
**success** only if the defended classifier (after the reformer) is fooled (its prediction is wrong, as the transfer
sets count it) AND no guard flags it at its threshold; both are judged with the detectors' real scores
(:meth:`DefendedSystem.evaluate`), never with the surrogates the attack descends. C&W's confidence κ is the attack's
own goal: it keeps an iterate once the margin reaches κ unflagged (:attr:`Outcome.goal`).

**The loss** (:meth:`DefendedSystem.loss`, per input, minimised) is the classifier's margin hinge through the reformer,
``max(z_y - max_{j != y} z_j + κ, 0)``, plus per guard ``max(s(x) - τ + slack, 0) / scale`` with ``s`` the detector's
:meth:`~advflow.defenses.Detector.differentiable_score` (exact, or a surrogate that tracks the score: its
``adaptive_surrogate``), ``τ`` its threshold, ``scale`` the spread of its clean validation scores (the terms share one
scale) and ``slack`` a tenth of that spread (so that the real score, not only the surrogate, goes under τ). Each hinge
is 0 once its goal is met, so the attack stops pushing what is already achieved.

**Randomized defenses.** The dropout vote (:class:`~advflow.defenses.dropout.DropoutVote`) is attacked with
expectation over transformation: the margin hinge is averaged over ``eot`` dropout masks drawn afresh at every step
(the vote's spread falls as every mask is fooled, so the vote needs no term of its own). Success is counted on
**fresh** masks: the vote that judges the input uses a seed the attack never drew from.

**Two attacks**, over the transfer sweeps' grids: :func:`pgd` (L∞, ε in seed 003's pixel units, random start,
``restarts``, signed-gradient steps) and :func:`cw_l2` (C&W's L2 attack, Adam on ``tanh`` space, a binary search over
the constant c, confidence κ). Both keep, per input, the first iterate that reaches the goal at a check (every
``check_every`` steps and at the end of each restart or search step); an input never successful keeps its
lowest-loss iterate.

**Sanity checks** (Carlini et al. 2019, Tramèr et al. 2020; :func:`masking_flag`, :func:`convergence`): against the
undefended classifier success should reach 100 % as the budget grows; doubling steps and restarts should change
nothing at the largest budget; an adaptive attack whose success stays far below the undefended one at a large budget
is flagged as possible gradient masking or optimisation failure, not reported as robustness.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from advflow.defenses import Detector, flagged
from advflow.information.shifts import wilson

#: The share of a guard's clean spread its differentiable score is pushed below the threshold.
SLACK = 0.1


@dataclass
class Guard:
    """A detector guarding the defended classifier: flags an input whose :meth:`Detector.score` exceeds
    ``threshold``; ``scale`` (> 0) puts its term of the loss on a common scale (:func:`guard`)."""

    detector: Detector
    threshold: float
    scale: float = 1.0
    #: The threshold the attack's term holds the differentiable score under: ``threshold`` for an exact score, the
    #: same clean quantile of the surrogate for a surrogate (its scale differs).
    surrogate_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.surrogate_threshold is None:
            self.surrogate_threshold = self.threshold
        if not (math.isfinite(self.threshold) and math.isfinite(self.surrogate_threshold)):
            raise ValueError(f"guard {self.detector.name}: the threshold must be finite; got {self.threshold!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"guard {self.detector.name}: the scale must be a positive number; got {self.scale!r}")


def _spread(scores: np.ndarray) -> float:
    q1, q3 = np.quantile(scores, [0.25, 0.75])
    return float(q3 - q1) if q3 > q1 else float(scores.std()) or 1.0


def guard(detector: Detector, validation: torch.Tensor, fpr: float, *, scores: np.ndarray | None = None) -> Guard:
    """``detector`` guarding at its ``fpr`` on clean ``validation`` images (``scores``: their real scores, if already
    computed): the threshold as the defense stage sets it (:func:`advflow.defenses.threshold`), the scale the
    interquartile range of the validation scores (their standard deviation where that range is 0, 1 where both are);
    for a surrogate score (not ``"exact"``), the surrogate's own quantile and spread for the attack's term."""
    from advflow.defenses import threshold

    real = np.asarray(detector.score(validation) if scores is None else scores, dtype=np.float64)
    limit = threshold(real, fpr)
    if getattr(detector, "adaptive_surrogate", "") == "exact":
        return Guard(detector, limit, _spread(real))
    with torch.no_grad():
        own = detector.differentiable_score(validation).detach().double().cpu().numpy()
    return Guard(detector, limit, _spread(own), surrogate_threshold=threshold(own, fpr))


@dataclass
class Outcome:
    """What the real defended system does with a batch of (adversarial) inputs, judged with the real scores."""

    #: ``(N,)`` the defended classifier's prediction (after the reformer; the plurality of fresh masks for a vote).
    prediction: np.ndarray
    #: ``(N,)`` the achieved margin max_{j != y} z_j - z_y of the defended classifier (NaN for a vote).
    margin: np.ndarray
    #: ``(N,)`` the defended classifier is fooled: its prediction is wrong (a vote: its plurality).
    fooled: np.ndarray
    #: guard name -> ``(N,)`` real score and whether it exceeds the guard's threshold.
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    #: The logit margin the attack asks for (C&W's confidence; 0 for PGD).
    kappa: float = 0.0

    @property
    def reached(self) -> np.ndarray:
        """``(N,)`` fooled with margin >= κ (a vote: fooled), the attack's own goal."""
        if np.isnan(self.margin).all():
            return self.fooled.copy()
        return self.fooled & (self.margin >= self.kappa)

    @property
    def flagged(self) -> np.ndarray:
        """``(N,)`` any guard flags the input."""
        out = np.zeros(len(self.fooled), bool)
        for flags in self.flags.values():
            out |= flags
        return out

    @property
    def success(self) -> np.ndarray:
        """``(N,)`` fooled AND flagged by no guard: the defended system is beaten (as the transfer sets count it)."""
        return self.fooled & ~self.flagged

    @property
    def goal(self) -> np.ndarray:
        """``(N,)`` :attr:`reached` AND flagged by no guard: what the attack keeps an iterate for."""
        return self.reached & ~self.flagged


def _margin_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(N,)`` max_{j != y} z_j - z_y (> 0: misclassified)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), -math.inf)
    return others.max(1).values - true


class DefendedSystem:
    """The classifier (model space ``[-1, 1]`` to logits), MagNet's ``reformer`` (or None), the ``guards`` by name,
    and for seed 001's dropout vote its :class:`~advflow.defenses.dropout.DropoutVote` (``vote``: the defended
    prediction is the plurality of its masks and it flags a spread above ``vote_threshold``; the attack averages
    ``eot`` masks per step)."""

    def __init__(self, classifier: nn.Module, *, reformer: Any = None, guards: Mapping[str, Guard] | None = None,
                 vote: Any = None, vote_threshold: float | None = None, eot: int = 8,
                 fresh_seed: int = 1_000_003) -> None:
        if vote is not None and (vote_threshold is None or not math.isfinite(vote_threshold)):
            raise ValueError("a defended system with the dropout vote needs the vote's threshold (vote_threshold)")
        if isinstance(eot, bool) or not isinstance(eot, int) or eot < 1:
            raise ValueError(f"eot: the number of dropout masks averaged per step must be a positive integer; got "
                             f"{eot!r}")
        self.classifier, self.reformer, self.guards = classifier.eval(), reformer, dict(guards or {})
        self.vote, self.vote_threshold, self.eot, self.fresh_seed = vote, vote_threshold, eot, int(fresh_seed)

    @property
    def device(self) -> torch.device:
        return next(self.classifier.parameters()).device

    @property
    def undefended(self) -> bool:
        return self.reformer is None and not self.guards and self.vote is None

    def describe(self) -> str:
        parts = ["classifier"] + (["reformer"] if self.reformer is not None else [])
        parts += [f"{name} (τ = {g.threshold:.4g})" for name, g in self.guards.items()]
        if self.vote is not None:
            parts.append(f"dropout vote (τ = {self.vote_threshold:.4g}, EOT over {self.eot} masks)")
        return " + ".join(parts)

    def _reformed(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.reformer is None else self.reformer.reform(x)

    @contextlib.contextmanager
    def _masks(self) -> Iterator[None]:
        with self.vote._stochastic():
            yield

    def margin_hinge(self, x: torch.Tensor, labels: torch.Tensor, kappa: float) -> torch.Tensor:
        """``(N,)`` mean over the EOT masks (one pass without a vote) of max(z_y - max_{j != y} z_j + κ, 0) through
        the reformer, differentiable."""
        if self.vote is None:
            return torch.relu(kappa - _margin_of(self.classifier(self._reformed(x)), labels))
        with self._masks():
            hinges = [torch.relu(kappa - _margin_of(self.classifier(self._reformed(x)), labels))
                      for _ in range(self.eot)]
        return torch.stack(hinges).mean(0)

    def guard_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per guard, ``(N,)`` max(s(x) - τ_s + slack, 0) / scale with s the differentiable score and τ_s its
        threshold (:attr:`Guard.surrogate_threshold`)."""
        out = {}
        for name, g in self.guards.items():
            score = g.detector.differentiable_score(x).to(x.device, x.dtype)
            out[name] = torch.relu(score - g.surrogate_threshold + SLACK * g.scale) / g.scale
        return out

    def loss(self, x: torch.Tensor, labels: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
        """``(N,)`` the adaptive loss (module docstring): margin hinge + the guards' terms."""
        total = self.margin_hinge(x, labels, kappa)
        for term in self.guard_terms(x).values():
            total = total + term
        return total

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, labels: torch.Tensor, kappa: float = 0.0) -> Outcome:
        """The real system on ``x``: the defended prediction and margin, fooled (a wrong prediction; a vote: its
        plurality on fresh masks), and each guard's real score and flag (a vote's spread too, as ``dropout_vote``)."""
        x = x.detach()
        y = labels.cpu().numpy()
        scores, flags = {}, {}
        if self.vote is None:
            logits = self.classifier(self._reformed(x.to(self.device))).float().cpu()
            margin = _margin_of(logits, labels.cpu()).numpy().astype(np.float64)
            prediction = logits.argmax(1).numpy()
            fooled = prediction != y
        else:
            seed, self.vote.seed = self.vote.seed, self.fresh_seed  # fresh masks, never drawn by the attack
            try:
                num_classes = int(self.classifier(x[:1].to(self.device)).shape[1])
                _, prediction, spread = self.vote.predict_and_score(self._reformed(x.to(self.device)), num_classes)
            finally:
                self.vote.seed = seed
            margin = np.full(len(y), math.nan)
            fooled = prediction != y
            scores["dropout_vote"] = spread
            flags["dropout_vote"] = flagged(spread, self.vote_threshold)
        for name, g in self.guards.items():
            scores[name] = np.asarray(g.detector.score(x), dtype=np.float64)
            flags[name] = flagged(scores[name], g.threshold)
        return Outcome(prediction=prediction, margin=margin, fooled=fooled, scores=scores, flags=flags,
                       kappa=float(kappa))


# ---------------------------------------------------------------------------------------------------------
# The attacks


@dataclass
class AttackResult:
    """Per input: the adversarial image kept, the real system's outcome on it, and the surrogate scores it had."""

    adversarial: torch.Tensor
    outcome: Outcome
    #: guard name -> ``(N,)`` the differentiable (surrogate) score of the kept images, beside the real one.
    surrogate: dict[str, np.ndarray]
    settings: dict[str, Any]

    @property
    def success(self) -> np.ndarray:
        return self.outcome.success


def _keep(best: torch.Tensor, done: np.ndarray, best_loss: torch.Tensor, x: torch.Tensor, loss: torch.Tensor,
          success: np.ndarray | None) -> None:
    """Update the kept iterate per input, in place: the first successful one wins; until then the lowest loss."""
    open_ = torch.as_tensor(~done, device=x.device)
    better = open_ & (loss < best_loss)
    if success is not None:
        newly = open_ & torch.as_tensor(success, device=x.device)
        better = better | newly
        done |= success
    best[better] = x[better].detach()
    best_loss[better] = loss[better].detach()


def surrogates(system: DefendedSystem, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Per guard, the differentiable (surrogate) score of ``x``."""
    with torch.no_grad():
        return {name: g.detector.differentiable_score(x).detach().double().cpu().numpy()
                for name, g in system.guards.items()}


def _check_inputs(x: torch.Tensor, labels: torch.Tensor) -> None:
    if x.ndim != 4 or len(x) != len(labels):
        raise ValueError(f"adaptive attacks take images (N, C, H, W) and N labels; got {tuple(x.shape)} and "
                         f"{tuple(labels.shape)}")
    if x.numel() and (x.min() < -1.0 - 1e-5 or x.max() > 1.0 + 1e-5):
        raise ValueError("adaptive attacks take images in model space [-1, 1] (advflow.data.to_model_space)")


def _checks(steps: int, check_every: int) -> set[int]:
    return set(range(check_every, steps + 1, check_every)) | {steps}


def _own_rng(function: Callable[..., AttackResult]) -> Callable[..., AttackResult]:
    """Run an attack with the global torch RNG forked: the EOT masks it seeds leave the caller's state as it was."""
    import functools

    @functools.wraps(function)
    def wrapper(system: DefendedSystem, *args: Any, **kwargs: Any) -> AttackResult:
        devices = [system.device] if system.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return function(system, *args, **kwargs)
    return wrapper


@_own_rng
def pgd(system: DefendedSystem, x: torch.Tensor, labels: torch.Tensor, *, epsilon: float, steps: int = 50,
        rel_stepsize: float = 0.1, restarts: int = 1, kappa: float = 0.0, seed: int = 0,
        check_every: int = 10, batch_size: int = 100) -> AttackResult:
    """L∞ PGD on the adaptive loss: ``epsilon`` in seed 003's pixel units ([0, 1]; 2ε in model space), a uniform
    random start in the ball for every restart, ``steps`` signed-gradient steps of ``rel_stepsize · 2ε``, projected
    to the ball and to [-1, 1]; success judged by the real system (module docstring)."""
    _check_inputs(x, labels)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"pgd: epsilon must be a positive number (pixel units); got {epsilon!r}")
    radius, settings = 2.0 * float(epsilon), {"attack": "pgd", "epsilon": float(epsilon), "steps": int(steps),
                                              "rel_stepsize": float(rel_stepsize), "restarts": int(restarts),
                                              "kappa": float(kappa), "check_every": int(check_every),
                                              "eot": system.eot if system.vote is not None else 0}
    alpha = float(rel_stepsize) * radius
    generator = torch.Generator().manual_seed(int(seed))
    kept, done_all = [], []
    for start in range(0, len(x), batch_size):
        seeds = x[start:start + batch_size].to(system.device).float()
        y = labels[start:start + batch_size].to(system.device)
        best, best_loss = seeds.clone(), torch.full((len(seeds),), math.inf, device=seeds.device)
        done = np.zeros(len(seeds), bool)
        checks = _checks(int(steps), int(check_every))
        for _ in range(int(restarts)):
            noise = (torch.rand(seeds.shape, generator=generator) * 2 - 1).to(seeds.device) * radius
            adv = (seeds + noise).clamp(-1.0, 1.0)
            for step in range(1, int(steps) + 1):
                adv.requires_grad_(True)
                torch.manual_seed(int(seed) * 7919 + step)  # the EOT masks of this step
                loss = system.loss(adv, y, kappa)
                grad, = torch.autograd.grad(loss.sum(), adv)
                with torch.no_grad():
                    adv = adv - alpha * grad.sign()
                    adv = torch.min(torch.max(adv, seeds - radius), seeds + radius).clamp(-1.0, 1.0)
                if step in checks:
                    with torch.no_grad():
                        torch.manual_seed(int(seed) * 7919 + step)
                        current = system.loss(adv, y, kappa)
                    _keep(best, done, best_loss, adv, current, system.evaluate(adv, y, kappa).goal)
                    if done.all():
                        break
            if done.all():
                break
        kept.append(best.cpu())
        done_all.append(done)
    adversarial = torch.cat(kept) if kept else x[:0].clone()
    return AttackResult(adversarial, system.evaluate(adversarial, labels, kappa),
                        surrogates(system, adversarial.to(system.device)), settings)


@_own_rng
def cw_l2(system: DefendedSystem, x: torch.Tensor, labels: torch.Tensor, *, kappa: float = 0.0, steps: int = 100,
          stepsize: float = 0.05, binary_search_steps: int = 5, c: float = 10.0, seed: int = 0,
          check_every: int = 10, batch_size: int = 100) -> AttackResult:
    """C&W's L2 attack on the adaptive loss: minimise ``||x' - x||² + c · loss(x')`` over ``x' = tanh(w)`` with Adam
    (``stepsize``), a per-input binary search over ``c`` (start ``c``; ×10 while it fails, bisection once it
    succeeded); the kept image is the successful one with the smallest L2 distance, judged by the real system."""
    _check_inputs(x, labels)
    if not (math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"cw_l2: kappa must be a number >= 0; got {kappa!r}")
    settings = {"attack": "cw_l2", "kappa": float(kappa), "steps": int(steps), "stepsize": float(stepsize),
                "binary_search_steps": int(binary_search_steps), "c": float(c), "check_every": int(check_every),
                "eot": system.eot if system.vote is not None else 0}
    kept = []
    for start in range(0, len(x), batch_size):
        seeds = x[start:start + batch_size].to(system.device).float()
        y = labels[start:start + batch_size].to(system.device)
        n = len(seeds)
        low, high = torch.zeros(n, device=seeds.device), torch.full((n,), math.inf, device=seeds.device)
        const = torch.full((n,), float(c), device=seeds.device)
        best, best_norm = seeds.clone(), torch.full((n,), math.inf, device=seeds.device)
        fallback_loss = torch.full((n,), math.inf, device=seeds.device)
        w0 = torch.atanh(seeds.clamp(-1 + 1e-6, 1 - 1e-6))
        checks = _checks(int(steps), int(check_every))
        for search in range(int(binary_search_steps)):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=float(stepsize))
            succeeded = np.zeros(n, bool)
            for step in range(1, int(steps) + 1):
                torch.manual_seed(int(seed) * 7919 + search * 100_003 + step)
                adv = torch.tanh(w)
                distance = (adv - seeds).flatten(1).pow(2).sum(1)
                loss = system.loss(adv, y, kappa)
                optimizer.zero_grad()
                (distance + const * loss).sum().backward()
                optimizer.step()
                if step in checks:
                    with torch.no_grad():
                        adv = torch.tanh(w)
                        distance = (adv - seeds).flatten(1).pow(2).sum(1)
                        torch.manual_seed(int(seed) * 7919 + search * 100_003 + step)
                        current = system.loss(adv, y, kappa)
                    success = torch.as_tensor(system.evaluate(adv, y, kappa).goal, device=seeds.device)
                    better = success & (distance < best_norm)
                    best[better], best_norm[better] = adv[better], distance[better]
                    never = torch.isinf(best_norm) & (current < fallback_loss)
                    best[never], fallback_loss[never] = adv[never], current[never]
                    succeeded |= success.cpu().numpy()
            ok = torch.as_tensor(succeeded, device=seeds.device)
            high = torch.where(ok, torch.minimum(high, const), high)
            low = torch.where(ok, low, torch.maximum(low, const))
            const = torch.where(torch.isinf(high), const * 10, (low + high) / 2)
        kept.append(best.detach().cpu())
    adversarial = torch.cat(kept) if kept else x[:0].clone()
    return AttackResult(adversarial, system.evaluate(adversarial, labels, kappa),
                        surrogates(system, adversarial.to(system.device)), settings)


# ---------------------------------------------------------------------------------------------------------
# Sanity checks


def rate(hits: np.ndarray) -> dict[str, float]:
    """The share of ``hits`` (bool) with its 95 % Wilson interval."""
    hits = np.asarray(hits, bool)
    share = float(hits.mean()) if hits.size else math.nan
    low, high = wilson(share, hits.size)
    return {"n": int(hits.size), "rate": share, "low": low, "high": high}


def masking_flag(adaptive_success: np.ndarray, undefended_success: np.ndarray, *, at_least: float = 0.9,
                 fraction: float = 0.5) -> bool:
    """True where an adaptive attack's success looks like gradient masking or an optimisation failure rather than
    robustness: the same attack at the same budget fools the undefended classifier on at least ``at_least`` of the
    seeds, and the adaptive attack's success, at the upper end of its 95 % Wilson interval, stays below ``fraction``
    of that."""
    undefended = rate(undefended_success)
    adaptive = rate(adaptive_success)
    if not undefended["n"] or not adaptive["n"]:
        return False
    return undefended["rate"] >= at_least and adaptive["high"] < fraction * undefended["rate"]


def convergence(success: np.ndarray, success_longer: np.ndarray, *, tolerance: float = 0.05) -> dict[str, Any]:
    """Doubling steps and restarts against the base attack at one budget, on the same seeds: how many seeds only the
    longer attack fooled, and "converged" when that is at most ``max(1, tolerance · n)`` seeds (else "not
    converged": the base attack's numbers understate the attacker)."""
    base, longer = np.asarray(success, bool), np.asarray(success_longer, bool)
    if base.shape != longer.shape:
        raise ValueError(f"convergence compares the same seeds; got {base.shape} and {longer.shape}")
    gained = int((longer & ~base).sum())
    return {"n": int(base.size), "base": int(base.sum()), "longer": int(longer.sum()), "gained": gained,
            "verdict": "converged" if gained <= max(1, int(tolerance * base.size)) else "not converged"}


def surrogate_correlation(real: np.ndarray, surrogate: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations of a guard's surrogate score with its real score over the same inputs."""
    from scipy import stats

    real, surrogate = np.asarray(real, np.float64), np.asarray(surrogate, np.float64)
    if real.size < 3 or np.ptp(real) == 0 or np.ptp(surrogate) == 0:
        return {"n": int(real.size), "pearson": math.nan, "spearman": math.nan}
    return {"n": int(real.size), "pearson": float(stats.pearsonr(real, surrogate)[0]),
            "spearman": float(stats.spearmanr(real, surrogate)[0])}


def attack(name: str) -> Callable[..., AttackResult]:
    """The adaptive attack by name: ``pgd`` (L∞) or ``cw`` (L2)."""
    attacks = {"pgd": pgd, "cw": cw_l2}
    if name not in attacks:
        raise ValueError(f"unknown adaptive attack {name!r}; known: {', '.join(attacks)}")
    return attacks[name]


__all__: Sequence[str] = ("Guard", "guard", "Outcome", "DefendedSystem", "AttackResult", "pgd", "cw_l2", "rate",
                          "masking_flag", "convergence", "surrogate_correlation", "surrogates", "attack")
