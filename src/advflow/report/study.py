"""What a config asks the report for: which sets exist and which model measures which set, decided as the
workflow decides it (``rules/common.smk``, :func:`advflow.workflow.catalog.measurements`), the study's roles (config
key ``study``: which model each question's role names, :func:`advflow.workflow.catalog.roles`), and the names the
questions share.

A question names its models by role, never by a model's name: Q1 records JSMA's crafting on the ``trajectories``
role's model, Q2 attacks ``base``, Q3 compares ``base`` with ``compressed``, Q4 attacks ``distilled``, Q5's
transferability table takes ``ensemble``'s sets. Any role may name a model of the user's (``my_resnet``); one whose
model is not under ``models`` (or that is null) is None, and its questions say they are skipped, naming the role
and its config key (:meth:`Study.role_missing`). Texts name a role's model with :func:`role_text`: its plain name
when it is the role's default (as the paper's text and every report before the roles read), else the role and the
name ("the base model my_resnet"); a text written once for every study (a question's ``CLAIM``, a table's caption)
holds ``{role}`` placeholders, filled per study by :func:`fill`.
"""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from advflow.workflow import catalog
from advflow.workflow.catalog import MODELS, ROLES, measurements, q5_attacks, q5_group, trajectories_wanted
from advflow.config import ConfigError, attack_settings, with_defaults

#: The normal profile the adversarial sets are compared with (the clean attack seeds).
NORMAL = "normal_test"
#: N random training inputs: the paper's normal profile, shown as a baseline.
NORMAL_TRAIN = "normal_train"
#: How a sentence calls each role's model (after "the"; the model's name follows unless it is the role's default).
ROLE_WORDS = {"base": "base model", "compressed": "compressed model", "distilled": "distilled model",
              "ensemble": "ensemble", "trajectories": "trajectory model"}

_PLACEHOLDER = re.compile(r"\{(\+?)(" + "|".join(map(re.escape, ROLES)) + r")\}")


def role_words(role: str) -> str:
    """The words for ``role``'s model (:data:`ROLE_WORDS`), "base model"."""
    return ROLE_WORDS.get(role, f"{role} model")


def role_text(role: str, model: str | None) -> str:
    """How a sentence names ``model`` in ``role``: its plain name when it is the role's default model
    (``good_init``), else "the base model my_resnet"; "the base model" when the role has no model."""
    if model is None:
        return f"the {role_words(role)}"
    return model if model == ROLES.get(role) else f"the {role_words(role)} {model}"


def role_suffix(role: str, model: str | None) -> str:
    """What follows words that already say the role ("the distilled model"): "" for the role's default model (or
    none), else " my_distilled"."""
    return "" if model is None or model == ROLES.get(role) else f" {model}"


def fill(template: str, roles: Mapping[str, str | None] | None = None) -> str:
    """``template`` with each ``{role}`` replaced by :func:`role_text` of that role's model and each ``{+role}`` by
    :func:`role_suffix` (after words that name the role: "the distilled model{+distilled}"); ``roles`` default to
    :data:`advflow.workflow.catalog.ROLES`, which give the text as it read before the roles."""
    roles = ROLES if roles is None else roles
    return _PLACEHOLDER.sub(lambda m: (role_suffix if m.group(1) else role_text)(m.group(2), roles.get(m.group(2))),
                            template)


def fill_names(template: str, roles: Mapping[str, str | None] | None = None) -> str:
    """``template`` with each ``{role}`` replaced by that role's model's plain name (the role's name when it has
    none): for names built from a model's (``oip_gap_{base}`` -> ``oip_gap_my_resnet``) and terse words."""
    roles = ROLES if roles is None else roles
    return _PLACEHOLDER.sub(lambda m: roles.get(m.group(2)) or m.group(2), template)


def model_order(model: str, configured: Sequence[str] = ()) -> tuple[int, int, str]:
    """A model's place in every table (a sort key): advflow's models in the catalog's order
    (:data:`advflow.workflow.catalog.MODELS`), then the user's in ``configured``'s order (the config's ``models``),
    then any other by name."""
    if model in MODELS:
        return 0, MODELS.index(model), ""
    configured = list(configured)
    if model in configured:
        return 1, configured.index(model), ""
    return 2, 0, model


