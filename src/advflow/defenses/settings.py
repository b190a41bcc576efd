"""The defense stage's settings: the config's ``defense`` block over seed 003's defaults, checked before any work
(an unknown name, an FPR outside (0, 1), an empty grid, a classifier not in the zoo: a ConfigError naming the key
and the allowed values), and the names of its sweep sets. Imports no torch: the workflow reads it when it plans."""

from __future__ import annotations

import math
from typing import Any

from advflow.attacks import registry as attack_registry
from advflow.defenses import registry as detector_registry
from advflow.workflow.catalog import MODELS, user_models
from advflow.workflow.errors import ConfigError

#: Every detector the stage knows (:mod:`advflow.defenses.registry`: seed 003 on Fashion-MNIST uses magnet_l1,
#: magnet_l2 and mid, with the reformer).
DETECTORS = detector_registry.names()
#: Detectors scored by the scoring jobs (the others by their own rule: the dropout vote, rule ``dropout_vote``).
SCORED_BY_SCORES_RULE = detector_registry.scored_by_scores_rule()
#: The sweep attacks (:mod:`advflow.attacks.registry`): L∞ attacks swept over ε, optimisation attacks over κ
#: (seed 003, Tables 1 and 2).
EPSILON_ATTACKS, KAPPA_ATTACKS = attack_registry.swept_by("epsilon"), attack_registry.swept_by("kappa")
SWEEP_ATTACKS = tuple(attack_registry.sweep_attacks())
#: The strength part of a sweep set's name, by what the sweep varies: ``pgd_eps0.05``, ``cw_kappa5``.
STRENGTH_PREFIX = {"epsilon": "eps", "kappa": "kappa"}
#: The score table of a study set on the defense classifier is ``scores/{STUDY_PREFIX}{attack}.csv``.
STUDY_PREFIX = "study_"
#: The sweep sets' names as a wildcard pattern (rules/defenses.smk).
SWEEP_PATTERN = f"({'|'.join(SWEEP_ATTACKS)})_({'|'.join(STRENGTH_PREFIX.values())})[0-9.]+"


def defense_defaults() -> dict[str, Any]:
    """Seed 003's settings (the default config scales N_d and the attacks' steps to a 2-core CPU), with the FPRs and
    sweep blocks of whatever the registries hold when it is called."""
    return {
        "classifier": "good_init", "n": 1000, "validation": 1000, "clean": 2000,
        "detectors": ["magnet_l1", "magnet_l2", "mid"], "reformer": True,
        # Judged alone beside the defense's detectors (detectors.csv), not part of the defense: seed 001's dropout vote.
        "compared": ["dropout_vote"],
        "fpr": detector_registry.default_fprs(),
        # Seed 001's dropout vote: K passes; rate null = the classifier's own dropout layers at their own rates.
        "dropout_vote": {"k": 50, "rate": None},
        "autoencoder": {"epochs": 100, "batch_size": 256, "lr": 0.001, "noise": 0.1, "train_size": None},
        "mine": {"hidden": 64, "layers": 2, "steps": 1000, "batch_size": 512, "lr": 0.002, "ema_rate": 0.01,
                 "references": 256, "train_size": 10000},
        "attacks": list(attack_registry.sweep_attacks()),
        "epsilons": [round(0.05 * i, 2) for i in range(1, 11)],
        "kappas": [5 * i for i in range(9)],
        **{name: dict(spec.sweep_defaults) for name, spec in attack_registry.sweep_attacks().items()},
        "batch_size": 100,
        # The detectors rule fit_detector fits on clean training images: their settings blocks (train_size: how many).
        **{name: dict(detector_registry.get(name).defaults) for name in detector_registry.fitted_by_rule()},
        # Adaptive attacks (white-box, against each target that knows it): off unless the config has the block.
        "adaptive": None,
    }


