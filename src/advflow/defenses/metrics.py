"""Metrics of the defense stage (docs/method.md, "Defenses and detectors", "Metrics"; seed 003, Section 4.2, Tables 1-2).

A **score table** is a dict of ``(N,)`` arrays, one entry per input of a set (:func:`read_scores`): ``index, label,
prediction`` (the undefended classifier's class), ``success`` (``prediction != label`` on adversarial sets, all False
on clean ones), ``reformed_prediction`` (the class of the reformer's ``AE(x)``), ``margin`` (the logit margin an
attack reached, NaN on clean sets) and ``score_<detector>...``. From them: seed 003's **defense rate** (the share of
adversarial inputs a detector flags or the classifier gets right after the reformer, over the attacked or the
successful inputs, with its denominator), **clean accuracy** without and with the defense and what the detectors and
the reformer cost, per detector **ROC AUC** and **TPR at 1 % and 5 % FPR**, seed 003's published numbers (its
Table 1's ε order is uncertain in the extracted text: :data:`SEED_TABLE1_CAVEAT`), the tables and figures.
AUC and ROC are computed here and equal ``sklearn.metrics.roc_auc_score`` and ``roc_curve(...,
drop_intermediate=False)`` (tested): scikit-learn is a test dependency, not in the rules' environment.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from advflow.defenses import flagged, threshold
from advflow.attacks import registry as attack_registry
from advflow.defenses.settings import EPSILON_ATTACKS, KAPPA_ATTACKS, SWEEP_ATTACKS
from advflow.information.shifts import wilson
from advflow.workflow.io import atomic_path, quarantine

ScoreTable = dict[str, np.ndarray]
REQUIRED = ("index", "label", "prediction", "success", "reformed_prediction", "margin")
SCORE_PREFIX = "score_"
#: A sweep set's random control (each seed perturbed at random by the attack's own size) is scored beside it:
#: ``control_prediction``, ``control_reformed_prediction`` and ``control_score_<detector>``, one row per input. (The
#: prefix of a score table's columns; a control *set*'s name is the catalog's, advflow.workflow.catalog.control_name.)
CONTROL_COLUMN_PREFIX = "control_"
INTEGER_COLUMNS = ("index", "label", "prediction", "reformed_prediction", "control_prediction",
                   "control_reformed_prediction")
#: Percentile bootstrap of the detectors' AUC and TPRs: resamples (clean and adversarial inputs apart).
RESAMPLES = 1000
DENOMINATORS = ("attacked", "successful")
#: A score table's per-layer columns of a detector that scores layer by layer: ``layer_<detector>_<layer>``.
LAYER_COLUMN_PREFIX = "layer_"
NO_INPUT_NOTES = {"attacked": "n/a (no adversarial input)", "successful": "n/a (no successful adversarial input)"}
ATTACK_LABELS = {name: attack_registry.labels()[name] for name in SWEEP_ATTACKS}
MAX_ROC_CURVES = 8

# Seed 003, Section 4.2 "Effect on normal examples" (Fashion-MNIST test set): 94.34 % without any defense, 89.57 %
# with MagNet + MID.
SEED_CLEAN_ACCURACY = {"without": 0.9434, "with_defense": 0.8957}

# Seed 003, Table 2 "The defense rate of FASHION MNIST with different confidences κ", in %: columns "C&W attack
# (L2)", "EAD attack (L1)", "EAD attack (EN)" (β = 0.1), rows κ = 0, 5, ..., 40.
_KAPPAS = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)
SEED_TABLE2 = {
    "cw": dict(zip(_KAPPAS, (88.4, 84.6, 80.6, 75.9, 71.9, 68.1, 65.3, 60.1, 56.9))),
    "ead_l1": dict(zip(_KAPPAS, (87.7, 82.7, 78.7, 74.6, 71.4, 68.3, 66.2, 62.5, 59.4))),
    "ead_en": dict(zip(_KAPPAS, (88.3, 82.9, 78.9, 73.3, 70.5, 67.9, 66.4, 62.5, 59.9))),
}

# Seed 003, Table 1 "The defense rate of FASHION MNIST and MNIST with different epsilons ε", Fashion-MNIST rows, in
# %, ε in pixel units ([0, 1] images). The text extraction garbled the table: its ε header reads
# "0.05 0.1 0.15 0.25 0.35 0.5 ε 0.2 0.3 0.4 0.45" and the rows "PGD 77.2 93.0 81.8 72.0 68.0 64.0 57.2 61.7 72.4
# 84.1", "BIM 84.1 83.8 84.1 84.2 85.0 84.8 84.5 84.7 84.5 84.7". Value i is mapped to header ε i, in the order the
# extraction gives; the true column order is UNCERTAIN, so every table or figure showing these numbers says so.
_TABLE1_HEADER = (0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.2, 0.3, 0.4, 0.45)
SEED_TABLE1 = {
    "pgd": dict(zip(_TABLE1_HEADER, (77.2, 93.0, 81.8, 72.0, 68.0, 64.0, 57.2, 61.7, 72.4, 84.1))),
    "bim": dict(zip(_TABLE1_HEADER, (84.1, 83.8, 84.1, 84.2, 85.0, 84.8, 84.5, 84.7, 84.5, 84.7))),
}
SEED_TABLE1_ORDER_UNCERTAIN = True
SEED_TABLE1_CAVEAT = ("seed 003's Table 1 is garbled in its extracted text: its values are mapped to ε in the order "
                      "of the extracted header (0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.2, 0.3, 0.4, 0.45), which may "
                      "not be the published column order")


def seed_value(table: Mapping[str, Mapping[float, float]], attack: str, strength: float) -> float:
    """The seed's number (in %) for ``attack`` at ``strength`` in ``SEED_TABLE1`` or ``SEED_TABLE2``; NaN if none."""
    for key, value in table.get(attack, {}).items():
        if math.isclose(key, float(strength), abs_tol=1e-9):
            return value
    return math.nan