@dataclass(frozen=True)
class Study:
    """The experiments a config asks for: its dataset, seed, N, models (advflow's in catalog order, then the
    user's in the config's), the attacks on each target, the transfer groups, the number of recorded JSMA
    trajectories, and the study's roles (``{role: model or None}``, :func:`advflow.workflow.catalog.roles`)."""

    dataset: str
    seed: int
    n: int | None
    models: tuple[str, ...]
    attack_sets: dict[str, tuple[str, ...]]
    transfer_groups: tuple[tuple[str, ...], ...]
    trajectories: int
    config: Mapping[str, Any] = field(repr=False)
    #: ``{role: model}`` (None: the role's model is not under ``models``); from the config when not given.
    roles: Mapping[str, str | None] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.roles is None:
            object.__setattr__(self, "roles", catalog.roles(dict(self.config)))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Study:
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a mapping; got {type(config).__name__}")
        for key in ("dataset", "models"):
            if key not in config:
                raise ConfigError(f"config is missing the key '{key}'; the report needs it")
        configured = list(config["models"] or {})
        attack_sets = {str(t): tuple(a) for t, a in sorted((config.get("attack_sets") or {}).items(),
                                                           key=lambda item: model_order(item[0], configured)) if a}
        groups = tuple(tuple(g) for g in config.get("transfer_groups") or [])
        filled = with_defaults(config)  # the counts the workflow ran, the schema's where the config is silent
        n = filled["inputs"]["n"]
        trajectories = int(filled["trajectories"]["n"] or 0)
        # advflow's models in the catalog's order, then the user's in the config's, however the config lists them
        models = tuple(sorted(configured, key=lambda m: model_order(m, configured)))
        return cls(str(config["dataset"]), int(config.get("seed", 0) or 0), None if n is None else int(n), models,
                   attack_sets, groups, trajectories, config, catalog.roles(dict(config)))

    # --- the roles ----------------------------------------------------------------------------------------------

    def role(self, role: str) -> str | None:
        """The model of ``role`` (``base``, ``compressed``, ``distilled``, ``ensemble``, ``trajectories``), or None
        when the config gives it none under ``models``; ValueError for an unknown role."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
        return self.roles.get(role)

    def chosen(self, role: str) -> str | None:
        """The name the config gives ``role`` (``study.<role>``, else the default), under ``models`` or not; None
        when ``study.<role>`` is null."""
        self.role(role)
        return catalog.chosen_roles(dict(self.config))[role]

    def role_text(self, role: str) -> str:
        """``role``'s model as a sentence names it (:func:`role_text`): "good_init", "the base model my_resnet"."""
        return role_text(role, self.role(role))

    def role_suffix(self, role: str) -> str:
        """" my_distilled" after words that say the role, "" for the role's default model (:func:`role_suffix`)."""
        return role_suffix(role, self.role(role))

    def fill(self, template: str) -> str:
        """``template``'s ``{role}`` / ``{+role}`` placeholders filled with this study's models (:func:`fill`)."""
        return fill(template, self.roles)

    def role_missing(self, role: str) -> str:
        """Why ``role`` has no model, naming the config key that sets it ("" when it has one)."""
        if self.role(role) is not None:
            return ""
        chosen = self.chosen(role)
        if chosen is None:
            return f"no model has the {role} role (study.{role} is null)"
        return f"{chosen}, the {role} role's model (study.{role}), is not under models"

    def role_note(self, role: str) -> str:
        """A parenthesis that says which role a model named by its config key plays, for a model other than the
        role's default (" (my_resnet is the base model: study.base)"); "" for the default or no model."""
        model = self.role(role)
        if model is None or model == ROLES[role]:
            return ""
        return f" ({model} is the {role_words(role)}: study.{role})"

    @property
    def trajectory_model(self) -> str | None:
        """Q1's model: the ``trajectories`` role's, on which JSMA's crafting steps are recorded and measured."""
        return self.role("trajectories")

    @property
    def trajectory_set(self) -> str | None:
        """Q1's set of JSMA's crafting steps, ``trajectory@{trajectories role's model}``; None without the role."""
        model = self.trajectory_model
        return None if model is None else catalog.trajectory_set(model)

    def model_order(self, model: str) -> tuple[int, int, str]:
        """``model``'s place in every table (:func:`model_order` with this config's models)."""
        return model_order(model, self.models)

    # ------------------------------------------------------------------------------------------------------------

    def attacks_on(self, target: str | None) -> tuple[str, ...]:
        return self.attack_sets.get(target, ()) if target is not None else ()

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
        return set(measurements(*self._lists, self.trajectories, self.trajectory_model))

    @property
    def has_trajectories(self) -> bool:
        """Whether Q1's JSMA trajectories are recorded (on the ``trajectories`` role's model)."""
        return trajectories_wanted(self._lists[0], self.trajectories, self.trajectory_model)

    @property
    def q3_models(self) -> tuple[str, str] | tuple[()]:
        """Q3's pair: the ``base`` role's model and the ``compressed`` role's; () when either role has none."""
        original, compressed = self.role("base"), self.role("compressed")
        return () if original is None or compressed is None else (original, compressed)

    @property
    def q3_attacks(self) -> tuple[str, ...]:
        """Q3's attacks: those crafted on both the base and the compressed role's models (the base's order)."""
        if not self.q3_models:
            return ()
        original, compressed = self.q3_models
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
