"""The defense stage's adaptive attacks (docs/method.md, "Defenses and detectors", "Adaptive attacks"): per target (the
undefended classifier, the whole defense, each judged detector alone) and per budget, a white-box attack that knows
it (:mod:`advflow.defenses.adaptive`), on the first ``defense.adaptive.n`` defense seeds, the seeds of the transfer
sweeps. Files under ``results/{dataset}/defense/adaptive/``:

=======================================  ================================================================
``{target}/{set}.h5``                     ``adversarial`` (model space), ``labels``, ``indices`` (into the defense seeds),
                                          ``success``, ``fooled``, ``prediction``, ``margin``, ``flagged``; per guard
                                          ``scores/{guard}``, ``surrogate/{guard}`` and on the clean seeds
                                          ``clean_scores/{guard}``, ``clean_surrogate/{guard}``; attrs: the attack's
                                          settings, the guards' thresholds and surrogates, the system
``tables/adaptive.csv``                   per target, attack and budget: success, defended accuracy and detection
                                          with Wilson intervals, beside the transfer attack's defended accuracy on the
                                          same seeds
``tables/adaptive_guards.csv``            per target, attack, budget and guard: its detection rate (TPR at its
                                          threshold) under the attack
``tables/adaptive_checks.csv``            per target and attack: the sanity checks (undefended success at the largest
                                          budget, convergence with longer attacks, the gradient-masking flag)
``tables/adaptive_surrogates.csv``        per guard: its surrogate's correlation with its real score, clean and
                                          adversarial
``figures/adaptive_{target}.png``         defended accuracy against the budget, transfer and adaptive
=======================================  ================================================================
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advflow.defenses import adaptive, metrics
from advflow.defenses.settings import adaptive_guards_of as guards_of
from advflow.defenses.settings import adaptive_reformer as has_reformer
from advflow.defenses.settings import adaptive_sets, judged

log = logging.getLogger("advflow.defenses")

#: Said in every row: who the attacker is.
THREAT = "adaptive (white-box: knows the classifier, the reformer, every guard and its threshold)"


def _seed(*parts: Any) -> int:
    return int(zlib.crc32(":".join(map(str, parts)).encode()))


def build_system(target: str, classifier: torch.nn.Module, detectors: Mapping[str, Any], limits: Mapping[str, float],
                 validation: torch.Tensor, validation_scores: Mapping[str, np.ndarray], settings: Mapping[str, Any], *,
                 reformer: Any = None, seed: int = 0, fresh_seed: int = 1) -> adaptive.DefendedSystem:
    """The defended system ``target`` attacks: the classifier, the reformer (the defense, when it has one) and its
    guards at the stage's thresholds ``limits`` (the clean validation quantiles). A guard's loss term uses its
    differentiable score against the same quantile of that score on ``validation`` (for an exact score, the same
    threshold; for a surrogate, its own), scaled by the validation scores' interquartile range
    (:func:`advflow.defenses.adaptive.guard`)."""
    from advflow.defenses.dropout import DropoutVote

    block = settings["adaptive"]
    guards, vote, vote_limit = {}, None, None
    for name in guards_of(target, settings):
        if name == "dropout_vote":
            own = settings["dropout_vote"]
            vote = DropoutVote(classifier, int(own["k"]), own["rate"], seed=_seed(seed, "adaptive vote", target))
            vote_limit = float(limits[name])
            continue
        guards[name] = adaptive.guard(detectors[name], validation, settings["fpr"][name],
                                      scores=validation_scores[name])
        if guards[name].threshold != float(limits[name]):  # the same quantile of the same scores
            raise RuntimeError(f"{name}: the guard's threshold {guards[name].threshold} is not the stage's "
                               f"{limits[name]}; the validation scores are not those of this detector")
    return adaptive.DefendedSystem(classifier, reformer=reformer if has_reformer(target, settings) else None,
                                   guards=guards, vote=vote, vote_threshold=vote_limit, eot=int(block["eot"]),
                                   fresh_seed=fresh_seed)


def run_attack(system: adaptive.DefendedSystem, attack: str, strength: float, longer: bool, x: torch.Tensor,
               labels: torch.Tensor, block: Mapping[str, Any], *, seed: int) -> adaptive.AttackResult:
    """One adaptive set: PGD at ε = ``strength`` or C&W-L2 at κ = ``strength``, with the block's settings (``longer``:
    ``block["longer"]``× the steps, and PGD's restarts, at a step size shrunk by the same factor for PGD)."""
    factor = int(block["longer"]) if longer else 1
    if attack == "pgd":
        own = block["pgd"]
        return adaptive.pgd(system, x, labels, epsilon=float(strength), steps=int(own["steps"]) * factor,
                            rel_stepsize=float(own["rel_stepsize"]) / factor if longer else float(own["rel_stepsize"]),
                            restarts=int(own["restarts"]) * factor, seed=seed, check_every=int(block["check_every"]))
    own = block["cw"]
    return adaptive.cw_l2(system, x, labels, kappa=float(strength), steps=int(own["steps"]) * factor,
                          stepsize=float(own["stepsize"]), binary_search_steps=int(own["binary_search_steps"]),
                          c=float(own["c"]), seed=seed, check_every=int(block["check_every"]))


