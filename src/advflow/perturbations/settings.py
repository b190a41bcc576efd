"""The settings of seed 001's perturbation statistics and average-adversarial grid (the config's top-level
``perturbations`` block; rules/perturbations.smk), checked: a bad key or value is a ConfigError naming it."""

from __future__ import annotations

import copy
import math
from typing import Any

from advflow.workflow.errors import ConfigError


#: Seed 001's perturbation statistics and average-adversarial grid (top-level ``perturbations`` block).
PERTURBATION_DEFAULTS: dict[str, Any] = {
    "model": "good_init",
    "grid": {"m": 20, "epsilon": 4.0, "steps": 20, "rel_stepsize": 0.1},
    "pair": None,
}


def perturbation_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """The run's ``perturbations`` block over :data:`PERTURBATION_DEFAULTS`, checked; None when absent (seed 001's
    statistics and grid do not run)."""
    block = config.get("perturbations")
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ConfigError(f"perturbations: must be a mapping of settings; got {block!r}")
    settings = copy.deepcopy(PERTURBATION_DEFAULTS)
    for key, value in block.items():
        if key not in settings:
            raise ConfigError(f"perturbations.{key}: unknown key; allowed: {', '.join(settings)}")
        if key == "grid":
            unknown = sorted(set(value or {}) - set(settings["grid"]))
            if unknown:
                raise ConfigError(f"perturbations.grid.{unknown[0]}: unknown key; allowed: "
                                  f"{', '.join(settings['grid'])}")
            settings["grid"].update(value or {})
        else:
            settings[key] = value
    if settings["model"] not in (config.get("models") or {}) or settings["model"] == "ensemble":
        raise ConfigError(f"perturbations.model: {settings['model']!r} is not among the config's models (the "
                          f"ensemble has no gradient of its own); allowed: "
                          f"{', '.join(m for m in (config.get('models') or {}) if m != 'ensemble')}")
    grid = settings["grid"]
    for key in ("m", "steps"):
        if isinstance(grid[key], bool) or not isinstance(grid[key], int) or grid[key] < 1:
            raise ConfigError(f"perturbations.grid.{key}: must be a positive integer; got {grid[key]!r}")
    for key in ("epsilon", "rel_stepsize"):
        value = grid[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ConfigError(f"perturbations.grid.{key}: must be a positive finite number; got {value!r}")
    pair = settings["pair"]
    if pair is not None and not (isinstance(pair, list) and len(pair) == 2 and all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in pair) and pair[0] != pair[1]):
        raise ConfigError(f"perturbations.pair: two different class indices [i, j] (original, adversarial) or null "
                          f"(the pair the grid reaches most often); got {pair!r}")
    return settings
