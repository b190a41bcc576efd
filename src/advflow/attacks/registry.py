"""Every attack the workflow knows, one :class:`AttackSpec` each (docs/method.md, "Attacks").

The registry is the one home of an attack's facts: its name (and any other name it goes by), the norm its
distortion is measured in, its kind, its default settings in the models' [-1, 1] space, the label and family
the report prints, the shape of its config block (a ``$defs`` entry of ``schemas/config.schema.yaml``), what
the defense stage sweeps it over, and how one batch is crafted. The config check, the schema's names, the
workflow's wildcard patterns, the report's labels and the attack stage all read it from here.

Adding an attack is one :func:`register` call below plus its module: ``craft`` imports that module inside the
function (so this file stays importable while Snakemake parses the workflow, without torch), and the rules'
code digests follow the import, so changing the module reruns exactly that attack's jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from advflow.workflow.registry import Registry

#: The box of the models' input space: every attack keeps its inputs inside it.
BOUNDS = (-1.0, 1.0)
NORMS = ("linf", "l2", "l1", "l0")
KINDS = ("gradient", "saliency", "geometric", "optimisation")

#: ``craft(model, x, labels, settings, *, num_classes, device) -> (adversarial, extras)`` for one batch.
Craft = Callable[..., tuple[Any, dict[str, Any]]]


@dataclass(frozen=True)
class AttackSpec:
    """One attack's contract: everything the workflow needs to know of it."""

    name: str
    norm: str  # the norm its distortion is measured in (Table II's "norm"), and which random control matches it
    kind: str  # gradient steps, a saliency map, a geometric (DeepFool) step or an optimisation (C&W, EAD)
    label: str  # as tables and figures print it
    family: str  # the report's row of attacks alike (Q2's figure)
    defaults: Mapping[str, Any]  # settings in the models' [-1, 1] space (the paper's where it states them)
    craft: Craft = field(repr=False)
    settings: str | None = None  # the schema's $defs entry its ``attacks.<name>`` block follows; None: no block
    settings_from: str | None = None  # runs with another attack's settings (plus ``fixed``)
    fixed: Mapping[str, Any] = field(default_factory=dict)  # settings that are not the config's to change
    temperature_from: str | None = None  # attacks softmax(Z/T) at this model's distillation temperature
    sweep_name: str | None = None  # the defense stage sweeps it under this name (None: not swept)
    strength: str | None = None  # what a sweep varies: "epsilon" (pixel units) or "kappa" (the logit margin)
    sweep_defaults: Mapping[str, Any] = field(default_factory=dict)  # the defense sweep's own defaults
    sweep_order: int = 0  # its place in the defense tables (seed 003's: PGD, BIM; then C&W, EAD-L1, EAD-EN)

    def __post_init__(self) -> None:
        if self.norm not in NORMS or self.kind not in KINDS:
            raise ValueError(f"attack {self.name!r}: norm must be one of {NORMS} and kind one of {KINDS}")
        if (self.sweep_name is None) != (self.strength is None) or self.strength not in (None, "epsilon", "kappa"):
            raise ValueError(f"attack {self.name!r}: a swept attack names its sweep and its strength "
                             f"(epsilon or kappa), an attack not swept neither")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))
        object.__setattr__(self, "sweep_defaults", MappingProxyType(dict(self.sweep_defaults)))


ATTACKS: Registry[AttackSpec] = Registry("attack")
names = ATTACKS.names  # every attack's name, in registration order (the order of tables and of the resolved config)
get = ATTACKS.lookup  # the attack called ``name``; an unknown name is a ValueError listing the known ones


def register(spec: AttackSpec) -> AttackSpec:
    """Add ``spec`` to :data:`ATTACKS` (a name may be registered once, and not as another attack's sweep name)."""
    if spec.name in sweep_attacks():
        raise ValueError(f"attack {spec.name!r} is registered already")
    return ATTACKS.register(spec)


def configurable() -> tuple[str, ...]:
    """The attacks with an ``attacks.<name>`` block of their own in the config."""
    return tuple(n for n, s in ATTACKS.items() if s.settings is not None)


