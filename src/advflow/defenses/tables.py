"""The defense stage's tables and figures (rule ``defense_tables``), from the score tables alone.

Written to ``defense/tables/``: ``thresholds.csv`` (each detector's FPR and threshold on the clean validation
images), ``table1_defense_rate.csv`` (seed 003's Table 1: PGD, BIM vs ε), ``table2_defense_rate.csv`` (Table 2:
C&W-L2, EAD-L1, EAD-EN vs κ, with how many inputs reach κ), ``clean_accuracy.csv`` (without and with the
defense, and what the detectors and the reformer each cost) and ``detectors.csv`` (per detector and set: ROC AUC,
TPR at 1 % and 5 % FPR with 95 % intervals, over all attacked and over the successful inputs, beside the same on
each set's random control). Rates carry 95 % Wilson intervals, AUCs percentile-bootstrap ones (``resamples``,
seeded by ``seed``). Figures in ``defense/figures/``:
``defense_rate.png`` and ``defense_roc.png`` (each with a PDF beside it), at 100 dpi: ``report.dpi`` is the
report's alone, so changing it reruns the report and nothing else.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advflow.defenses import metrics
from advflow.defenses.settings import EPSILON_ATTACKS, KAPPA_ATTACKS, STUDY_PREFIX, judged, sweeps
from advflow.workflow.catalog import set_name
from advflow.workflow.figures import save
from advflow.workflow.io import quarantine
from advflow.workflow.tabular import write_table

log = logging.getLogger("advflow.defenses")

_RATES = ("defense_rate_attacked", "defense_rate_attacked_low", "defense_rate_attacked_high",
          "defense_rate_successful", "defense_rate_successful_low", "defense_rate_successful_high", "flagged",
          "flagged_low", "flagged_high", "control_flagged", "control_flagged_low", "control_flagged_high", "seed003")
TABLE1_COLUMNS = ("attack", "epsilon", "inputs", "successful", *_RATES)
TABLE2_COLUMNS = ("attack", "kappa", "inputs", "successful", "reached_kappa", "mean_margin", *_RATES)
#: How a row's detector was fitted and which attacker it faced (every table of detector numbers names both).
UNSUPERVISED, UNFITTED, SUPERVISED = "unsupervised (clean data only)", "unsupervised (no fitting)", \
    "supervised (one attack's inputs)"
TRANSFER = "transfer (crafted on the undefended classifier; oblivious to the detector)"
DETECTOR_COLUMNS = ("detector", "fitting", "threat", "attack", "strength", "over", "n_adversarial", "n_clean", "auc", "auc_low", "auc_high",
                    "tpr_at_1", "tpr_at_1_low", "tpr_at_1_high", "tpr_at_5", "tpr_at_5_low", "tpr_at_5_high",
                    "control_auc", "control_auc_low", "control_auc_high", "control_tpr_at_5", "vs_control", "note")
ACCURACY_COLUMNS = ("defense", "n", "without", "with_defense", "lost_to_detectors", "lost_to_reformer",
                    "gained_by_reformer")


def with_dropout_vote(table: metrics.ScoreTable, name: str, dropout_dir: Path | None) -> metrics.ScoreTable:
    """``table`` with the dropout vote's spread as ``score_dropout_vote`` (and its control's), from
    ``dropout_dir/scores/{name}.csv``; the two files must hold the same inputs."""
    from advflow.defenses.vote import read_vote_scores

    if dropout_dir is None:
        raise ValueError("the dropout_vote detector needs the dropout vote's scores (rule dropout_vote)")
    # The vote's tables live in the dropout_vote rule's folder: one missing, unreadable or of other inputs means
    # the folder is not whole, so the folder is moved aside and the next run votes again.
    votes_csv = Path(dropout_dir) / "scores" / f"{name}.csv"
    try:
        votes = read_vote_scores(votes_csv)
        whole = np.array_equal(votes["index"], table["index"]) and np.array_equal(votes["label"], table["label"])
        problem = f"{votes_csv.name} does not hold the inputs of the set's score table"
    except (OSError, ValueError, KeyError, IndexError) as error:
        whole, problem = False, f"{votes_csv.name} cannot be read ({type(error).__name__}: {error})"
    if not whole:
        raise quarantine(Path(dropout_dir), problem, rebuilt_by="rule dropout_vote")
    out = dict(table)
    out["score_dropout_vote"] = votes["spread"]
    if metrics.has_control(table) and "control_spread" in votes:
        out["control_score_dropout_vote"] = votes["control_spread"]
    return metrics.check_table(out, where=f"{name} with the dropout vote")


RANKING_COLUMNS = ("attack", "strength", "over", "rank", "detector", "fitting", "threat", "auc", "auc_low", "auc_high", "n_adversarial",
                   "n_clean")
PAIR_COLUMNS = ("attack", "strength", "over", "detector", "other", "difference", "low", "high", "verdict")
WORST_COLUMNS = ("family", "strength", "over", "detector", "fitting", "threat", "n", "left_out", "tpr", "tpr_low", "tpr_high", "auc",
                 "auc_low", "auc_high")


def fitting(detector: str) -> str:
    """How ``detector`` was fitted: on clean data only, or (the dropout vote) not at all."""
    return UNFITTED if detector == "dropout_vote" else UNSUPERVISED


def with_fitting(rows: list[dict]) -> list[dict]:
    """``rows`` (each with a ``detector``) with their ``fitting`` and ``threat`` (transfer) columns."""
    return [{**row, "fitting": fitting(row["detector"]), "threat": TRANSFER} for row in rows]


def _success(table: metrics.ScoreTable) -> np.ndarray:
    return np.asarray(table["success"]).astype(bool)


def ranking_rows(clean: metrics.ScoreTable, sets: Mapping[tuple[str, float], metrics.ScoreTable],
                 detectors: Sequence[str], *, resamples: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Per sweep set and denominator (attacked, successful): every detector's AUC with its interval and rank, and
    every pair's AUC difference with its paired-bootstrap interval (the same clean and adversarial inputs are shown
    to every detector): better / worse / tied within the interval (:func:`advflow.defenses.comparison.rank_detectors`).
    A set with fewer than 2 successful inputs has no successful rows."""
    from advflow.defenses.comparison import pair_rows, rank_detectors

    ranks, pairs = [], []
    clean_scores = {d: metrics._scores_of(clean, d) for d in detectors}
    for (attack, strength) in metrics._ordered(sets):
        table = sets[attack, strength]
        for over in metrics.DENOMINATORS:
            keep = _success(table) if over == "successful" else np.ones(len(table["success"]), bool)
            if keep.sum() < 2:
                continue
            adversarial = {d: metrics._scores_of(table, d)[keep] for d in detectors}
            ranking = rank_detectors(clean_scores, adversarial, resamples=resamples, seed=seed)
            key = {"attack": attack, "strength": float(strength), "over": over}
            ranks += [{**key, **{k: v for k, v in row.items() if k != "comparisons"}} for row in ranking]
            pairs += [{**key, **row} for row in pair_rows(ranking)]
    return ranks, pairs