def craft_adaptive_set(target: str, name: str, classifier_path: str | Path, seeds_path: str | Path,
                       validation_path: str | Path, validation_csv: str | Path, settings: dict[str, Any], *,
                       autoencoders: Mapping[str, str | Path], states: Mapping[str, str | Path], seed: int,
                       device: torch.device, out: str | Path) -> dict:
    """Rule ``adaptive_attack``: the adaptive set ``name`` (:func:`advflow.defenses.settings.adaptive_sets`) against
    ``target``, written to ``out`` (module docstring); returns its summary."""
    import h5py

    from advflow.attacks.sets import _model_space
    from advflow.defenses.magnet import Reformer, load_autoencoder
    from advflow.defenses.stage import build_detectors, load_detector_state
    from advflow.defenses.dropout import DropoutVote
    from advflow.models.architectures import load_checkpoint
    from advflow.workflow.io import atomic_path, open_h5

    block = settings["adaptive"]
    attack, strength, longer = adaptive_sets(settings)[name]
    classifier = load_checkpoint(classifier_path, device).eval()
    names = guards_of(target, settings)
    aes = {k: load_autoencoder(v, device) for k, v in autoencoders.items()}
    scored = [d for d in names if d != "dropout_vote"]
    loaded = {d: load_detector_state(d, states[d]) for d in scored if d in states}
    detectors = build_detectors(scored, classifier, aes, loaded, settings, seed=seed)
    validation_table = metrics.read_scores(validation_csv)
    with open_h5(validation_path) as h5:
        validation = _model_space(h5["images"][:]).to(device)
    if "dropout_vote" in names:
        # The vote's spread on the validation images as rule dropout_vote computes it (advflow.defenses.vote: its votes
        # seeded by the run's seed and the set's name), so that this job does not wait for the vote of every set.
        own = settings["dropout_vote"]
        vote = DropoutVote(classifier, int(own["k"]), own["rate"], seed=int(zlib.crc32(f"{seed}:validation".encode())))
        validation_table = metrics.check_table({**validation_table, "score_dropout_vote": vote.score(validation)},
                                               where="validation with the dropout vote")
    limits = metrics.thresholds(validation_table, {d: settings["fpr"][d] for d in names})
    with open_h5(seeds_path) as h5:
        count = int(block["n"])
        x = _model_space(h5["images"][:count]).to(device)
        labels = torch.as_tensor(h5["labels"][:count].astype(np.int64), device=device)
    reformer = Reformer(aes["ae_i"]) if "ae_i" in aes else None
    system = build_system(target, classifier, detectors, limits, validation,
                          {d: metrics._scores_of(validation_table, d) for d in names}, settings, reformer=reformer,
                          seed=seed, fresh_seed=_seed(seed, "fresh masks", target, name))
    log.info("adaptive %s against %s: %s", name, target, system.describe())
    result = run_attack(system, attack, strength, longer, x, labels, block, seed=_seed(seed, target, name))
    clean = system.evaluate(x, labels)
    clean_surrogate = {g: v for g, v in adaptive.surrogates(system, x).items()}
    outcome = result.outcome
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        h5["adversarial"] = result.adversarial.cpu().numpy().astype(np.float32)
        h5["labels"] = labels.cpu().numpy()
        h5["indices"] = np.arange(count)
        for key, value in (("success", outcome.success), ("fooled", outcome.fooled), ("flagged", outcome.flagged),
                           ("prediction", outcome.prediction), ("margin", outcome.margin)):
            h5[key] = np.asarray(value)
        for group, values in (("scores", outcome.scores), ("surrogate", result.surrogate),
                              ("clean_scores", clean.scores), ("clean_surrogate", clean_surrogate)):
            for guard, column in values.items():
                h5[f"{group}/{guard}"] = np.asarray(column, np.float64)
        h5.attrs.update({"target": target, "attack": attack, "strength": float(strength), "longer": bool(longer),
                         "system": system.describe(), "settings": json.dumps(result.settings),
                         "thresholds": json.dumps({g: float(limits[g]) for g in names}),
                         "surrogates": json.dumps({g: system.guards[g].detector.adaptive_surrogate
                                                   if g in system.guards else "EOT over dropout masks"
                                                   for g in names})})
    summary = {"target": target, "set": name, "n": count, "success": int(outcome.success.sum()),
               "fooled": int(outcome.fooled.sum()), "flagged": int(outcome.flagged.sum())}
    log.info("adaptive %s against %s: success %d / %d (fooled %d, flagged %d)", name, target, summary["success"],
             count, summary["fooled"], summary["flagged"])
    return summary


