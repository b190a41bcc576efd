"""What a config asks the report for: which sets exist and which model measures which set, decided as the
workflow decides it (``rules/common.smk``, :func:`advflow.workflow.catalog.measurements`), and the names the questions
share."""

from __future__ import annotations

import functools
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from advflow.workflow.catalog import MODELS, measurements, q5_attacks, q5_group, trajectories_wanted, trajectory_set
from advflow.config import ConfigError, attack_settings, with_defaults

#: The normal profile the adversarial sets are compared with (the clean attack seeds).
NORMAL = "normal_test"
#: N random training inputs: the paper's normal profile, shown as a baseline.
NORMAL_TRAIN = "normal_train"
#: Q1's per-step paths of JSMA crafting trajectories on good_init.
TRAJECTORY = trajectory_set("good_init")


def model_order(model: str) -> int:
    """A model's place in the catalog (:data:`advflow.workflow.catalog.MODELS`): the order of every table."""
    return MODELS.index(model) if model in MODELS else len(MODELS)


@dataclass(frozen=True)
class Study:
    """The experiments a config asks for: its dataset, seed, N, models (catalog order), the attacks on each
    target, the transfer groups and the number of recorded JSMA trajectories."""

    dataset: str
    seed: int
    n: int | None
    models: tuple[str, ...]
    attack_sets: dict[str, tuple[str, ...]]
    transfer_groups: tuple[tuple[str, ...], ...]
    trajectories: int
    config: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Study:
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a mapping; got {type(config).__name__}")
        for key in ("dataset", "models"):
            if key not in config:
                raise ConfigError(f"config is missing the key '{key}'; the report needs it")
        attack_sets = {str(t): tuple(a) for t, a in sorted((config.get("attack_sets") or {}).items(),
                                                           key=lambda item: model_order(item[0])) if a}
        groups = tuple(tuple(g) for g in config.get("transfer_groups") or [])
        filled = with_defaults(config)  # the counts the workflow ran, the schema's where the config is silent
        n = filled["inputs"]["n"]
        trajectories = int(filled["trajectories"]["n"] or 0)
        models = tuple(sorted(config["models"], key=model_order))  # the catalog's order, however the config is
        return cls(str(config["dataset"]), int(config.get("seed", 0) or 0), None if n is None else int(n), models,
                   attack_sets, groups, trajectories, config)

    def attacks_on(self, target: str) -> tuple[str, ...]:
        return self.attack_sets.get(target, ())

    @functools.cached_property
    def settings(self) -> dict[str, Any]:
        """The config with the schema's defaults where it leaves a key out (:func:`advflow.config.with_defaults`),
        as the workflow ran it."""
        return with_defaults(self.config)

    @property
    def bias_corrected(self) -> bool:
        """Whether the run's paths have the MI of position-shuffled maps subtracted (``mi.bias_correction``)."""
        return bool(self.settings["mi"]["bias_correction"])

    @property
    def resamples(self) -> int:
        """Resamples of every bootstrap interval (``report.bootstrap_resamples``)."""
        return int(self.settings["report"]["bootstrap_resamples"])

    @property
    def dpi(self) -> int:
        """Figure resolution, PNG (``report.dpi``)."""
        return int(self.settings["report"]["dpi"])

    def measured(self, model: str, set_: str) -> bool:
        """Whether the workflow measures ``set_`` on ``model`` (and so wrote its paths and aggregate)."""
        return (model, set_) in self._measurements

    def measuring_models(self) -> set[str]:
        return {model for model, _ in self._measurements}

    @property
    def _lists(self) -> tuple[dict[str, list[str]], list[list[str]]]:
        return {t: list(a) for t, a in self.attack_sets.items()}, [list(g) for g in self.transfer_groups]

    @functools.cached_property
    def _measurements(self) -> set[tuple[str, str]]:
        return set(measurements(*self._lists, self.trajectories))

    @property
    def has_trajectories(self) -> bool:
        return trajectories_wanted(self._lists[0], self.trajectories)

    @property
    def q3_attacks(self) -> tuple[str, ...]:
        """Q3's attacks: those crafted on both good_init and compressed (good_init's order)."""
        original, compressed = "good_init", "compressed"
        if not (self.attacks_on(original) and self.attacks_on(compressed)):
            return ()
        return tuple(a for a in self.attacks_on(original) if a in self.attacks_on(compressed))

    @property
    def q5_group(self) -> tuple[str, ...]:
        """Q5's models: the first transfer group of three or more attacked models (the ensemble aside)."""
        return q5_group(*self._lists)

    @property
    def q5_attacks(self) -> tuple[str, ...]:
        """Q5's attacks: those crafted on every model of the Q5 group."""
        return q5_attacks(*self._lists)

    def attacks_text(self, attacks: Sequence[str]) -> str:
        """Each attack with its settings, as HTML: ``<b>fgsm</b> (epsilon = 0.2); ...``."""
        parts = []
        for attack in attacks:
            try:
                settings = attack_settings(dict(self.config), attack)
            except ConfigError:
                settings = {}
            described = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}" for k, v in settings.items())
            parts.append(f"<b>{html.escape(attack)}</b> ({html.escape(described)})" if described else
                         f"<b>{html.escape(attack)}</b>")
        return "; ".join(parts)

    @property
    def n_text(self) -> str:
        return "N = " + (str(self.n) if self.n is not None else "?")