def worst_case_rows(clean: metrics.ScoreTable, sets: Mapping[tuple[str, float], metrics.ScoreTable],
                    detectors: Sequence[str], limits: Mapping[str, float], *, resamples: int,
                    seed: int) -> list[dict]:
    """Per detector, family (the L∞ sweeps at one ε, the κ sweeps at one κ) and denominator: a seed is detected only
    if every attack's version of it is flagged (over the successful inputs: every successful version; a seed no
    attack fooled is left out), since an attacker picks the attack the detector misses
    (:mod:`advflow.defenses.comparison`): the worst-case TPR at the detector's threshold with its Wilson interval
    and the worst-case ROC AUC (each seed's lowest score over the attacks) with its bootstrap interval."""
    from advflow.defenses.comparison import worst_case_auc, worst_case_tpr

    rows = []
    for family, attacks in (("L∞ (" + ", ".join(EPSILON_ATTACKS) + ")", EPSILON_ATTACKS),
                            ("κ (" + ", ".join(KAPPA_ATTACKS) + ")", KAPPA_ATTACKS)):
        strengths = sorted({s for a, s in sets if a in attacks})
        for strength in strengths:
            members = {a: sets[a, strength] for a in attacks if (a, strength) in sets}
            if len(members) < 2:
                continue
            for over in metrics.DENOMINATORS:
                success = {a: _success(t) for a, t in members.items()} if over == "successful" else None
                if success is not None and not any(v.any() for v in success.values()):
                    continue
                for detector in detectors:
                    scores = {a: metrics._scores_of(t, detector) for a, t in members.items()}
                    tpr = worst_case_tpr(scores, limits[detector], success_by_attack=success)
                    auc = worst_case_auc(metrics._scores_of(clean, detector), scores, success_by_attack=success,
                                         resamples=resamples, seed=seed)
                    rows.append({"family": family, "strength": float(strength), "over": over, "detector": detector,
                                 **tpr, "auc": auc["auc"], "auc_low": auc["auc_low"], "auc_high": auc["auc_high"]})
    return rows