#: The adaptive attacks' settings (``defense.adaptive``; advflow.defenses.adaptive): ``targets`` null = the undefended
#: classifier, the whole defense and every judged detector alone; PGD (L∞) over ``epsilons`` and C&W-L2 over
#: ``kappas`` on the first ``n`` defense seeds; at each attack's largest budget again with ``longer``× the steps (and
#: PGD's restarts): the convergence check.
ADAPTIVE_ATTACKS = ("pgd", "cw")
ADAPTIVE_TARGETS = ("undefended", "defense")
ADAPTIVE_DEFAULTS: dict[str, Any] = {
    "targets": None, "attacks": ["pgd", "cw"], "epsilons": [0.1, 0.2, 0.3, 0.4, 0.5], "kappas": [0, 10, 20, 40],
    "n": 100, "pgd": {"steps": 100, "rel_stepsize": 0.05, "restarts": 2},
    "cw": {"steps": 200, "stepsize": 0.05, "binary_search_steps": 5, "c": 10.0},
    "eot": 16, "check_every": 10, "longer": 2,
}
ADAPTIVE_INTEGERS = {"n": 1, "eot": 1, "check_every": 1, "longer": 2, "pgd.steps": 1, "pgd.restarts": 1,
                     "cw.steps": 1, "cw.binary_search_steps": 1}
ADAPTIVE_POSITIVE = ("pgd.rel_stepsize", "cw.stepsize", "cw.c")


def _fail(key: str, problem: str) -> None:
    raise ConfigError(f"defense.{key}: {problem}")