# --- score tables ------------------------------------------------------------------------------------------------

def check_table(scores: Mapping[str, Any], where: str = "score table") -> ScoreTable:
    """``scores`` as a dict of ``(N,)`` arrays, or a ValueError naming ``where`` and the column at fault: the
    required columns must be there, every column as long as ``index``, and no detector score NaN."""
    missing = [name for name in REQUIRED if name not in scores]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; a score table has columns "
                         f"{', '.join(REQUIRED)}, {SCORE_PREFIX}<detector>... (as write_scores writes it)")
    table = {name: np.asarray(values).ravel() for name, values in scores.items()}
    n = table["index"].size
    for name, values in table.items():
        if values.size != n:
            raise ValueError(f"{where}: column {name} has {values.size} values, column index has {n}; every column "
                             f"needs one value per input")
        if (name.removeprefix(CONTROL_COLUMN_PREFIX).startswith(SCORE_PREFIX)
                and np.isnan(values.astype(np.float64)).any()):
            raise ValueError(f"{where}: column {name} has {int(np.isnan(values.astype(np.float64)).sum())} NaN "
                             f"scores of {n}; a detector must score every input (rerun its scoring)")
    return table


def detectors_in(scores: Mapping[str, Any]) -> list[str]:
    """The detectors a score table holds: its ``score_<detector>`` columns' names without the prefix, in order."""
    return [name[len(SCORE_PREFIX):] for name in scores if name.startswith(SCORE_PREFIX)]


def has_control(scores: Mapping[str, Any]) -> bool:
    """Whether a score table holds its set's random control (``control_*`` columns)."""
    return CONTROL_COLUMN_PREFIX + "prediction" in scores


def control_view(scores: Mapping[str, Any]) -> ScoreTable:
    """The random control's score table: the same inputs (index, label) with the control's predictions and scores;
    ``success`` stays the attack's, so "successful" selects the controls of the inputs the attack fooled."""
    table = check_table(scores)
    if not has_control(table):
        raise ValueError("score table: no random control (control_* columns); rerun the set's scoring")
    view = {name: table[name] for name in ("index", "label", "success")}
    view["margin"] = np.full(table["index"].size, math.nan)
    for name in table:
        if name.startswith(CONTROL_COLUMN_PREFIX):
            view[name[len(CONTROL_COLUMN_PREFIX):]] = table[name]
    return check_table(view, where="control scores")


def _parse(path: Path, name: str, texts: list[str]) -> np.ndarray:
    try:
        if name in INTEGER_COLUMNS:
            return np.array([int(t) for t in texts], dtype=np.int64)
        if name == "success":
            booleans = {"true": True, "false": False, "1": True, "0": False}
            return np.array([booleans[t.strip().lower()] for t in texts], dtype=bool)
        return np.array([float(t) for t in texts], dtype=np.float64)
    except (KeyError, ValueError) as error:
        if (name in REQUIRED or name in INTEGER_COLUMNS
                or name.removeprefix(CONTROL_COLUMN_PREFIX).startswith(SCORE_PREFIX)):
            kind = "an integer" if name in INTEGER_COLUMNS else "True or False" if name == "success" else "a number"
            raise ValueError(f"{path}: column {name} has a value that is not {kind} ({error}); rewrite the file "
                             f"with write_scores") from error
        return np.array(texts, dtype=str)  # a column of ours that is not numeric: kept as text