LAYER_COLUMNS = ("detector", "attack", "strength", "over", "value", "path", "layer", "auc", "separation", "direction",
                 "constant_on_clean", "clean", "adversarial", "control_auc", "minus_control", "minus_control_low",
                 "minus_control_high", "vs_control")


def layer_rows(clean: metrics.ScoreTable, sets: Mapping[tuple[str, float], metrics.ScoreTable], detector: str, *,
               resamples: int = metrics.RESAMPLES, seed: int = 0) -> dict[str, list[dict]]:
    """Per attack at its largest strength: how well each of ``detector``'s per-layer values alone separates clean
    from adversarial inputs (:func:`advflow.defenses.layer_view.layer_separation`), over the successful inputs (over
    every attacked input where fewer than 2 succeeded), and the same layer against the set's random control: the
    AUC of the attack minus the AUC of its control with a paired-bootstrap interval over the same seeds
    (``vs_control``: above / below control, or inconclusive) — a layer that flags noise of the same size as well as
    the attack detects the perturbation's size, not the attack. ``{attack: rows}``, empty without per-layer
    columns."""
    from advflow.defenses.comparison import compare, paired_auc_difference
    from advflow.defenses.layer_view import layer_separation

    names, clean_values = metrics.layer_values(clean, detector)
    if not names:
        return {}
    verdicts = {"better": "above control", "worse": "below control", "tied within the interval": "inconclusive"}
    out = {}
    for attack in dict.fromkeys(a for a, _ in metrics._ordered(sets)):
        strength = max(s for a, s in sets if a == attack)
        table = sets[attack, strength]
        keep = _success(table)
        over = "successful" if keep.sum() >= 2 else "attacked"
        if over == "attacked":
            keep = np.ones(len(keep), bool)
        values = metrics.layer_values(table, detector)[1][keep]
        control = metrics.layer_values(metrics.control_view(table), detector)[1][keep] \
            if metrics.has_control(table) else None
        rows = []
        for row in layer_separation(clean_values, values, names):
            j = int(row["column"])
            extra = {"control_auc": math.nan, "minus_control": math.nan, "minus_control_low": math.nan,
                     "minus_control_high": math.nan, "vs_control": "n/a"}
            if control is not None and np.ptp(clean_values[:, j]) > 0:
                estimate, low, high = paired_auc_difference(clean_values[:, j], values[:, j], clean_values[:, j],
                                                            control[:, j], resamples=resamples, seed=seed)
                extra = {"control_auc": metrics.roc_auc(clean_values[:, j], control[:, j]),
                         "minus_control": estimate, "minus_control_low": low, "minus_control_high": high,
                         "vs_control": verdicts.get(compare(low, high), "n/a")}
            rows.append({"detector": detector, "attack": attack, "strength": float(strength), "over": over, **row,
                         **extra})
        out[attack] = sorted(rows, key=lambda r: int(r["column"]))
    return out


SUPERVISED_COLUMNS = ("detector", "fitting", "threat", "trained_on", "attack", "strength", "over", "seen", "folds", "n_adversarial",
                      "n_clean", "auc", "auc_low", "auc_high", "unsupervised_auc", "unsupervised_auc_low",
                      "unsupervised_auc_high")
#: Cross-fitting folds of the supervised variants: each combiner trains on 4/5 of the seeds and scores the other 1/5.
SUPERVISED_FOLDS = 5


