"""Every detector the defense stage knows, one :class:`DetectorSpec` each (docs/method.md, "Defenses and detectors").

The registry is the one home of a detector's facts: its name, what it needs (an autoencoder of MagNet's, a saved
fitted state), which rule scores it, its default false-positive rate and how it is built. The config check, the
schema's names, the scoring jobs and the defense tables read them from here; an unknown name is refused when the
config is checked and again when a detector is built.

Adding a detector is one :func:`register` call below plus its module, which implements
:class:`advflow.defenses.Detector` (``fit`` on clean data only, ``score`` higher for more suspicious inputs).
``build`` imports that module inside the function, so this file stays light enough for the Snakefile to read
while Snakemake parses it, and the scoring rule's code digest still follows the import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from advflow.workflow.registry import Registry

#: The rules that score detectors: the scoring jobs (``defense_scores``), or a rule of the detector's own.
SCORING_RULES = ("defense_scores", "dropout_vote")


@dataclass(frozen=True)
class Built:
    """What :attr:`DetectorSpec.build` receives: the classifier, MagNet's autoencoders by name, the saved state of
    detectors fitted by a rule of their own (MID), the defense stage's settings and the run's seed."""

    classifier: Any
    autoencoders: Mapping[str, Any]
    states: Mapping[str, Any]
    settings: Mapping[str, Any]
    seed: int


@dataclass(frozen=True)
class DetectorSpec:
    """One detector's contract."""

    name: str
    fpr: float  # its threshold's default false-positive rate on clean validation images (seed 003's)
    build: Callable[[Built], Any] | None = field(repr=False)  # None: scored by a rule of its own, not built here
    autoencoder: str | None = None  # the MagNet autoencoder it reads (ae_i or ae_ii), if any
    state: str | None = None  # the fitted state it loads, saved by a rule of its own (``mid``: rule fit_mid)
    scored_by: str = "defense_scores"

    def __post_init__(self) -> None:
        if not 0 < self.fpr < 1 or self.scored_by not in SCORING_RULES:
            raise ValueError(f"detector {self.name!r}: fpr in (0, 1) and scored_by one of {SCORING_RULES}")
        if (self.build is None) != (self.scored_by != "defense_scores"):
            raise ValueError(f"detector {self.name!r}: the scoring jobs build it (build given) or its own rule scores it")


DETECTORS: Registry[DetectorSpec] = Registry("detector")
register = DETECTORS.register  # add a DetectorSpec (a name may be registered once)
names = DETECTORS.names
get = DETECTORS.lookup  # the detector called ``name``; an unknown name is a ValueError listing the known ones


def scored_by_scores_rule() -> tuple[str, ...]:
    """The detectors the scoring jobs build and score (the others have a rule of their own)."""
    return tuple(n for n, s in DETECTORS.items() if s.scored_by == "defense_scores")


def default_fprs() -> dict[str, float]:
    return {n: s.fpr for n, s in DETECTORS.items()}


def build(name: str, context: Built) -> Any:
    """The detector ``name``, built and fitted (or loaded from its saved state) for the scoring jobs."""
    spec = get(name)
    if spec.build is None:
        raise ValueError(f"detector {name!r} is scored by its own rule ({spec.scored_by}), not by the scoring jobs; "
                         f"the scoring jobs know: {', '.join(scored_by_scores_rule())}")
    return spec.build(context)


# ---------------------------------------------------------------------------------------------- the detectors
# MagNet (Meng & Chen 2017) pairs the L1 reconstruction error with AE-II and the L2 error with AE-I; its JSD
# detectors and the MID detector (seed 003) read AE-I. Default FPRs are seed 003's.

def _reconstruction(p: int, autoencoder: str) -> Callable[[Built], Any]:
    def make(c: Built) -> Any:
        from advflow.defenses.magnet import ReconstructionDetector

        return ReconstructionDetector(c.autoencoders[autoencoder], p)

    return make


def _jsd(temperature: float) -> Callable[[Built], Any]:
    def make(c: Built) -> Any:
        from advflow.defenses.magnet import JSDDetector

        return JSDDetector(c.autoencoders["ae_i"], c.classifier, temperature)

    return make


def _mid(c: Built) -> Any:
    from advflow.defenses.magnet import Reformer
    from advflow.defenses.mine import MIDDetector, MineSettings

    mine = {k: v for k, v in c.settings["mine"].items() if k not in ("references", "train_size")}
    detector = MIDDetector(c.classifier, Reformer(c.autoencoders["ae_i"]), settings=MineSettings(**mine, seed=c.seed),
                           references=int(c.settings["mine"]["references"]))
    if "mid" in c.states:  # the scoring jobs: the state rule fit_mid saved
        detector.load_state_dict(c.states["mid"] or {})
    return detector


register(DetectorSpec("magnet_l1", 0.001, _reconstruction(1, "ae_ii"), autoencoder="ae_ii"))
register(DetectorSpec("magnet_l2", 0.001, _reconstruction(2, "ae_i"), autoencoder="ae_i"))
register(DetectorSpec("magnet_jsd_T10", 0.001, _jsd(10.0), autoencoder="ae_i"))
register(DetectorSpec("magnet_jsd_T40", 0.001, _jsd(40.0), autoencoder="ae_i"))
register(DetectorSpec("mid", 0.005, _mid, autoencoder="ae_i", state="mid"))
#: Seed 001's vote spread (1 − plurality share of K passes with dropout on), scored by rule dropout_vote.
register(DetectorSpec("dropout_vote", 0.005, None, scored_by="dropout_vote"))
