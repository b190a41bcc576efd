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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advflow.defenses import metrics
from advflow.defenses.settings import EPSILON_ATTACKS, KAPPA_ATTACKS, judged, sweeps
from advflow.workflow.figures import save
from advflow.workflow.io import quarantine
from advflow.workflow.tabular import write_table

log = logging.getLogger("advflow.defenses")

_RATES = ("defense_rate_attacked", "defense_rate_attacked_low", "defense_rate_attacked_high",
          "defense_rate_successful", "defense_rate_successful_low", "defense_rate_successful_high", "flagged",
          "flagged_low", "flagged_high", "control_flagged", "control_flagged_low", "control_flagged_high", "seed003")
TABLE1_COLUMNS = ("attack", "epsilon", "inputs", "successful", *_RATES)
TABLE2_COLUMNS = ("attack", "kappa", "inputs", "successful", "reached_kappa", "mean_margin", *_RATES)
DETECTOR_COLUMNS = ("detector", "attack", "strength", "over", "n_adversarial", "n_clean", "auc", "auc_low", "auc_high",
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


def write_defense_tables(validation_csv: str | Path, clean_csv: str | Path, sweep_csvs: Sequence[str | Path],
                         settings: dict[str, Any], *, tables_dir: Path, figures_dir: Path, dpi: int = 100,
                         resamples: int = metrics.RESAMPLES, seed: int = 0, dropout_dir: Path | None = None,
                         sizes: Mapping[str, int] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every table and figure of the defense stage; returns the tables as rows (file name -> rows). The defense is
    ``settings["detectors"]``; ``detectors.csv`` and the thresholds also judge the ``compared`` detectors. The dropout
    vote's scores come from ``dropout_dir`` (rule ``dropout_vote``). ``sizes``: the number of inputs of each scored
    set by name (:func:`advflow.defenses.stage.set_size`); a score table of another size is damaged."""
    detectors, reformer = list(settings["detectors"]), bool(settings["reformer"])
    every = judged(settings)

    def read(path: str | Path) -> metrics.ScoreTable:
        table = metrics.read_scores(path, rows=(sizes or {}).get(Path(path).stem))
        return with_dropout_vote(table, Path(path).stem, dropout_dir) if "dropout_vote" in every else table

    validation, clean = read(validation_csv), read(clean_csv)
    limits = metrics.thresholds(validation, {d: settings["fpr"][d] for d in every})
    known = sweeps(settings)  # each sweep set's (attack, strength), by the file name it was built with
    unknown = [str(p) for p in sweep_csvs if Path(p).stem not in known]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a sweep set of this config's defense.attacks, epsilons and "
                         f"kappas ({', '.join(known)})")
    sets = {known[Path(p).stem]: read(p) for p in sweep_csvs}
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
        "detectors.csv": metrics.detector_rows(clean, sets, every, resamples=resamples, seed=seed),
    }
    columns = {"thresholds.csv": ("detector", "role", "fpr", "threshold", "validation_images"),
               "table1_defense_rate.csv": TABLE1_COLUMNS, "table2_defense_rate.csv": TABLE2_COLUMNS,
               "clean_accuracy.csv": ACCURACY_COLUMNS, "detectors.csv": DETECTOR_COLUMNS}
    tables_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        write_table(tables_dir / name, rows, columns[name])
    figures_dir.mkdir(parents=True, exist_ok=True)
    for figure in (metrics.defense_rate_figure(tables["table1_defense_rate.csv"], tables["table2_defense_rate.csv"],
                                               dpi),
                   metrics.roc_figure(clean, sets, every, dpi)):
        save(figure, figures_dir)
    for row in accuracy[:1]:
        log.info("clean accuracy: %.4f without the defense, %.4f with it (detectors cost %.4f, the reformer %.4f)",
                 row["without"], row["with_defense"], row["lost_to_detectors"], row["lost_to_reformer"])
    log.info("defense tables: %d sets, detectors %s, thresholds %s", len(sets), ", ".join(detectors), limits)
    return tables