def read_scores(path: str | Path, *, rows: int | None = None) -> ScoreTable:
    """The score table in the CSV at ``path``: ``index``, ``label``, ``prediction``, ``reformed_prediction`` as
    int64, ``success`` as bool, ``margin`` and ``score_*`` as float64, in the file's column order.

    A table that is not whole (no header, a short row, a required value that does not parse, a NaN score, an
    ``index`` other than 0 … N−1, or not ``rows`` inputs: the scored set's size) was damaged after the scoring
    job wrote it: it is moved aside (:func:`advflow.workflow.io.quarantine`) and the next run scores the set again."""
    path = Path(path)

    def damaged(problem: str) -> Exception:
        return quarantine(path, problem, rebuilt_by="rule defense_scores")

    with open(path, newline="") as handle:
        lines = list(csv.reader(handle))
    if not lines:
        raise damaged(f"empty file, no header; a score table has columns {', '.join(REQUIRED)}, ...")
    header, body = lines[0], lines[1:]
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise damaged(f"line {line} has {len(row)} fields, the header has {len(header)} (cut short?)")
    try:
        columns = {name: _parse(path, name, [row[i] for row in body]) for i, name in enumerate(header)}
        table = check_table(columns, where=str(path))
    except ValueError as error:
        raise damaged(str(error).removeprefix(f"{path}: ")) from error
    n = table["index"].size
    if not np.array_equal(table["index"], np.arange(n)):
        raise damaged(f"its index column is not 0 … {n - 1}")
    if rows is not None and n != rows:
        raise damaged(f"{n} rows where the scored set has {rows} inputs (cut short?)")
    return table


def _text(name: str, values: np.ndarray) -> list[str]:
    if name in INTEGER_COLUMNS:
        return [str(int(v)) for v in values]
    if name == "success" or values.dtype == bool:
        return [str(bool(v)) for v in values]
    if np.issubdtype(values.dtype, np.number):
        return [repr(float(v)) for v in values]  # repr: the shortest text that reads back as the same float
    return [str(v) for v in values]


def write_scores(path: str | Path, columns: Mapping[str, Any]) -> None:
    """Write a score table as CSV, atomically: the required columns first, then the others in their order."""
    table = check_table(columns, where=str(path))
    names = list(REQUIRED) + [name for name in table if name not in REQUIRED]
    texts = [_text(name, table[name]) for name in names]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(zip(*texts))


# --- thresholds and the defended system --------------------------------------------------------------------------

def _scores_of(table: ScoreTable, detector: str, where: str = "score table") -> np.ndarray:
    name = SCORE_PREFIX + detector
    if name not in table:
        available = ", ".join(detectors_in(table)) or "none"
        raise ValueError(f"{where}: no column {name}; the detectors here are: {available} (score the set with that "
                         f"detector, or drop it from the config)")
    return table[name].astype(np.float64)


def thresholds(validation_scores: Mapping[str, Any], fprs: Mapping[str, float]) -> dict[str, float]:
    """``{detector: limit}``: the ``(1 - fpr)`` quantile of each detector's scores on clean validation inputs
    (:func:`advflow.defenses.threshold`) for the FPR ``fprs[detector]``."""
    table = check_table(validation_scores, where="validation scores")
    return {d: threshold(_scores_of(table, d, "validation scores"), fpr) for d, fpr in fprs.items()}


def any_flagged(scores: Mapping[str, Any], limits: Mapping[str, float], detectors: Sequence[str]) -> np.ndarray:
    """``(N,)`` bool: flagged by at least one of ``detectors``, each at its limit in ``limits``."""
    table = check_table(scores)
    caught = np.zeros(table["index"].size, dtype=bool)
    for detector in detectors:
        if detector not in limits:
            raise ValueError(f"no threshold for detector {detector}; thresholds are set for: "
                             f"{', '.join(limits) or 'none'} (add its FPR to the defense config)")
        caught |= flagged(_scores_of(table, detector), limits[detector])
    return caught


def _correct(table: ScoreTable, reformer: bool) -> np.ndarray:
    return table["reformed_prediction" if reformer else "prediction"] == table["label"]