# ---------------------------------------------------------------------------------------------------------
# Tables and figures

ADAPTIVE_COLUMNS = ("target", "guards", "reformer", "threat", "attack", "strength", "longer", "n", "success",
                    "success_low", "success_high", "defended_accuracy", "defended_accuracy_low",
                    "defended_accuracy_high", "detection", "detection_low", "detection_high",
                    "transfer_defended_accuracy", "transfer_defended_accuracy_low", "transfer_defended_accuracy_high",
                    "transfer_detection", "undefended_success", "masking")
GUARD_COLUMNS = ("target", "guard", "fitting", "threat", "surrogate", "threshold", "attack", "strength", "longer", "n", "detection",
                 "detection_low", "detection_high", "transfer_detection", "transfer_detection_low",
                 "transfer_detection_high")
CHECK_COLUMNS = ("target", "attack", "strength", "n", "undefended_success", "undefended_success_low",
                 "undefended_success_high", "undefended_reaches_all", "success", "longer_success", "gained",
                 "convergence", "masking")
SURROGATE_COLUMNS = ("target", "guard", "surrogate", "inputs", "n", "pearson", "spearman")
#: What the masking column says when :func:`advflow.defenses.adaptive.masking_flag` fires.
MASKING = "possible gradient masking or optimisation failure (not robustness)"
UNITS = {"pgd": "ε", "cw": "κ"}
TRANSFER_ATTACK = {"pgd": "pgd", "cw": "cw"}


def read_adaptive_set(path: str | Path) -> dict[str, Any]:
    """An adaptive set file (:func:`craft_adaptive_set`) as arrays and attributes; a damaged file is moved aside."""
    from advflow.workflow.io import check_h5, open_h5

    with open_h5(path) as h5:
        n = int(h5["labels"].shape[0])
        check_h5(h5, path, datasets={k: (n,) for k in ("success", "fooled", "flagged", "labels")})
        out = {key: h5[key][()] for key in ("success", "fooled", "flagged", "labels", "indices", "margin")}
        for group in ("scores", "surrogate", "clean_scores", "clean_surrogate"):
            out[group] = {k: h5[group][k][()] for k in h5.get(group, {})}
        out.update({key: h5.attrs[key] for key in ("target", "attack", "strength", "longer", "system")})
        out["strength"], out["longer"] = float(out["strength"]), bool(out["longer"])
        out["thresholds"] = json.loads(h5.attrs["thresholds"])
        out["surrogates"] = json.loads(h5.attrs["surrogates"])
    return out