def sweep_attacks() -> dict[str, AttackSpec]:
    """The defense stage's sweep names and their attacks (seed 003 calls IGSM "BIM")."""
    swept = sorted((s for s in ATTACKS.values() if s.sweep_name is not None), key=lambda s: s.sweep_order)
    return {s.sweep_name: s for s in swept}


def swept_by(strength: str) -> tuple[str, ...]:
    """The sweep names whose sweeps vary ``strength`` ("epsilon" or "kappa")."""
    return tuple(n for n, s in sweep_attacks().items() if s.strength == strength)


def sweep(name: str) -> AttackSpec:
    """The attack the defense stage sweeps as ``name``; unknown names are a ValueError listing the known ones."""
    found = sweep_attacks()
    if name not in found:
        raise ValueError(f"unknown sweep attack {name!r}; allowed: {', '.join(found)}")
    return found[name]


def labels() -> dict[str, str]:
    """Every name an attack goes by (its own and its sweep name) -> its label."""
    out = {n: s.label for n, s in ATTACKS.items()}
    out.update({n: s.label if n == s.name else n.upper() for n, s in sweep_attacks().items()})
    return out


# ---------------------------------------------------------------------------------------------- crafting

def _foolbox(make: Callable[[Mapping[str, Any]], tuple[Any, float | None]], *, blank_is_failure: bool = False) -> Craft:
    """A batch crafted by the Foolbox attack ``make(settings)`` returns, with its ε (None for minimal attacks)."""

    def craft(model: Any, x: Any, labels: Any, settings: Mapping[str, Any], *, num_classes: int,
              device: Any) -> tuple[Any, dict[str, Any]]:
        import foolbox as fb
        import torch

        attack, epsilon = make(settings)
        fmodel = fb.PyTorchModel(model, bounds=BOUNDS, device=device)
        _, clipped, _ = attack(fmodel, x, fb.criteria.Misclassification(labels), epsilons=epsilon)
        if blank_is_failure:
            # Foolbox's C&W and EAD start their best-so-far from an all-zero image and return it where no
            # adversarial was found (and Foolbox then calls it a success whenever the model misclassifies a blank
            # image). An optimum of exactly zero in every pixel does not occur in their tanh / shrinkage spaces,
            # so an all-zero output marks a failed attempt: its honest record is the seed itself.
            blank = (clipped.flatten(1) == 0).all(1) & ~(x.flatten(1) == 0).all(1)
            clipped = torch.where(blank.view(-1, *[1] * (x.dim() - 1)), x, clipped)
        return clipped.detach().clamp(*BOUNDS), {}

    return craft


def _jsma(model: Any, x: Any, labels: Any, settings: Mapping[str, Any], *, num_classes: int,
          device: Any) -> tuple[Any, dict[str, Any]]:
    from advflow.attacks.jsma import jsma_least_perturbation

    result = jsma_least_perturbation(model, x, labels, num_classes=num_classes, theta=settings["theta"],
                                     gamma=settings["gamma"], temperature=settings.get("temperature", 1.0), clip=BOUNDS)
    return result.adversarial.detach(), {"target": result.target, "iterations": result.iterations}


def _fgsm(s: Mapping[str, Any]) -> tuple[Any, float]:
    import foolbox as fb

    return fb.attacks.LinfFastGradientAttack(random_start=False), s["epsilon"]


def _igsm(s: Mapping[str, Any]) -> tuple[Any, float]:
    import foolbox as fb

    return fb.attacks.LinfBasicIterativeAttack(abs_stepsize=s["alpha"], steps=s["steps"], random_start=False), s["epsilon"]


def _pgd(s: Mapping[str, Any]) -> tuple[Any, float]:
    import foolbox as fb

    return (fb.attacks.LinfProjectedGradientDescentAttack(abs_stepsize=s["alpha"], steps=s["steps"], random_start=True),
            s["epsilon"])


def _deepfool(s: Mapping[str, Any]) -> tuple[Any, None]:
    import foolbox as fb

    return fb.attacks.L2DeepFoolAttack(steps=s["steps"], candidates=s.get("candidates", 10), overshoot=s["overshoot"]), None


def _cw(s: Mapping[str, Any]) -> tuple[Any, None]:
    import foolbox as fb

    return fb.attacks.L2CarliniWagnerAttack(binary_search_steps=s["binary_search_steps"], steps=s["steps"],
                                            stepsize=s["stepsize"], confidence=s["kappa"], initial_const=s["c"]), None