def defended(scores: Mapping[str, Any], limits: Mapping[str, float], detectors: Sequence[str], *,
             reformer: bool = True) -> np.ndarray:
    """``(N,)`` bool, seed 003's defended input: flagged by any of ``detectors``, or classified correctly (after
    the reformer: ``reformed_prediction == label``; without it: ``prediction == label``)."""
    table = check_table(scores)
    return any_flagged(table, limits, detectors) | _correct(table, reformer)


def _denominator(table: ScoreTable, over: str) -> np.ndarray:
    if over not in DENOMINATORS:
        raise ValueError(f"over={over!r}: the denominator is 'attacked' (every input) or 'successful' (inputs the "
                         f"attack fooled the undefended classifier on)")
    return table["success"].astype(bool) if over == "successful" else np.ones(table["index"].size, dtype=bool)


def defense_rate(scores: Mapping[str, Any], limits: Mapping[str, float], detectors: Sequence[str], *,
                 reformer: bool = True, over: str = "attacked") -> tuple[float, int]:
    """(defense rate, its denominator) over all attacked inputs or the successful ones; (NaN, 0) if none."""
    table = check_table(scores)
    inside = _denominator(table, over)
    n = int(inside.sum())
    if n == 0:
        return math.nan, 0
    return float(defended(table, limits, detectors, reformer=reformer)[inside].mean()), n


def clean_accuracy(clean_scores: Mapping[str, Any], limits: Mapping[str, float], detectors: Sequence[str], *,
                   reformer: bool = True) -> dict[str, float]:
    """Accuracy on clean inputs ``without`` and ``with_defense`` (not flagged and right after the reformer), and
    why they differ: ``without - lost_to_detectors - lost_to_reformer + gained_by_reformer == with_defense``."""
    table = check_table(clean_scores, where="clean scores")
    n = table["index"].size
    if n == 0:
        raise ValueError("clean scores: no input; clean accuracy needs the clean set's scores")
    right = table["prediction"] == table["label"]
    caught = any_flagged(table, limits, detectors)
    right_defended = _correct(table, reformer)
    passed = ~caught
    return {"without": float(right.mean()), "with_defense": float((passed & right_defended).mean()),
            "lost_to_detectors": float((right & caught).mean()),
            "lost_to_reformer": float((right & passed & ~right_defended).mean()),
            "gained_by_reformer": float((~right & passed & right_defended).mean()), "n": n}


# --- detectors on their own --------------------------------------------------------------------------------------

def _clean_and_adversarial(clean: Mapping[str, Any], adversarial: Mapping[str, Any], detector: str,
                           over: str) -> tuple[np.ndarray, np.ndarray]:
    clean_table, adversarial_table = check_table(clean, "clean scores"), check_table(adversarial, "adversarial scores")
    negatives = _scores_of(clean_table, detector, "clean scores")
    if negatives.size == 0:
        raise ValueError(f"clean scores: no input; detector {detector}'s ROC and thresholds need clean scores")
    inside = _denominator(adversarial_table, over)
    return negatives, _scores_of(adversarial_table, detector, "adversarial scores")[inside]


def roc_auc(clean: np.ndarray, adversarial: np.ndarray) -> float:
    """ROC AUC, adversarial = positive: the Mann-Whitney U / (n_a n_c), the probability that an adversarial score
    exceeds a clean one, ties counted one half; equals ``sklearn.metrics.roc_auc_score``."""
    ranks = rankdata(np.concatenate([adversarial, clean]))  # mid-ranks of ties
    n_a, n_c = adversarial.size, clean.size
    return float((ranks[:n_a].sum() - n_a * (n_a + 1) / 2) / (n_a * n_c))