def supervised_rows(clean: metrics.ScoreTable, sets: Mapping[tuple[str, float], metrics.ScoreTable],
                    detectors: Sequence[str], *, resamples: int, seed: int,
                    folds: int = SUPERVISED_FOLDS) -> list[dict]:
    """The supervised variant of every detector with per-layer values (Mahalanobis, LID, the information-path
    detector), as both reference codes combine layers: a logistic regression on the per-layer values
    (:class:`advflow.defenses.comparison.SupervisedCombiner`), trained on one attack at its largest strength (the
    attacked inputs as positives, their random controls and clean images as negatives), cross-fitted over ``folds``
    parts of the seeds and of the clean images (:func:`advflow.defenses.comparison.cross_fit_scores`): every seed of
    every set and every clean image is scored by the combiner that held its part out, so the AUC is over all N_d
    seeds and no score comes from a combiner trained on that seed (the combiner refuses it). "seen": the attack it
    was trained on, at any strength; "unseen": every other attack. Beside it the unsupervised detector's AUC on the
    same inputs."""
    from advflow.defenses.comparison import cross_fit_scores

    if not sets:
        return []
    n = len(next(iter(sets.values()))["index"])
    if n < 4 or len(clean["index"]) < 4:
        return []
    k = min(int(folds), n, len(clean["index"]))
    every_seed = np.arange(n)
    ordered = metrics._ordered(sets)
    rows = []
    for detector in detectors:
        names, clean_values = metrics.layer_values(clean, detector)
        if not names:
            continue
        unsupervised_clean = metrics._scores_of(clean, detector)
        values = {(a, s): metrics.layer_values(sets[a, s], detector)[1] for a, s in ordered}
        for attack in dict.fromkeys(a for a, _ in ordered):
            strength = max(s for a, s in sets if a == attack)
            table = sets[attack, strength]
            controls = metrics.layer_values(metrics.control_view(table), detector)[1] \
                if metrics.has_control(table) else None
            clean_scores, scored = cross_fit_scores(clean_values, values[attack, strength], values,
                                                    attack=attack, folds=k, seed=seed, control_values=controls,
                                                    random_state=seed)
            for other, other_strength in ordered:
                table_other = sets[other, other_strength]
                for over in metrics.DENOMINATORS:
                    keep = every_seed[_success(table_other)] if over == "successful" else every_seed
                    row = {"detector": detector, "fitting": SUPERVISED, "threat": TRANSFER,
                           "trained_on": f"{attack} at {strength:g}", "attack": other,
                           "strength": float(other_strength), "over": over,
                           "seen": "seen" if other == attack else "unseen", "folds": k,
                           "n_adversarial": int(keep.size), "n_clean": int(clean_scores.size)}
                    if keep.size == 0:
                        rows.append({**row, **{c: float("nan") for c in SUPERVISED_COLUMNS[11:]}})
                        continue
                    scores = scored[other, other_strength][keep]
                    own = metrics._scores_of(table_other, detector)[keep]
                    low, high = metrics.auc_interval(clean_scores, scores, resamples=resamples, seed=seed)
                    u_low, u_high = metrics.auc_interval(unsupervised_clean, own, resamples=resamples, seed=seed)
                    rows.append({**row, "auc": metrics.roc_auc(clean_scores, scores), "auc_low": low,
                                 "auc_high": high, "unsupervised_auc": metrics.roc_auc(unsupervised_clean, own),
                                 "unsupervised_auc_low": u_low, "unsupervised_auc_high": u_high})
    return rows


