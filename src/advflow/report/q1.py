"""Q1: How are adversarial inputs crafted to trigger DNNs to misbehave? (paper, Fig. 3)

JSMA's crafting steps on the ``trajectories`` role's model (``study.trajectories``: good_init by default) are
recorded for the first ``trajectories.n`` seeds and each step's input is measured on that model. Table
``q1_trajectory.csv`` gives each step's IIP and OIP distance from step 0's (single inputs' paths, not aggregates);
the statistical case compares the last step's OIP shift with that of a random trajectory of as many steps
(``random_trajectory@{model}``), over the trajectories that end in a successful adversarial input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advflow.information import shifts
from advflow.workflow.catalog import ROLES, control_trajectory_set, trajectory_set
from advflow.workflow.io import open_h5
from advflow.information.paths import path_distance
from advflow.report.evidence import (INCONCLUSIVE, MIN_INPUTS, NO_INFORMATION, Case, Evidence, decided,
                                     no_information, premise)
from advflow.report import findings as fx
from advflow.report.findings import Finding, Row
from advflow.report.plotting import (LEGEND_SIZE, MARKERS, PANEL_LABELS, Figure, direction_arrows, integer_ticks,
                                     label_layers, new_figure, note_if_constant, palette, render, style)
from advflow.report.results import RunResults
from advflow.report.study import Study, role_text
from advflow.report.tables import TableSpec, Tables

KEY = "q1"
TITLE = "Q1: How are adversarial inputs crafted to trigger DNNs to misbehave?"
CLAIM = ("Q1: along JSMA's crafting steps the OIP moves away from the seed's further than along a random "
         "trajectory of the same length (last step vs step 0, trajectories that end in a successful adversarial "
         "input)")
#: The intervals each case's sentence quotes, the decisive difference first.
QUOTED = ("oip_minus_control", "oip_shift", "control_oip_shift", "iip_minus_control")
#: The role whose model Q1's trajectories are recorded on (:attr:`advflow.report.study.Study.trajectory_model`).
ROLE = "trajectories"
TABLES = {
    "q1_trajectory.csv": TableSpec(
        ("seed", "step", "input", "label", "prediction", "iip_deviation", "oip_deviation"),
        "Q1: distance of each JSMA crafting step's IIP and OIP from step 0's (single inputs on {trajectories})."),
}


def _natural(value: Any) -> int | str:
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(path_distance(torch.as_tensor(a), torch.as_tensor(b)))


def trajectory_rows(results: RunResults, model: str = ROLES[ROLE]) -> list[Row]:
    """For each trajectory seed and step on ``model`` (the trajectories role's), the IIP and OIP distance of that
    step's path from step 0's."""
    paths = results.input_paths(model, trajectory_set(model))
    where = results.files.paths(model, trajectory_set(model))
    if paths.seed is None or paths.step is None:
        raise ValueError(f"{where}: a trajectory paths CSV needs the columns seed and step")
    rows = []
    for seed in sorted(set(paths.seed.tolist()), key=_natural):
        mine = np.flatnonzero(paths.seed == seed)
        mine = mine[np.argsort(paths.step[mine], kind="stable")]
        start = mine[0]
        if paths.step[start] != 0:
            raise ValueError(f"{where}: seed {seed} has no step 0")
        for i in mine:
            rows.append({"seed": _natural(seed), "step": int(paths.step[i]), "input": int(paths.inputs[i]),
                         "label": int(paths.label[i]), "prediction": int(paths.prediction[i]),
                         "iip_deviation": _distance(paths.mu_s[i], paths.mu_s[start]),
                         "oip_deviation": _distance(paths.mu_t[i], paths.mu_t[start])})
    return rows


def add_tables(study: Study, results: RunResults, tables: Tables) -> None:
    model = study.trajectory_model
    if study.has_trajectories:
        tables.rows["q1_trajectory.csv"] = trajectory_rows(results, model)
    elif model is None:
        tables.note(KEY, f"skipped: the config records no JSMA trajectories: {study.role_missing(ROLE)}")
    else:
        tables.note(KEY, f"skipped: the config records no JSMA trajectories on {study.role_text(ROLE)} "
                         f"(attack_sets.{model} lacks jsma, or trajectories.n is 0)")


def setting(study: Study) -> str:
    """The question's setting as HTML, from the config."""
    if not study.has_trajectories:
        return ""
    return (f"JSMA ({study.attacks_text(['jsma'])}) on {study.role_text(ROLE)}; every intermediate input of the "
            f"first {study.trajectories} seeds is recorded and measured on {study.trajectory_model}. Deviation of "
            f"step i = distance of the single input's path from step 0's.")


def figures(study: Study, results: RunResults, tables: Tables, dpi: int) -> list[Figure]:
    """Fig. 3: per-step IIP, OIP, IOC of one seed (dark = step 0, light = the adversarial input; in the IOC,
    step 0's points numbered by layer and arrowheads towards the deeper layer on step 0 and the last step), and
    every seed's IIP and OIP deviation from step 0 against the step (one colour and marker per seed). A panel
    whose values are one constant says it carries no information."""
    if "q1_trajectory.csv" not in tables.rows:
        return []
    import seaborn as sns
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    rows = tables.rows["q1_trajectory.csv"]
    paths = results.input_paths(study.trajectory_model, study.trajectory_set)
    steps_of: dict[Any, int] = {}
    for row in rows:
        steps_of[row["seed"]] = max(steps_of.get(row["seed"], 0), int(row["step"]))
    order = {s: i for i, s in enumerate(steps_of)}
    shown = max(steps_of, key=lambda s: (steps_of[s], -order[s]))  # the longest trajectory, first on ties
    mine = np.flatnonzero(np.array([_natural(s) for s in paths.seed], dtype=object) == shown)
    mine = mine[np.argsort(paths.step[mine], kind="stable")]
    last = int(paths.step[mine[-1]])
    cmap = sns.color_palette("rocket", as_cmap=True)
    norm = Normalize(0, max(last, 1) / 0.85)  # the last step stays short of the colormap's near-white end
    with style():
        figure = new_figure(13.5, 7.0)
        grid = figure.add_gridspec(2, 6)
        top = [figure.add_subplot(grid[0, 2 * i:2 * i + 2]) for i in range(3)]
        bottom = [figure.add_subplot(grid[1, 0:3]), figure.add_subplot(grid[1, 3:6])]
        for ax, (name, xlabel, ylabel) in zip(top, PANEL_LABELS):
            ax.set_title(f"{name} of seed {shown} at each step")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        for i in mine:
            step = int(paths.step[i])
            color = "black" if step == 0 else cmap(norm(step))
            width = 2.0 if step in (0, last) else 1.0
            order = 3 if step in (0, last) else 2  # the seed and the final input above the steps between
            top[0].plot(paths.layers, paths.mu_s[i], color=color, lw=width, zorder=order)
            top[1].plot(paths.layers, paths.mu_t[i], color=color, lw=width, zorder=order)
            top[2].plot(paths.mu_s[i], paths.mu_t[i], color=color, lw=width, marker="o", ms=2.5, zorder=order)
        for i, color in ((mine[-1], cmap(norm(last))), (mine[0], "black")):
            direction_arrows(top[2], paths.mu_s[i], paths.mu_t[i], color)
        label_layers(top[2], paths.mu_s[mine[0]], paths.mu_t[mine[0]], np.asarray(paths.layers), "black")
        for ax in top[:2]:
            integer_ticks(ax)
        every = "at every layer for every step"
        note_if_constant(top[0], "IIP", [paths.mu_s[mine]], every)
        note_if_constant(top[1], "OIP", [paths.mu_t[mine]], every)
        for name, values in (("OIP", paths.mu_t[mine]), ("IIP", paths.mu_s[mine])):
            if note_if_constant(top[2], name, [values], every):
                break
        figure.colorbar(ScalarMappable(norm=Normalize(0, last), cmap=cmap), ax=top[2], label="step i")
        for n, (color, seed) in enumerate(zip(palette(len(steps_of)), steps_of)):
            mine_rows = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["step"])
            steps = [r["step"] for r in mine_rows]
            for ax, key in zip(bottom, ("iip_deviation", "oip_deviation")):
                ax.plot(steps, [r[key] for r in mine_rows], color=color, marker=MARKERS[n % len(MARKERS)],
                        ms=max(5.0 - 0.4 * n, 3.0), alpha=0.9, lw=2.0 if seed == shown else 1.2, label=f"seed {seed}")
        for ax, name in zip(bottom, ("IIP", "OIP")):
            ax.set_title(f"{name} deviation from step 0")
            ax.set_xlabel("step i")
            ax.set_ylabel(f"distance of {name}(x_i) from {name}(x_0)")
            integer_ticks(ax)
            note_if_constant(ax, f"{name} deviation", [np.array([r[f"{name.lower()}_deviation"] for r in rows])],
                             "at every step of every seed")
        bottom[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LEGEND_SIZE, frameon=False)
        image = render(figure, dpi)
    caption = (f"Q1 (cf. Fig. 3): JSMA crafting on {study.role_text(ROLE)}. Top: IIP, OIP and IOC of seed {shown} "
               f"at each of its {last + 1} steps (black: the seed, step 0; lighter: later steps, up to the final "
               f"input at step {last}; in the IOC, step 0's points are numbered by conv layer k, arrowheads point "
               f"towards deeper layers). Bottom: distance of each step's IIP and OIP from step 0's, for all "
               f"{len(steps_of)} recorded seeds.")
    return [Figure("q1_trajectory.png", image, caption)]