def roc_curve(clean: Mapping[str, Any], adversarial: Mapping[str, Any], detector: str, *,
              over: str = "attacked") -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr), each ``(T + 1,)`` for T distinct scores, starting at (0, 0): flagging scores ``>=`` each distinct
    score, highest first; equals ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``."""
    negatives, positives = _clean_and_adversarial(clean, adversarial, detector, over)
    if positives.size == 0:
        raise ValueError(f"adversarial scores: {NO_INPUT_NOTES[over]}; a ROC curve needs adversarial inputs")
    scores = np.concatenate([positives, negatives])
    truth = np.concatenate([np.ones(positives.size), np.zeros(negatives.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, truth = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # the last input of each distinct score
    true_positives = np.cumsum(truth)[last]
    false_positives = last + 1 - true_positives
    return np.r_[0.0, false_positives] / negatives.size, np.r_[0.0, true_positives] / positives.size


def auc_interval(clean: np.ndarray, adversarial: np.ndarray, *, resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of :func:`roc_auc`, clean and adversarial inputs resampled apart (seeded).
    Each resample's AUC is ``c_a · P · c_c / (n_a n_c)``, P the pairwise win matrix (1, ½ on ties) and c the
    resample's counts, so no resample re-sorts. A perfect separation gives [1, 1]: read it with n."""
    n_a, n_c = adversarial.size, clean.size
    if n_a == 0 or n_c == 0:
        return math.nan, math.nan
    wins = ((adversarial[:, None] > clean[None, :]) + 0.5 * (adversarial[:, None] == clean[None, :])).astype(np.float64)
    rng = np.random.default_rng([int(seed), n_a, n_c])

    def counts(n: int) -> np.ndarray:
        draws = rng.integers(0, n, size=(resamples, n)) + (np.arange(resamples) * n)[:, None]
        return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)

    count_a = counts(n_a)
    aucs = np.einsum("rc,rc->r", count_a @ wins, counts(n_c)) / (n_a * n_c)
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def vs_control(low: float, high: float, control_low: float, control_high: float) -> str:
    """How a detector's AUC on a set compares with its AUC on the set's random control, by their 95 % intervals:
    "above control", "below control" or "inconclusive" (overlap); "n/a" where either is missing."""
    if not all(math.isfinite(v) for v in (low, high, control_low, control_high)):
        return "n/a"
    return "above control" if low > control_high else "below control" if high < control_low else "inconclusive"