def write_defense_tables(validation_csv: str | Path, clean_csv: str | Path, sweep_csvs: Sequence[str | Path],
                         settings: dict[str, Any], *, tables_dir: Path, figures_dir: Path, dpi: int = 100,
                         resamples: int = metrics.RESAMPLES, seed: int = 0, dropout_dir: Path | None = None,
                         sizes: Mapping[str, int] | None = None,
                         study_csvs: Sequence[str | Path] = ()) -> dict[str, list[dict[str, Any]]]:
    """Every table and figure of the defense stage; returns the tables as rows (file name -> rows). The defense is
    ``settings["detectors"]``; ``detectors.csv`` and the thresholds also judge the ``compared`` detectors. The dropout
    vote's scores come from ``dropout_dir`` (rule ``dropout_vote``). ``sizes``: the number of inputs of each scored
    set by name (:func:`advflow.defenses.stage.set_size`); a score table of another size is damaged. ``study_csvs``:
    the score tables of the study's sets on the defense classifier (``{STUDY_PREFIX}{attack}.csv``), judged in the
    detector table and the ranking beside the sweeps (strength NaN; not in the seed's tables, the worst case or the
    supervised rows, whose seeds are the defense seeds)."""
    detectors, reformer = list(settings["detectors"]), bool(settings["reformer"])
    every = judged(settings)

    def read(path: str | Path, vote_name: str | None = None) -> metrics.ScoreTable:
        """A score table with the dropout vote's column; ``vote_name``: the set's name in the vote's folder (a study
        set is ``{attack}@{classifier}`` there)."""
        table = metrics.read_scores(path, rows=(sizes or {}).get(Path(path).stem))
        if "dropout_vote" not in every:
            return table
        return with_dropout_vote(table, vote_name or Path(path).stem, dropout_dir)

    validation, clean = read(validation_csv), read(clean_csv)
    limits = metrics.thresholds(validation, {d: settings["fpr"][d] for d in every})
    known = sweeps(settings)  # each sweep set's (attack, strength), by the file name it was built with
    unknown = [str(p) for p in sweep_csvs if Path(p).stem not in known]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a sweep set of this config's defense.attacks, epsilons and "
                         f"kappas ({', '.join(known)})")
    sets = {known[Path(p).stem]: read(p) for p in sweep_csvs}
    # the study's sets on the defense classifier, named as the study names them (fgsm@good_init), strength NaN
    studies = {}
    for path in study_csvs:
        name = set_name(Path(path).stem.removeprefix(STUDY_PREFIX), settings["classifier"])
        studies[name, math.nan] = read(path, vote_name=name)
    by_eps = {k: v for k, v in sets.items() if k[0] in EPSILON_ATTACKS}
    by_kappa = {k: v for k, v in sets.items() if k[0] in KAPPA_ATTACKS}
    accuracy = [{"defense": " + ".join(detectors) + (" + reformer" if reformer else ""),
                 **metrics.clean_accuracy(clean, limits, detectors, reformer=reformer)},
                {"defense": "seed 003 (MagNet L1, L2, reformer + MID)", "n": "",
                 **{k: v for k, v in metrics.SEED_CLEAN_ACCURACY.items()}}]
    tables = {
        "thresholds.csv": [{"detector": d, "fpr": settings["fpr"][d], "threshold": limits[d],
                            "validation_images": len(validation["label"]),
                            "role": "defense" if d in detectors else "compared"} for d in every],
        "table1_defense_rate.csv": metrics.table1_rows(by_eps, limits, detectors, reformer=reformer),
        "table2_defense_rate.csv": metrics.table2_rows(by_kappa, limits, detectors, reformer=reformer),
        "clean_accuracy.csv": accuracy,
        "detectors.csv": with_fitting(metrics.detector_rows(clean, {**sets, **studies}, every, resamples=resamples,
                                                           seed=seed)),
    }
    ranks, tables["detector_pairs.csv"] = ranking_rows(clean, {**sets, **studies}, every, resamples=resamples,
                                                       seed=seed)
    tables["ranking.csv"] = with_fitting(ranks)
    tables["worst_case.csv"] = with_fitting(worst_case_rows(clean, sets, every, limits, resamples=resamples,
                                                            seed=seed))
    tables["supervised.csv"] = supervised_rows(clean, sets, every, resamples=resamples, seed=seed)
    by_detector = {d: layer_rows(clean, sets, d, resamples=resamples, seed=seed) for d in every}
    tables["layers.csv"] = [row for layers in by_detector.values() for rows in layers.values() for row in rows]
    layers = by_detector.get("infopath", {})
    columns = {"thresholds.csv": ("detector", "role", "fpr", "threshold", "validation_images"),
               "table1_defense_rate.csv": TABLE1_COLUMNS, "table2_defense_rate.csv": TABLE2_COLUMNS,
               "clean_accuracy.csv": ACCURACY_COLUMNS, "detectors.csv": DETECTOR_COLUMNS,
               "ranking.csv": RANKING_COLUMNS, "detector_pairs.csv": PAIR_COLUMNS, "worst_case.csv": WORST_COLUMNS,
               "layers.csv": LAYER_COLUMNS, "supervised.csv": SUPERVISED_COLUMNS}
    tables_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        write_table(tables_dir / name, rows, columns[name])
    figures_dir.mkdir(parents=True, exist_ok=True)
    for figure in (metrics.defense_rate_figure(tables["table1_defense_rate.csv"], tables["table2_defense_rate.csv"],
                                               dpi),
                   metrics.roc_figure(clean, sets, every, dpi)):
        save(figure, figures_dir)
    if layers:
        from advflow.defenses.layer_view import layer_separation_figure

        save(layer_separation_figure(layers, dpi), figures_dir)
    for row in accuracy[:1]:
        log.info("clean accuracy: %.4f without the defense, %.4f with it (detectors cost %.4f, the reformer %.4f)",
                 row["without"], row["with_defense"], row["lost_to_detectors"], row["lost_to_reformer"])
    log.info("defense tables: %d sets, detectors %s, thresholds %s", len(sets), ", ".join(detectors), limits)
    return tables