# ---------------------------------------------------------------------------------------------------------
# The finding: by statistics, and the paper's literal reading


def cases(study: Study, evidence: Evidence) -> list[Case]:
    return [trajectory_case(evidence, model=study.trajectory_model)] if study.has_trajectories else []


def trajectory_case(evidence: Evidence, *, model: str = ROLES[ROLE]) -> Case:
    """Q1: over the recorded JSMA trajectories that end in a successful adversarial input, the last step's OIP
    shift from step 0 exceeds that of the control trajectory (random pixels, same number of steps)."""
    jsma_set, control = trajectory_set(model), control_trajectory_set(model)
    with open_h5(Path(evidence.results.files.root) / "trajectories" / model / "jsma.h5") as h5:
        success = h5["success"][:].astype(bool)
    ends = {}
    for set_ in (jsma_set, control):
        paths = evidence.results.input_paths(model, set_)
        rows = {}
        for seed in np.unique(paths.seed):
            mine = np.flatnonzero(paths.seed == seed)
            mine = mine[np.argsort(paths.step[mine], kind="stable")]
            rows[int(float(seed))] = (mine[0], mine[-1])
        ends[set_] = (paths, rows)
    recorded = len(ends[jsma_set][1])
    qualifying = [s for s in sorted(ends[jsma_set][1]) if s < success.size and success[s]]
    case_name = f"JSMA trajectories on {model}"
    if len(qualifying) < MIN_INPUTS:
        case = premise("q1", case_name, len(qualifying), f"{len(qualifying)} of the {recorded} recorded trajectories "
                        f"end in a successful adversarial input; at least {MIN_INPUTS} are needed (raise "
                        f"trajectories.n)")
        case.numbers = {"recorded": recorded, "successful": len(qualifying)}
        return case
    if no_information(evidence, model, "oip"):
        return Case("q1", case_name, NO_INFORMATION, len(qualifying), notes=["the OIP carries no information"])
    scale = {p: evidence.scale(model, p) for p in ("oip", "iip")}
    deltas = {}
    for set_ in (jsma_set, control):
        paths, rows = ends[set_]
        for p in ("oip", "iip"):
            mu = evidence.mu(model, set_, p)
            first = np.array([rows[s][0] for s in qualifying])
            last = np.array([rows[s][1] for s in qualifying])
            deltas[(set_, p)] = shifts.standardized(mu[last], mu[first], scale[p])

    def statistics(i: np.ndarray) -> dict[str, float]:
        out = {}
        for p in ("oip", "iip"):
            a, c = shifts.shift(deltas[(jsma_set, p)][i]), shifts.shift(deltas[(control, p)][i])
            out.update({f"{p}_shift": a, f"control_{p}_shift": c, f"{p}_minus_control": a - c})
        return out

    case = Case("q1", case_name, INCONCLUSIVE, len(qualifying), evidence.bootstrap(statistics, len(qualifying)),
                numbers={"recorded": recorded, "successful": len(qualifying)})
    case.verdict = decided(case, ["oip_minus_control"])
    case.claims["iip_minus_control"] = shifts.decide(case.intervals["iip_minus_control"])
    return case