def detector_metrics(clean_scores: Mapping[str, Any], adversarial_scores: Mapping[str, Any], detector: str, *,
                     over: str = "attacked", resamples: int = RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """``auc`` with its 95 % bootstrap interval (``auc_low``, ``auc_high``; :func:`auc_interval`), ``tpr_at_1`` and
    ``tpr_at_5`` (the share of adversarial inputs flagged at the thresholds set at 1 % and 5 % FPR on
    ``clean_scores``) with 95 % Wilson intervals over ``n_adversarial``, ``n_clean``; where the table holds the set's
    random control, the same AUC and TPR at 5 % on it (``control_*``) and ``vs_control`` (:func:`vs_control`); and
    ``note``: with no adversarial input in the denominator the numbers are NaN and ``note`` says why (e.g. "n/a (no
    successful adversarial input)")."""
    negatives, positives = _clean_and_adversarial(clean_scores, adversarial_scores, detector, over)
    keys = ("auc", "auc_low", "auc_high", "tpr_at_1", "tpr_at_1_low", "tpr_at_1_high", "tpr_at_5", "tpr_at_5_low",
            "tpr_at_5_high", "control_auc", "control_auc_low", "control_auc_high", "control_tpr_at_5")
    metrics: dict[str, Any] = {**dict.fromkeys(keys, math.nan), "vs_control": "n/a",
                               "n_adversarial": int(positives.size), "n_clean": int(negatives.size), "note": ""}
    if positives.size == 0:
        return {**metrics, "note": NO_INPUT_NOTES[over]}
    limits = {fpr: threshold(negatives, fpr) for fpr in (0.01, 0.05)}
    for key, fpr in (("tpr_at_1", 0.01), ("tpr_at_5", 0.05)):
        metrics[key] = float(flagged(positives, limits[fpr]).mean())
        metrics[f"{key}_low"], metrics[f"{key}_high"] = wilson(metrics[key], positives.size)
    metrics["auc"] = roc_auc(negatives, positives)
    metrics["auc_low"], metrics["auc_high"] = auc_interval(negatives, positives, resamples=resamples, seed=seed)
    if has_control(adversarial_scores) and f"{CONTROL_COLUMN_PREFIX}{SCORE_PREFIX}{detector}" in adversarial_scores:
        # (a study set's dropout vote has no control: its control set is a file the vote does not read)
        _, control = _clean_and_adversarial(clean_scores, control_view(adversarial_scores), detector, over)
        metrics["control_auc"] = roc_auc(negatives, control)
        metrics["control_auc_low"], metrics["control_auc_high"] = auc_interval(negatives, control,
                                                                               resamples=resamples, seed=seed + 1)
        metrics["control_tpr_at_5"] = float(flagged(control, limits[0.05]).mean())
        metrics["vs_control"] = vs_control(metrics["auc_low"], metrics["auc_high"], metrics["control_auc_low"],
                                           metrics["control_auc_high"])
    return metrics


def format_metric(value: float | None, note: str = "", *, rate: bool = False) -> str:
    """A table cell: ``note`` (or "n/a") where the value is missing or NaN, a rate as "33.3 %" (``rate``, as
    :func:`advflow.workflow.figures.percent`), else three decimals."""
    if value is None or not math.isfinite(float(value)):
        return note or "n/a"
    if rate:
        # the report package is slow to import (torch, gpytorch): only where a rate is written
        from advflow.workflow.figures import percent

        return percent(value)
    return f"{float(value):.3f}"


# --- tables ------------------------------------------------------------------------------------------------------

def _ordered(sets: Mapping[tuple[str, float], Any], allowed: Sequence[str] | None = None) -> list[tuple[str, float]]:
    known = list(allowed or ATTACK_LABELS)
    if allowed is not None:
        wrong = sorted({attack for attack, _ in sets if attack not in allowed})
        if wrong:
            raise ValueError(f"attack(s) {', '.join(wrong)} do not belong in this table; it takes {', '.join(allowed)}")
    return sorted(sets, key=lambda key: (known.index(key[0]) if key[0] in known else len(known), key[0],
                                         float(key[1])))


def _rate_rows(sets, limits, detectors, reformer, attacks, strength, seed) -> list[dict[str, Any]]:
    rows = []
    for attack, value in _ordered(sets, attacks):
        table = check_table(sets[attack, value], where=f"{attack} at {strength} {value:g}")
        row = {"attack": attack, strength: float(value), "successful": int(table["success"].sum())}
        for over in DENOMINATORS:
            rate, n = defense_rate(table, limits, detectors, reformer=reformer, over=over)
            low, high = wilson(rate, n)
            row.update({f"defense_rate_{over}": rate, f"defense_rate_{over}_low": low,
                        f"defense_rate_{over}_high": high})
            if over == "attacked":
                row["inputs"] = n
        caught = any_flagged(table, limits, detectors)
        row["flagged"] = float(caught.mean()) if caught.size else math.nan
        row["flagged_low"], row["flagged_high"] = wilson(row["flagged"], caught.size)
        if has_control(table):
            control = any_flagged(control_view(table), limits, detectors)
            row["control_flagged"] = float(control.mean()) if control.size else math.nan
            row["control_flagged_low"], row["control_flagged_high"] = wilson(row["control_flagged"], control.size)
        else:
            row.update(dict.fromkeys(("control_flagged", "control_flagged_low", "control_flagged_high"), math.nan))
        row["seed003"] = seed_value(seed, attack, value)
        rows.append(row)
    return rows


def table1_rows(sets: Mapping[tuple[str, float], Mapping[str, Any]], limits: Mapping[str, float],
                detectors: Sequence[str], *, reformer: bool = True) -> list[dict[str, Any]]:
    """Seed 003's Table 1: one row per ``(attack, epsilon)`` of PGD and BIM, ε in the seed's pixel units (half our
    model-space ε): ``inputs``, ``successful``, the defense rates (shares in [0, 1]) over attacked and successful
    inputs with 95 % Wilson intervals (``_low``, ``_high``), ``flagged`` (the share of attacked inputs a detector
    flags) beside ``control_flagged`` (the same on the set's random control: what a random perturbation of the same
    size sets off), each with its interval, and ``seed003``, the seed's number in % (NaN where it has none; its ε
    order is uncertain: :data:`SEED_TABLE1_CAVEAT`)."""
    return _rate_rows(sets, limits, detectors, reformer, EPSILON_ATTACKS, "epsilon", SEED_TABLE1)


def table2_rows(sets: Mapping[tuple[str, float], Mapping[str, Any]], limits: Mapping[str, float],
                detectors: Sequence[str], *, reformer: bool = True) -> list[dict[str, Any]]:
    """Seed 003's Table 2: the columns of :func:`table1_rows` per ``(attack, kappa)`` of C&W-L2, EAD-L1, EAD-EN, and
    ``reached_kappa`` (inputs whose margin is ``>= κ``) and ``mean_margin`` (over inputs with a finite margin)."""
    rows = _rate_rows(sets, limits, detectors, reformer, KAPPA_ATTACKS, "kappa", SEED_TABLE2)
    for key, row in zip(_ordered(sets, KAPPA_ATTACKS), rows):
        margin = np.asarray(sets[key]["margin"], dtype=np.float64)
        finite = margin[np.isfinite(margin)]
        row["reached_kappa"] = int((finite >= row["kappa"]).sum())
        row["mean_margin"] = float(finite.mean()) if finite.size else math.nan
    return rows


def detector_rows(clean_scores: Mapping[str, Any], sets: Mapping[tuple[str, float], Mapping[str, Any]],
                  detectors: Sequence[str], *, resamples: int = RESAMPLES, seed: int = 0) -> list[dict[str, Any]]:
    """One row per detector, set and denominator (attacked, successful): :func:`detector_metrics`'s numbers."""
    return [{"detector": detector, "attack": attack, "strength": float(strength), "over": over,
             **detector_metrics(clean_scores, sets[attack, strength], detector, over=over, resamples=resamples,
                                seed=seed)}
            for detector in detectors for attack, strength in _ordered(sets) for over in DENOMINATORS]


# --- figures -----------------------------------------------------------------------------------------------------

def _sizes(counts: Sequence[int]) -> str:
    return "no sets" if not counts else f"n = {min(counts)}" + (f"-{max(counts)}" if max(counts) > min(counts) else "")


def defense_rate_figure(table1: Sequence[Mapping[str, Any]], table2: Sequence[Mapping[str, Any]], dpi: int) -> Any:
    """Defense rate (%) over all attacked inputs vs ε (PGD, BIM; :func:`table1_rows`) and vs κ (C&W, EAD;
    :func:`table2_rows`), one colour per attack, and per attack its own line style and marker, drawn narrower
    than the attack before it (equal rates stay in sight; a line equal to another's says so in the legend);
    seed 003's numbers thin, dotted and lighter, with crosses, in the same colour."""
    from advflow.workflow.figures import (LEGEND_SIZE, Figure, identical_labels, lighter, line_style, new_figure,
                                          palette, render, style)

    colors = dict(zip(ATTACK_LABELS, palette(len(ATTACK_LABELS))))
    seed_markers = ("x", "+", "1", "2", "3")
    panels = ((table1, "epsilon", "ε (pixels in [0, 1])", SEED_TABLE1),
              (table2, "kappa", "κ (logit margin)", SEED_TABLE2))
    with style():
        figure = new_figure(12.0, 5.0)
        for ax, (rows, strength, xlabel, seed) in zip(figure.subplots(1, 2), panels):
            attacks = [a for a in ATTACK_LABELS if any(row["attack"] == a for row in rows)]
            lines = []
            for attack in attacks:
                ours = sorted((row[strength], 100 * row["defense_rate_attacked"],
                               100 * row.get("defense_rate_attacked_low", math.nan),
                               100 * row.get("defense_rate_attacked_high", math.nan)) for row in rows
                              if row["attack"] == attack)
                lines.append(tuple(np.array(v, dtype=np.float64) for v in zip(*ours)))
            names = [ATTACK_LABELS[a] for a in attacks]
            labels = [f"{name} (ours{equal[len(name):].replace(' (', '; ').rstrip(')')})" for name, equal
                      in zip(names, identical_labels(names, [line[:2] for line in lines]))]
            for i, (attack, (x, rate, low, high), label) in enumerate(zip(attacks, lines, labels)):
                dashes, marker = line_style(i)
                ax.fill_between(x, low, high, color=colors[attack], alpha=0.12, lw=0)
                ax.plot(x, rate, color=colors[attack], ls=dashes, lw=max(2.8 - 0.6 * i, 1.2), marker=marker,
                        ms=max(8.0 - 1.5 * i, 4.0), alpha=0.9, zorder=3 + 0.01 * i, label=label)
            for i, attack in enumerate(attacks):
                if seed.get(attack):
                    ax.plot(*zip(*sorted(seed[attack].items())), color=lighter(colors[attack], 0.3), ls=":", lw=1.2,
                            marker=seed_markers[i % len(seed_markers)], ms=6, mew=1.3, zorder=2,
                            label=f"{ATTACK_LABELS[attack]} (seed 003)")
            if not rows:
                ax.text(0.5, 0.5, "no sets", transform=ax.transAxes, ha="center", va="center")
            ax.set(xlabel=xlabel, ylabel="defense rate (%)", ylim=(0, 100))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=LEGEND_SIZE, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                          frameon=False)
        image = render(figure, dpi)
    caption = (f"Defense rate (%): the share of all attacked inputs of each set "
               f"({_sizes([int(row['inputs']) for row in (*table1, *table2)])}, whether or not the attack fooled the "
               "undefended classifier; seed 003's denominator) that a detector flags or that the classifier gets "
               "right after the reformer, with its 95 % Wilson band, vs ε (PGD, BIM; pixel units) and vs κ (C&W-L2, "
               "EAD-L1, EAD-EN); each attack has its own colour, line style and marker (equal rates: the later "
               "attack's narrower line on top, and \"identical to\" in the legend). Thin, dotted and lighter, "
               f"with crosses: seed 003's Fashion-MNIST Tables 1 and 2; {SEED_TABLE1_CAVEAT}.")
    return Figure("defense_rate.png", image, caption)