def transfer_outcome(table: metrics.ScoreTable, target: str, settings: Mapping[str, Any], limits: Mapping[str, float],
                     n: int, vote_plurality: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The transfer set's outcome on the first ``n`` seeds as ``target`` judges it: ``fooled`` (the defended
    prediction wrong: after the reformer for the defense, the vote's plurality for the vote), ``flags`` per guard and
    ``success`` (fooled and unflagged)."""
    keep = np.asarray(table["index"]) < n
    labels = np.asarray(table["label"])[keep]
    guards = guards_of(target, settings)
    if has_reformer(target, settings):
        prediction = np.asarray(table["reformed_prediction"])[keep]
    elif guards == ["dropout_vote"] and vote_plurality is not None:
        prediction = np.asarray(vote_plurality)[keep]
    else:
        prediction = np.asarray(table["prediction"])[keep]
    flags = {g: metrics._scores_of(table, g)[keep] > limits[g] for g in guards}
    fooled = prediction != labels
    unflagged = ~np.any(np.stack(list(flags.values())), axis=0) if flags else np.ones(keep.sum(), bool)
    return {"fooled": fooled, "flags": flags, "success": fooled & unflagged}


def _rate_columns(prefix: str, hits: np.ndarray) -> dict[str, float]:
    r = adaptive.rate(hits)
    return {prefix: r["rate"], f"{prefix}_low": r["low"], f"{prefix}_high": r["high"]}


def adaptive_rows(sets: Sequence[Mapping[str, Any]], transfer: Mapping[tuple[str, float], metrics.ScoreTable],
                  settings: Mapping[str, Any], limits: Mapping[str, float],
                  plurality: Mapping[tuple[str, float], np.ndarray] | None = None) -> dict[str, list[dict]]:
    """The four adaptive tables (module docstring) from the adaptive sets (:func:`read_adaptive_set`) and the transfer
    sweeps' score tables by (attack, strength) (PGD's and C&W's, with the dropout vote's score column where it is
    judged; ``plurality``: the vote's plurality per transfer set)."""
    from advflow.defenses.tables import fitting

    n = int(settings["adaptive"]["n"])
    by = {(s["target"], s["attack"], s["strength"], s["longer"]): s for s in sets}
    undefended = {(a, st, lo): s for (t, a, st, lo), s in by.items() if t == "undefended"}
    main, guards, checks, surrogates = [], [], [], []
    for (target, attack, strength, longer), s in sorted(by.items(), key=lambda kv: (
            settings["adaptive"]["targets"].index(kv[0][0]), kv[0][1], kv[0][3], kv[0][2])):
        names = guards_of(target, settings)
        base = undefended.get((attack, strength, longer))
        table = transfer.get((TRANSFER_ATTACK[attack], strength))
        t = (transfer_outcome(table, target, settings, limits, n, (plurality or {}).get((attack, strength)))
             if table is not None else None)
        masked = base is not None and target != "undefended" and adaptive.masking_flag(s["success"], base["success"])
        row = {"target": target, "guards": " + ".join(names) or "none",
               "reformer": "yes" if has_reformer(target, settings) else "no", "threat": THREAT, "attack": attack,
               "strength": strength, "longer": "yes" if longer else "no", "n": int(len(s["success"])),
               **_rate_columns("success", s["success"]), **_rate_columns("defended_accuracy", ~s["success"]),
               **_rate_columns("detection", s["flagged"]),
               "undefended_success": adaptive.rate(base["success"])["rate"] if base is not None else math.nan,
               "masking": MASKING if masked else ""}
        if t is not None:
            row.update(_rate_columns("transfer_defended_accuracy", ~t["success"]))
            flagged = np.any(np.stack(list(t["flags"].values())), axis=0) if t["flags"] else np.zeros(n, bool)
            row["transfer_detection"] = float(flagged.mean())
        main.append(row)
        for g in names:
            flag = s["scores"][g] > s["thresholds"][g] if g in s["scores"] else np.zeros(len(s["success"]), bool)
            entry = {"target": target, "guard": g, "fitting": fitting(g), "threat": THREAT,
                     "surrogate": s["surrogates"].get(g, ""),
                     "threshold": float(s["thresholds"][g]), "attack": attack, "strength": strength,
                     "longer": "yes" if longer else "no", "n": int(len(flag)), **_rate_columns("detection", flag)}
            if t is not None:
                entry.update(_rate_columns("transfer_detection", t["flags"][g]))
            guards.append(entry)
    for target in settings["adaptive"]["targets"]:
        for attack in settings["adaptive"]["attacks"]:
            strengths = [k[2] for k in by if k[0] == target and k[1] == attack and not k[3]]
            if not strengths:
                continue
            top = max(strengths)
            s, longer, base = by[target, attack, top, False], by.get((target, attack, top, True)), \
                undefended.get((attack, top, False))
            row = {"target": target, "attack": attack, "strength": top, "n": int(len(s["success"])),
                   "success": float(s["success"].mean())}
            if base is not None:
                r = adaptive.rate(base["success"])
                row.update({"undefended_success": r["rate"], "undefended_success_low": r["low"],
                            "undefended_success_high": r["high"],
                            "undefended_reaches_all": "yes" if base["success"].all() else
                            f"no: {100 * r['rate']:.0f} % (the attack itself is too weak at this budget)",
                            "masking": MASKING if target != "undefended" and adaptive.masking_flag(
                                s["success"], base["success"]) else "no"})
            if longer is not None:
                c = adaptive.convergence(s["success"], longer["success"])
                row.update({"longer_success": c["longer"] / max(c["n"], 1), "gained": c["gained"],
                            "convergence": c["verdict"]})
            checks.append(row)
    for target in settings["adaptive"]["targets"]:
        mine = [s for k, s in by.items() if k[0] == target and not k[3]]
        if not mine:
            continue
        for g in mine[0]["surrogate"]:
            for inputs, real, surrogate in (
                    ("clean seeds", mine[0]["clean_scores"][g], mine[0]["clean_surrogate"][g]),
                    ("adaptive adversarial", np.concatenate([s["scores"][g] for s in mine]),
                     np.concatenate([s["surrogate"][g] for s in mine]))):
                c = adaptive.surrogate_correlation(real, surrogate)
                surrogates.append({"target": target, "guard": g, "surrogate": mine[0]["surrogates"].get(g, ""),
                                   "inputs": inputs, **c})
    return {"adaptive.csv": main, "adaptive_guards.csv": guards, "adaptive_checks.csv": checks,
            "adaptive_surrogates.csv": surrogates}


def adaptive_figure(target: str, rows: Sequence[Mapping[str, Any]], transfer: Mapping[str, Sequence[tuple]],
                    settings: Mapping[str, Any], dpi: int) -> Any:
    """Defended accuracy of ``target`` against the budget: one panel per attack (PGD over ε, C&W over κ), the
    transfer attack's (every sweep strength, on the same seeds) and the adaptive attack's, each with its 95 % Wilson
    interval; the undefended classifier's accuracy under the same adaptive attack thin and grey; the three drawn a
    little apart at a shared budget."""
    from advflow.workflow.figures import LEGEND_SIZE, Figure, new_figure, palette, render, style

    attacks = [a for a in settings["adaptive"]["attacks"] if any(r["attack"] == a for r in rows)]
    colors = palette(2)
    with style():
        figure = new_figure(5.2 * max(len(attacks), 1), 4.6)
        axes = figure.subplots(1, max(len(attacks), 1), squeeze=False).ravel()
        for ax, attack in zip(axes, attacks):
            lines = [("transfer", transfer.get(attack, ()), colors[0], "--", "s"),
                     ("adaptive", sorted((r["strength"], r["defended_accuracy"], r["defended_accuracy_low"],
                                          r["defended_accuracy_high"]) for r in rows
                                         if r["attack"] == attack and r["target"] == target and r["longer"] == "no"),
                      colors[1], "-", "o")]
            if target != "undefended":
                lines.append(("undefended, adaptive", sorted(
                    (r["strength"], r["defended_accuracy"], r["defended_accuracy_low"], r["defended_accuracy_high"])
                    for r in rows if r["attack"] == attack and r["target"] == "undefended" and r["longer"] == "no"),
                    "grey", ":", "x"))
            grid = [p[0] for _, points, *_ in lines for p in points]
            dodge = 0.012 * ((max(grid) - min(grid)) if len(set(grid)) > 1 else 1.0) if grid else 0.0
            for offset, (label, points, color, dashes, marker) in zip((0, 1, -1), lines):
                if not points:
                    continue
                x, y, low, high = (np.array(v, dtype=np.float64) for v in zip(*points))
                x = x + offset * dodge  # points at one budget side by side, not on top of each other
                # a Wilson bound equal to its rate (0 or 1) can differ from it in the last bit: never below 0
                errors = [np.maximum(100 * (y - low), 0), np.maximum(100 * (high - y), 0)]
                ax.errorbar(x, 100 * y, yerr=errors, color=color, ls=dashes,
                            marker=marker, lw=2.2 if label == "adaptive" else 1.4, capsize=3, label=label)
            ax.set(title=f"{target}: {'PGD (L∞)' if attack == 'pgd' else 'C&W (L2)'}",
                   xlabel=f"{UNITS[attack]} ({'pixels in [0, 1]' if attack == 'pgd' else 'logit margin'})",
                   ylabel="defended accuracy (%)", ylim=(-3, 103))
            ax.legend(fontsize=LEGEND_SIZE, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False, ncol=3)
        image = render(figure, dpi)
    n = int(settings["adaptive"]["n"])
    caption = (f"Defended accuracy of {target} ({' + '.join(guards_of(target, settings)) or 'no detector'}"
               f"{', reformer' if has_reformer(target, settings) else ''}) on the first {n} defense seeds: the share "
               f"of seeds where the defended classifier stays right or a guard flags the input, with 95 % Wilson "
               f"intervals. Transfer: crafted on the undefended classifier (oblivious). Adaptive: a white-box "
               f"attacker who knows the classifier, the reformer and the guards with their thresholds.")
    return Figure(f"adaptive_{target}.png", image, caption)


def write_adaptive_tables(set_paths: Sequence[str | Path], validation_csv: str | Path,
                          sweep_csvs: Sequence[str | Path], settings: dict[str, Any], *, tables_dir: Path,
                          figures_dir: Path, dpi: int = 100, dropout_dir: Path | None = None) -> dict[str, list[dict]]:
    """Rule ``adaptive_tables``: the adaptive tables and one figure per target (module docstring)."""
    from advflow.defenses.settings import sweeps
    from advflow.defenses.tables import with_dropout_vote
    from advflow.defenses.vote import read_vote_scores
    from advflow.workflow.figures import save
    from advflow.workflow.tabular import write_table

    every = judged(settings)
    vote = "dropout_vote" in every

    def read(path: str | Path) -> metrics.ScoreTable:
        table = metrics.read_scores(path)
        return with_dropout_vote(table, Path(path).stem, dropout_dir) if vote else table

    limits = metrics.thresholds(read(validation_csv), {d: settings["fpr"][d] for d in every})
    known = sweeps(settings)
    transfer, plurality = {}, {}
    for path in sweep_csvs:
        attack, strength = known[Path(path).stem]
        if attack in TRANSFER_ATTACK.values():
            transfer[attack, strength] = read(path)
            if vote:
                plurality[attack, strength] = read_vote_scores(Path(dropout_dir) / "scores" /
                                                               f"{Path(path).stem}.csv")["plurality"]
    sets = [read_adaptive_set(p) for p in set_paths]
    tables = adaptive_rows(sets, transfer, settings, limits, plurality)
    columns = {"adaptive.csv": ADAPTIVE_COLUMNS, "adaptive_guards.csv": GUARD_COLUMNS,
               "adaptive_checks.csv": CHECK_COLUMNS, "adaptive_surrogates.csv": SURROGATE_COLUMNS}
    tables_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        write_table(tables_dir / name, rows, columns[name])
    figures_dir.mkdir(parents=True, exist_ok=True)
    n = int(settings["adaptive"]["n"])
    for target in settings["adaptive"]["targets"]:
        lines = {}
        for attack in settings["adaptive"]["attacks"]:
            points = []
            for (name, strength), table in sorted(transfer.items(), key=lambda kv: kv[0][1]):
                if name == TRANSFER_ATTACK[attack]:
                    r = adaptive.rate(~transfer_outcome(table, target, settings, limits, n,
                                                        plurality.get((name, strength)))["success"])
                    points.append((strength, r["rate"], r["low"], r["high"]))
            lines[attack] = points
        save(adaptive_figure(target, tables["adaptive.csv"], lines, settings, dpi), figures_dir)
    for row in tables["adaptive_checks.csv"]:
        log.info("adaptive checks %s %s at %g: success %.3f, undefended %s, convergence %s, masking %s",
                 row["target"], row["attack"], row["strength"], row["success"], row.get("undefended_reaches_all"),
                 row.get("convergence"), row.get("masking"))
    return tables