def literal(tables: Tables) -> Finding:
    return crafting_process(tables.rows.get("q1_trajectory.csv", []), model=tables.roles.get(ROLE))


def crafting_process(trajectory_rows: Iterable[Row], *, model: str | None = ROLES[ROLE]) -> Finding:
    """Q1 (Fig. 3): JSMA's crafting process gradually shifts the seed's IPs towards the adversarial ones.

    Rows of ``q1_trajectory.csv``: ``seed, step, iip_deviation, oip_deviation`` (deviation = distance
    of step i's path from step 0's). Per seed with at least two crafting steps, the OIP deviation at the
    last step must exceed that at step 1; over all rows, Spearman's rho of step against OIP deviation
    must be positive. ``model``: the trajectories role's, which the claim names.
    """
    rows = fx.checked_rows(trajectory_rows, "seed", "step", "iip_deviation", "oip_deviation")
    by_seed: dict[str, dict[int, Row]] = {}
    for row in rows:
        by_seed.setdefault(str(row["seed"]), {})[int(row["step"])] = row
    checked, grew, ties = [], [], 0
    for seed, steps in by_seed.items():
        last = max(steps)
        if last < 2 or 1 not in steps or not fx.finite(steps[1]["oip_deviation"], steps[last]["oip_deviation"]):
            continue
        first_dev, last_dev = float(steps[1]["oip_deviation"]), float(steps[last]["oip_deviation"])
        if first_dev == last_dev:
            ties += 1
            continue
        checked.append({"seed": seed, "last_step": last, "step1": first_dev, "last": last_dev})
        if last_dev > first_dev:
            grew.append(seed)
    finite = [r for r in rows if fx.finite(r["oip_deviation"], r["iip_deviation"])]
    rho_oip = fx.spearman([float(r["step"]) for r in finite], [float(r["oip_deviation"]) for r in finite])
    rho_iip = fx.spearman([float(r["step"]) for r in finite], [float(r["iip_deviation"]) for r in finite])
    phrase, part = fx.tally(len(grew), len(checked), "seed")
    numbers = {"seeds_grew": len(grew), "seeds_checked": len(checked), "seeds_tied": ties, "spearman_oip": rho_oip,
               "spearman_iip": rho_iip, "steps": len(finite), "per_seed": checked}
    claim = (f"Q1: along the crafting process (JSMA on {role_text(ROLE, model)}) the IPs deviate gradually from "
             f"the seed's (step 0)")
    if part is None:
        why = (f"the {ties} {fx.plural(ties, 'seed')} with two or more crafting steps end where step 1 is" if ties
               else "no seed has two or more crafting steps")
        return Finding(f"{claim}: cannot be checked: {why}.", None, numbers)
    trend = math.isfinite(rho_oip) and rho_oip > 0
    holds = bool(part and trend)
    cases = "; ".join(f"seed {c['seed']}: {fx.number(c['step1'])} at step 1, {fx.number(c['last'])} at step "
                      f"{c['last_step']}" for c in checked)
    overall = "holds" if holds else ("does not hold" if not grew and not trend else "holds only in part")
    text = (f"{claim}: {overall}. The OIP deviation at the last step exceeds that at step 1 — {phrase}"
            f"{' (' + cases + ')' if cases else ''}{fx.ties(ties, 'seed')}. Spearman's rho of step against deviation "
            f"over {len(finite)} steps of {len(by_seed)} {fx.plural(len(by_seed), 'seed')}: OIP {fx.number(rho_oip)}, "
            f"IIP {fx.number(rho_iip)}"
            f"{'' if trend else ' (not positive: the OIP does not drift away steadily)'}.")
    return Finding(text, holds, numbers)