def roc_figure(clean_scores: Mapping[str, Any], sets: Mapping[tuple[str, float], Mapping[str, Any]],
               detectors: Sequence[str], dpi: int) -> Any:
    """One ROC panel per detector, three to a row: each set's attacked inputs (positives) against ``clean_scores``
    (negatives), only each attack's strongest set when there are more than :data:`MAX_ROC_CURVES` sets; chance
    dotted. Each set has its own colour, line style and marker, drawn narrower than the set before it, so that
    sets that score alike stay in sight; a curve equal to an earlier one says so in the legend."""
    from advflow.workflow.figures import (LEGEND_SIZE, Figure, identical_labels, line_style, new_figure, palette,
                                          render, style)

    if not detectors:
        raise ValueError("roc_figure needs at least one detector; pass the detectors of the defense config")
    keys = [key for key in _ordered(sets) if np.asarray(sets[key]["index"]).size > 0]
    strongest = len(keys) > MAX_ROC_CURVES
    if strongest:
        keys = [key for key in keys if key == max((k for k in keys if k[0] == key[0]), key=lambda k: float(k[1]))]
    columns = min(3, len(detectors))
    rows = math.ceil(len(detectors) / columns)
    with style():
        figure = new_figure(4.4 * columns, (4.2 + 0.2 * len(keys)) * rows)
        axes = figure.subplots(rows, columns, squeeze=False).ravel()
        for ax in axes[len(detectors):]:
            ax.set_axis_off()
        for ax, detector in zip(axes, detectors):
            ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1.0)
            curves, names = [], []
            for attack, strength in keys:
                fpr, tpr = roc_curve(clean_scores, sets[attack, strength], detector)
                auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # the full curve's area = rank AUC
                name = "ε" if attack in EPSILON_ATTACKS else "κ" if attack in KAPPA_ATTACKS else "strength"
                curves.append((fpr, tpr))
                names.append((f"{ATTACK_LABELS.get(attack, attack)} {name}={float(strength):g}", auc))
            same = identical_labels([n for n, _ in names], curves)
            for i, (color, (fpr, tpr), (label, auc), equal) in enumerate(zip(palette(len(keys)), curves, names, same)):
                dashes, marker = line_style(i)
                note = equal[len(label):]  # " (identical to …)" or ""
                ax.plot(fpr, tpr, color=color, ls=dashes, lw=max(3.0 - 0.5 * i, 1.1), marker=marker,
                        ms=max(7.5 - 1.0 * i, 3.5), markevery=(0.02 + 0.04 * i, 0.22), alpha=0.9,
                        zorder=3 + 0.01 * i, label=f"{label}: AUC {auc:.3f}{note}")
            ax.set(title=detector, xlabel="false-positive rate (clean)", ylabel="true-positive rate (attacked)",
                   xlim=(0, 1), ylim=(0, 1.01))
            ax.legend(fontsize=LEGEND_SIZE, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
        image = render(figure, dpi)
    sizes = _sizes([np.asarray(sets[key]["index"]).size for key in keys])
    drawn = "; only each attack's strongest set is drawn" if strongest else ""
    caption = (f"ROC of each detector: negatives = the {np.asarray(clean_scores['index']).size} clean inputs, "
               f"positives = all attacked inputs of each set ({sizes}, successful or not){drawn}; dotted: chance. "
               f"Each set has its own colour, line style and marker; sets whose scores give the same curve are "
               f"marked \"identical to\" in the legend (the later one's narrower line drawn on top).")
    return Figure("defense_roc.png", image, caption)


def layer_values(table: Mapping[str, Any], detector: str) -> tuple[list[str], np.ndarray]:
    """A detector's per-layer columns of a score table (``layer_<detector>_<layer>``): the layer names and an
    ``(N, L)`` array; no columns: ``([], (N, 0))``."""
    prefix = f"{LAYER_COLUMN_PREFIX}{detector}_"
    names = [name for name in table if name.startswith(prefix)]
    n = len(np.asarray(table["index"]))
    values = np.stack([np.asarray(table[name], dtype=np.float64) for name in names], axis=1) if names else \
        np.zeros((n, 0))
    return [name[len(prefix):] for name in names], values