def _ead(rule: str) -> Callable[[Mapping[str, Any]], tuple[Any, None]]:
    def make(s: Mapping[str, Any]) -> tuple[Any, None]:
        import foolbox as fb

        return fb.attacks.EADAttack(binary_search_steps=s["binary_search_steps"], steps=s["steps"],
                                    initial_stepsize=s["stepsize"], confidence=s["kappa"], initial_const=s["c"],
                                    regularization=s["beta"], decision_rule=rule), None

    return make


# ---------------------------------------------------------------------------------------------- the attacks
# The paper's settings (Ji & Wang, Section IV-A) and seed 003's, in the models' [-1, 1] space; the defense
# sweeps' defaults are seed 003's (its ε in [0, 1] pixel units; the stage doubles it).

_LINF = "L∞ gradient attacks"
_OPTIMISATION = {"binary_search_steps": 5, "steps": 100, "stepsize": 0.01, "kappa": 0.0, "c": 0.25}
_EAD_SWEEP = {"binary_search_steps": 9, "steps": 1000, "stepsize": 0.01, "c": 0.001, "beta": 0.1}

register(AttackSpec("fgsm", "linf", "gradient", "FGSM", _LINF, {"epsilon": 0.025}, _foolbox(_fgsm),
                    settings="linf_attack"))
register(AttackSpec("igsm", "linf", "gradient", "IGSM", _LINF, {"epsilon": 0.025, "alpha": 0.002, "steps": 20},
                    _foolbox(_igsm), settings="linf_attack", sweep_name="bim", strength="epsilon",
                    sweep_defaults={"steps": 10, "rel_stepsize": 0.1}, sweep_order=2))
register(AttackSpec("pgd", "linf", "gradient", "PGD", _LINF, {"epsilon": 0.1, "alpha": 0.01, "steps": 40},
                    _foolbox(_pgd), settings="linf_attack", sweep_name="pgd", strength="epsilon",
                    sweep_defaults={"steps": 40, "rel_stepsize": 0.025}, sweep_order=1))
register(AttackSpec("jsma", "l0", "saliency", "JSMA", "JSMA (L0)", {"theta": 0.1, "gamma": 0.1}, _jsma,
                    settings="jsma_attack"))
register(AttackSpec("jsma_adaptive", "l0", "saliency", "adaptive JSMA", "JSMA (L0)", {"theta": 0.4, "gamma": 0.2},
                    _jsma, settings="jsma_attack", temperature_from="distilled"))
#: The regular JSMA (T = 1) with the adaptive attack's θ and γ: Q4's control at matched settings.
register(AttackSpec("jsma_control", "l0", "saliency", "JSMA at the adaptive θ, γ", "JSMA (L0)", {}, _jsma,
                    settings_from="jsma_adaptive", fixed={"temperature": 1.0}))
register(AttackSpec("deepfool", "l2", "geometric", "DeepFool", "minimal L2 attacks",
                    {"steps": 50, "overshoot": 0.02, "candidates": 10}, _foolbox(_deepfool), settings="deepfool_attack"))
register(AttackSpec("cw", "l2", "optimisation", "C&W-L2", "minimal L2 attacks", _OPTIMISATION,
                    _foolbox(_cw, blank_is_failure=True), settings="optimisation_attack", sweep_name="cw",
                    strength="kappa", sweep_defaults={k: v for k, v in _EAD_SWEEP.items() if k != "beta"}, sweep_order=3))
register(AttackSpec("ead_l1", "l1", "optimisation", "EAD-L1", "EAD (L1)", {**_OPTIMISATION, "beta": 0.1},
                    _foolbox(_ead("L1"), blank_is_failure=True), settings="optimisation_attack", sweep_name="ead_l1",
                    strength="kappa", sweep_defaults=_EAD_SWEEP, sweep_order=4))
register(AttackSpec("ead_en", "l1", "optimisation", "EAD-EN", "EAD (L1)", {**_OPTIMISATION, "beta": 0.1},
                    _foolbox(_ead("EN"), blank_is_failure=True), settings="optimisation_attack", sweep_name="ead_en",
                    strength="kappa", sweep_defaults=_EAD_SWEEP, sweep_order=5))