def defense_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """The run's ``defense`` block over :func:`defense_defaults`, checked; None when the config has none (the
    stage does not run). Errors name the key and the allowed values."""
    block = config.get("defense")
    if block is None:
        return None
    if not isinstance(block, dict):
        _fail("", f"must be a mapping of settings; got {block!r}")
    settings = defense_defaults()
    # what the registries know now (a detector or sweep attack registered after this module was imported too)
    detectors, sweeps = detector_registry.names(), tuple(attack_registry.sweep_attacks())
    for key, value in block.items():
        if key not in settings:
            _fail(key, f"unknown key; allowed: {', '.join(settings)}")
        settings[key] = {**settings[key], **(value or {})} if isinstance(settings[key], dict) else value
    own = user_models(config)
    if (settings["classifier"] not in MODELS and settings["classifier"] not in own) or settings["classifier"] == "ensemble":
        _fail("classifier", f"{settings['classifier']!r} is not a model of the zoo nor of yours; allowed: "
                            f"{', '.join([*(m for m in MODELS if m != 'ensemble'), *own])}")
    if settings["classifier"] not in (config.get("models") or {}):
        _fail("classifier", f"{settings['classifier']} is not among the config's models; add it to models")
    for key in ("n", "validation", "clean"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(key, f"must be a positive integer; got {value!r}")
    for key, allowed in (("detectors", detectors), ("compared", detectors), ("attacks", sweeps)):
        names = settings[key]
        if key == "compared" and names == []:
            continue
        if not isinstance(names, list) or not names:
            _fail(key, f"must be a non-empty list; allowed: {', '.join(allowed)}")
        unknown = [n for n in names if n not in allowed]
        if unknown:
            _fail(key, f"unknown {', '.join(map(str, unknown))}; allowed: {', '.join(allowed)}")
    for name, fpr in settings["fpr"].items():
        if name not in detectors:
            _fail(f"fpr.{name}", f"unknown detector; allowed: {', '.join(detectors)}")
        if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < fpr < 1:  # NaN fails too
            _fail(f"fpr.{name}", f"a false-positive rate must be a number in (0, 1); got {fpr!r}")
    vote = settings["dropout_vote"]
    if set(vote) - {"k", "rate"}:
        _fail("dropout_vote", f"unknown key(s) {', '.join(sorted(set(vote) - {'k', 'rate'}))}; allowed: k, rate")
    if isinstance(vote["k"], bool) or not isinstance(vote["k"], int) or vote["k"] < 1:
        _fail("dropout_vote.k", f"the number of votes must be a positive integer; got {vote['k']!r}")
    rate = vote["rate"]
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or
                             not (math.isfinite(rate) and 0 <= rate < 1)):
        _fail("dropout_vote.rate", f"a dropout rate must be a number in [0, 1) or null (the classifier's own "
                                   f"dropout layers at their rates); got {rate!r}")
    for name in detector_registry.fitted_by_rule():
        block = settings[name]
        for key, value in block.items():
            if key not in detector_registry.get(name).defaults:
                _fail(f"{name}.{key}", f"unknown key; allowed: {', '.join(detector_registry.get(name).defaults)}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(f"{name}.{key}", f"must be a positive integer; got {value!r}")
    if "lid" in settings and settings["lid"]["references"] <= settings["lid"]["k"]:
        _fail("lid.references", f"LID needs more clean references than neighbours: references "
                                f"({settings['lid']['references']}) must exceed k ({settings['lid']['k']})")
    if settings["adaptive"] is not None:
        settings["adaptive"] = adaptive_settings(settings["adaptive"], settings)
    if "infopath" in settings and settings["infopath"]["buckets"] < 2:
        _fail("infopath.buckets", f"the MI estimate needs at least 2 buckets; got {settings['infopath']['buckets']}")
    for key, low, high in (("epsilons", 0.0, 1.0), ("kappas", 0.0, math.inf)):
        grid = settings[key]
        if not isinstance(grid, list) or not grid:
            _fail(key, "must be a non-empty list of numbers")
        for value in grid:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (low < value <= high or
                                                                                     (key == "kappas" and value == 0)):
                _fail(key, f"{value!r} is out of range: ε in (0, 1] (pixel units), κ >= 0")
    return settings


def adaptive_settings(block: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """``defense.adaptive`` over :data:`ADAPTIVE_DEFAULTS`, checked (ConfigError naming the key and the fix)."""
    if not isinstance(block, dict):
        _fail("adaptive", f"must be a mapping of settings (or null: no adaptive attacks); got {block!r}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ADAPTIVE_DEFAULTS.items()}
    for key, value in block.items():
        if key not in out:
            _fail(f"adaptive.{key}", f"unknown key; allowed: {', '.join(out)}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                _fail(f"adaptive.{key}", f"must be a mapping with keys {', '.join(out[key])}; got {value!r}")
            unknown = sorted(set(value) - set(out[key]))
            if unknown:
                _fail(f"adaptive.{key}.{unknown[0]}", f"unknown key; allowed: {', '.join(out[key])}")
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    for key, low in ADAPTIVE_INTEGERS.items():
        head, _, tail = key.partition(".")
        value = out[head][tail] if tail else out[head]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            _fail(f"adaptive.{key}", f"must be an integer >= {low}; got {value!r}")
    for key in ADAPTIVE_POSITIVE:
        head, _, tail = key.partition(".")
        value = out[head][tail]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            _fail(f"adaptive.{key}", f"must be a positive number; got {value!r}")
    if out["n"] > settings["n"]:
        _fail("adaptive.n", f"the adaptive attacks run on the first n of the defense's {settings['n']} seeds; "
                            f"got n = {out['n']}: lower it to at most defense.n")
    allowed = [*ADAPTIVE_TARGETS, *judged(settings)]
    targets = allowed if out["targets"] is None else out["targets"]
    if not isinstance(targets, list) or not targets:
        _fail("adaptive.targets", f"must be a non-empty list or null (all); allowed: {', '.join(allowed)}")
    unknown = [t for t in targets if t not in allowed]
    if unknown:
        _fail("adaptive.targets", f"unknown {', '.join(map(str, unknown))}; allowed: the undefended classifier, "
                                  f"the defense, or a judged detector: {', '.join(allowed)}")
    out["targets"] = list(dict.fromkeys(targets))
    attacks = out["attacks"]
    if not isinstance(attacks, list) or not attacks or any(a not in ADAPTIVE_ATTACKS for a in attacks):
        _fail("adaptive.attacks", f"must be a non-empty list of {', '.join(ADAPTIVE_ATTACKS)}; got {attacks!r}")
    for key, grid in (("epsilons", settings["epsilons"]), ("kappas", settings["kappas"])):
        values = out[key]
        if not isinstance(values, list) or not values:
            _fail(f"adaptive.{key}", "must be a non-empty list of numbers")
        outside = [v for v in values if v not in grid]
        if outside:
            _fail(f"adaptive.{key}", f"{', '.join(map(str, outside))} not in the transfer sweeps' defense.{key} "
                                     f"({', '.join(map(str, grid))}): the adaptive budgets are drawn beside the "
                                     f"transfer ones, so pick them from that grid")
    return out


def adaptive_sets(settings: dict[str, Any]) -> dict[str, tuple[str, float, bool]]:
    """Every adaptive set of one target, by file name -> (attack, strength, longer): ``pgd_eps0.3``, ``cw_kappa10``,
    and at each attack's largest budget ``…_longer`` (``longer``× the steps and restarts). Empty without the block."""
    block = settings.get("adaptive")
    if not block:
        return {}
    out = {}
    for attack in block["attacks"]:
        prefix, grid = ("eps", block["epsilons"]) if attack == "pgd" else ("kappa", block["kappas"])
        for value in sorted(grid):
            out[f"{attack}_{prefix}{value:g}"] = (attack, float(value), False)
        out[f"{attack}_{prefix}{max(grid):g}_longer"] = (attack, float(max(grid)), True)
    return out


def adaptive_targets(settings: dict[str, Any]) -> list[str]:
    """The adaptive attacks' targets (none without the block)."""
    block = settings.get("adaptive")
    return list(block["targets"]) if block else []


def adaptive_guards_of(target: str, settings: dict[str, Any]) -> list[str]:
    """The detectors guarding an adaptive ``target``: none for the undefended classifier, the defense's detectors for
    ``defense``, else the detector itself."""
    if target == "undefended":
        return []
    if target == "defense":
        return list(settings["detectors"])
    return [target]


def adaptive_reformer(target: str, settings: dict[str, Any]) -> bool:
    """Whether the adaptive ``target`` classifies through MagNet's reformer (the defense, when it has one)."""
    return target == "defense" and bool(settings["reformer"])


def judged(settings: dict[str, Any]) -> list[str]:
    """Every detector whose scores are tabulated: the defense's, then the ones compared beside it."""
    return list(dict.fromkeys([*settings["detectors"], *settings["compared"]]))


def uses_dropout_vote(settings: dict[str, Any] | None) -> bool:
    return bool(settings) and "dropout_vote" in judged(settings)


def strength_name(attack: str, value: float) -> str:
    """``eps0.05`` for an ε of PGD/BIM, ``kappa5`` for a κ of C&W/EAD."""
    return f"{STRENGTH_PREFIX[attack_registry.sweep(attack).strength]}{value:g}"


def sweeps(settings: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """Every sweep set of the config, ``{attack}_{strength}`` (its file name, built once here) -> (attack, strength):
    the rules and the tables carry the values, never parse them back out of the name."""
    out = {}
    for attack in settings["attacks"]:
        grid = settings["epsilons"] if attack_registry.sweep(attack).strength == "epsilon" else settings["kappas"]
        out.update({f"{attack}_{strength_name(attack, value)}": (attack, float(value)) for value in grid})
    return out


def sweep_sets(settings: dict[str, Any]) -> list[str]:
    """The names of :func:`sweeps`."""
    return list(sweeps(settings))


def attack_settings(settings: dict[str, Any], attack: str, strength: float) -> tuple[str, dict[str, Any]]:
    """The library attack and its settings for one sweep set, in model space ([-1, 1]: ε doubles)."""
    own, spec = dict(settings[attack]), attack_registry.sweep(attack)
    if spec.strength == "epsilon":  # seed 003's ε is in [0, 1] pixel units: 2ε in the models' [-1, 1] space
        epsilon = 2.0 * strength
        return spec.name, {"epsilon": epsilon, "alpha": own["rel_stepsize"] * epsilon, "steps": own["steps"]}
    return spec.name, {**own, "kappa": float(strength)}
