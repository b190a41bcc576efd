"""Every detector the defense stage knows, one :class:`DetectorSpec` each (docs/method.md, "Defenses and detectors").

The registry is the one home of a detector's facts: its name, what it needs (an autoencoder of MagNet's, a saved
fitted state), which rule scores it, its default false-positive rate and how it is built. The config check, the
schema's names, the scoring jobs and the defense tables read them from here; an unknown name is refused when the
config is checked and again when a detector is built.

Adding a detector is one :func:`register` call below plus its module, which implements
:class:`advflow.defenses.Detector` (``fit`` on clean data only, ``score`` higher for more suspicious inputs).
``build`` loads that module with :func:`importlib.import_module` when it builds, so this file stays light enough for
the Snakefile to read while Snakemake parses it, and a rule's code digest (which follows import statements) takes in a
detector's module only where the rule's script imports it: the scoring jobs and rule fit_detector import every
detector module (``workflow_scripts/defense_scores.py``, ``fit_detector.py``), while the rules that only read the
registry's names (the attacks, the autoencoders, the tables) do not rerun when a detector's code changes.
"""

from __future__ import annotations

import importlib
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
    #: Fitted on clean training images by rule ``fit_detector`` (its state saved as ``detectors/{name}.pt``), with
    #: the settings block ``defense.{name}`` (these defaults, ``train_size`` included: how many training images).
    fitted: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)
    labels: bool = False  # its fit takes the training images' labels too (Mahalanobis' class means)

    def __post_init__(self) -> None:
        if not 0 < self.fpr < 1 or self.scored_by not in SCORING_RULES:
            raise ValueError(f"detector {self.name!r}: fpr in (0, 1) and scored_by one of {SCORING_RULES}")
        if (self.build is None) != (self.scored_by != "defense_scores"):
            raise ValueError(f"detector {self.name!r}: the scoring jobs build it (build given) or its own rule scores it")
        if self.fitted and (self.state != self.name or "train_size" not in self.defaults):
            raise ValueError(f"detector {self.name!r}: a detector fitted by rule fit_detector keeps its state under "
                             f"its own name and has a train_size default")


DETECTORS: Registry[DetectorSpec] = Registry("detector")
register = DETECTORS.register  # add a DetectorSpec (a name may be registered once)
names = DETECTORS.names
get = DETECTORS.lookup  # the detector called ``name``; an unknown name is a ValueError listing the known ones


def scored_by_scores_rule() -> tuple[str, ...]:
    """The detectors the scoring jobs build and score (the others have a rule of their own)."""
    return tuple(n for n, s in DETECTORS.items() if s.scored_by == "defense_scores")


def default_fprs() -> dict[str, float]:
    return {n: s.fpr for n, s in DETECTORS.items()}


def fitted_by_rule() -> tuple[str, ...]:
    """The detectors rule ``fit_detector`` fits on clean training images (MID has its own rule, fit_mid)."""
    return tuple(n for n, s in DETECTORS.items() if s.fitted)


def with_state() -> tuple[str, ...]:
    """The detectors the scoring jobs load a saved state for (``detectors/{name}.pt``)."""
    return tuple(n for n, s in DETECTORS.items() if s.state)


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

def _module(name: str) -> Any:
    """``advflow.defenses.{name}``, loaded when a detector is built (the module docstring says why not imported)."""
    return importlib.import_module(f"advflow.defenses.{name}")


def _reconstruction(p: int, autoencoder: str) -> Callable[[Built], Any]:
    def make(c: Built) -> Any:
        return _module("magnet").ReconstructionDetector(c.autoencoders[autoencoder], p)

    return make


def _jsd(temperature: float) -> Callable[[Built], Any]:
    def make(c: Built) -> Any:
        return _module("magnet").JSDDetector(c.autoencoders["ae_i"], c.classifier, temperature)

    return make


def _mid(c: Built) -> Any:
    magnet, mine_module = _module("magnet"), _module("mine")
    mine = {k: v for k, v in c.settings["mine"].items() if k not in ("references", "train_size")}
    detector = mine_module.MIDDetector(c.classifier, magnet.Reformer(c.autoencoders["ae_i"]),
                                       settings=mine_module.MineSettings(**mine, seed=c.seed),
                                       references=int(c.settings["mine"]["references"]))
    if "mid" in c.states:  # the scoring jobs: the state rule fit_mid saved
        detector.load_state_dict(c.states["mid"] or {})
    return detector


def _loaded(detector: Any, c: Built) -> Any:
    """The detector with the state its fit rule saved, where the scoring jobs pass one (not while it is fitted)."""
    if c.states.get(detector.name):
        detector.load_state_dict(c.states[detector.name])
    return detector


# Our information-path detector and the published baselines (Lee et al. 2018; Ma et al. 2018), each fitted on clean
# training images only (unsupervised: layers combined on the clean scale); docs/method.md, "Defenses and detectors".

def _infopath(c: Built) -> Any:
    return _loaded(_module("infopath").InfoPathDetector(c.classifier, buckets=int(c.settings["infopath"]["buckets"])),
                   c)


def _mahalanobis(c: Built) -> Any:
    return _loaded(_module("mahalanobis").MahalanobisDetector(c.classifier), c)


def _lid(c: Built) -> Any:
    block = c.settings["lid"]
    return _loaded(_module("lid").LIDDetector(c.classifier, k=int(block["k"]), references=int(block["references"]),
                                              seed=c.seed), c)


register(DetectorSpec("magnet_l1", 0.001, _reconstruction(1, "ae_ii"), autoencoder="ae_ii"))
register(DetectorSpec("magnet_l2", 0.001, _reconstruction(2, "ae_i"), autoencoder="ae_i"))
register(DetectorSpec("magnet_jsd_T10", 0.001, _jsd(10.0), autoencoder="ae_i"))
register(DetectorSpec("magnet_jsd_T40", 0.001, _jsd(40.0), autoencoder="ae_i"))
register(DetectorSpec("mid", 0.005, _mid, autoencoder="ae_i", state="mid"))
#: Seed 001's vote spread (1 − plurality share of K passes with dropout on), scored by rule dropout_vote.
register(DetectorSpec("dropout_vote", 0.005, None, scored_by="dropout_vote"))
register(DetectorSpec("infopath", 0.005, _infopath, state="infopath", fitted=True,
                      defaults={"train_size": 1000, "buckets": 8}))
register(DetectorSpec("mahalanobis", 0.005, _mahalanobis, state="mahalanobis", fitted=True, labels=True,
                      defaults={"train_size": 2000}))
register(DetectorSpec("lid", 0.005, _lid, state="lid", fitted=True, defaults={"train_size": 1000, "k": 20,
                                                                               "references": 100}))
