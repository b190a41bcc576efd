"""Comparing detectors (docs/method.md, "Defenses and detectors": "Published baselines", "Comparing detectors").

Three pieces of statistics, pure NumPy (scikit-learn only for the supervised combination, imported when it is fitted):

**Supervised layer combination** (:class:`SupervisedCombiner`), as in Lee et al.'s (Mahalanobis) and Ma et al.'s (LID)
reference codes: a logistic regression on per-layer values ``(N, L)`` (standardized, ``StandardScaler`` then
``LogisticRegression`` in one ``Pipeline``, fixed ``random_state``), trained on clean inputs (label 0) and the
adversarial inputs of ONE attack (label 1), optionally with the attack's random controls as further negatives (the
reference codes' Gaussian-noisy inputs, sized like the attack's perturbation). It is kept apart from the unsupervised
detectors (clean data only, our default) and is reported on the attack it saw and on every attack it did not
(:func:`seen_or_unseen`, Lee et al.'s unseen-attack table).

*Which inputs it may be scored on.* Every sweep set is crafted on the same defense seeds, so seed index ``i`` is the
same clean test image in every attack's set and in every control: the combiner is trained on some seeds
(:func:`split_seeds`, or a fold of :func:`fold_seeds`) and refuses to score any seed it was trained on, whatever the
attack (a ValueError naming the overlap). **Cross-fitting** (:func:`cross_fit_scores`) scores every seed anyway: the
seeds (and the clean pool) are cut into K folds, K combiners are trained, each on the other K - 1 folds, and each
seed is scored by the one combiner that held its fold out. So all N seeds enter the AUC instead of one half, and no
score comes from a combiner that saw that seed; the pooled scores mix K fits of nearly the same data (each on
(K-1)/K of it), the usual out-of-fold estimate (scikit-learn's ``cross_val_predict``). Its clean negatives live in a named **pool** of indices, and are refused the same way:

- ``clean_pool="seeds"`` (the default): the clean versions of the defense seeds themselves, indexed by seed, so the
  one split covers them: train on the clean and adversarial versions of the training seeds, score the clean and
  adversarial versions of the scoring seeds. The attacked images and their clean originals are then disjoint between
  training and scoring by construction.
- any other name (e.g. ``"clean"``, the stage's held-out clean images): a separate pool with its own indices
  (``clean_seeds``), split apart with its own :func:`split_seeds`; scoring that pool with ``pool="clean"`` refuses
  the indices the combiner trained on.

The combiner's score is the regression's decision function (the log-odds, higher = more suspicious; monotone in the
probability, without its ties at 0 and 1). Which adversarial inputs it trains on (all attacked inputs, or the
successful ones as Ma et al.'s code keeps) is the caller's choice: pass those rows and their seeds.

**Worst case over attacks** (:func:`worst_case_detected`, :func:`worst_case_scores`, :func:`worst_case_tpr`,
:func:`worst_case_auc`): every attack's set holds a version of each seed; the attacker picks, per seed, the version the
detector misses, so a seed counts as detected only if every attack's version of it is flagged, and the worst-case
score of a seed is the lowest of its versions' scores (with one threshold per detector, "lowest score above the
threshold" is "every version flagged"). Over **attacked** inputs (no ``success_by_attack``, seed 003's denominator)
every version counts, successful or not. Over **successful** inputs (``success_by_attack``, per attack ``(N,)`` bool:
the attack fooled the undefended classifier on that seed) an unsuccessful version is no adversarial input, so the
attacker cannot pick it: a seed's worst case is taken over its successful versions only, and a seed that no attack
fooled is **left out** (its worst-case score is NaN, it is not detected, and :func:`worst_case_seeds` says which seeds
are in; the TPR and AUC are over those seeds, and say how many).

**Ranking with uncertainty** (:func:`paired_auc_difference`, :func:`compare`, :func:`rank_detectors`): the same
inputs go to every detector, so a difference of AUC gets a *paired* percentile bootstrap: each resample draws the
clean indices and the adversarial (seed) indices once, for every detector. Each detector's interval uses the same
draws as :func:`advflow.defenses.metrics.auc_interval` with the same seed, so it equals that interval. Resamples are
weighted counts over the original inputs: a resample's Mann-Whitney U is ``sum_i c_a[i] (C[lo_i] + C[hi_i]) / 2``,
``C`` the cumulative clean counts in sorted-score order and ``lo_i``/``hi_i`` the positions of adversarial score
``i`` among the sorted clean scores (ties count one half), so no resample re-sorts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from advflow.defenses.metrics import RESAMPLES, auc_interval, roc_auc
from advflow.information.shifts import wilson

#: The pool of the defense seeds (adversarial versions, random controls and, by default, the clean originals).
SEED_POOL = "seeds"
VERDICTS = ("better", "worse", "tied within the interval")


# --- supervised layer combination --------------------------------------------------------------------------------

def split_seeds(n: int, *, fraction: float = 0.5, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_seeds, score_seeds): the seed indices ``0 … n-1`` split at random (seeded) into two disjoint, sorted
    halves, ``round(fraction · n)`` of them (at least one, at most ``n - 1``) to train on, the rest to score."""
    n = int(n)
    if n < 2:
        raise ValueError(f"split_seeds needs at least 2 seeds to split into a training and a scoring part; got n={n}")
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise ValueError(f"split_seeds: fraction is the share of seeds to train on, in (0, 1); got {fraction!r}")
    order = np.random.default_rng([int(seed), n]).permutation(n)
    k = min(max(int(round(fraction * n)), 1), n - 1)
    return np.sort(order[:k]), np.sort(order[k:])


def fold_seeds(n: int, *, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold cross-fitting of the seed indices ``0 … n-1``: ``folds`` pairs (train_seeds, score_seeds), the scoring
    parts disjoint, sorted, of sizes differing by at most one and covering every index once (seeded permutation);
    each training part is the rest. ``folds`` is clipped to ``n``."""
    n, folds = int(n), int(folds)
    if n < 2:
        raise ValueError(f"fold_seeds needs at least 2 seeds to cross-fit; got n={n}")
    if folds < 2:
        raise ValueError(f"fold_seeds: folds is the number of parts to cross-fit over, at least 2; got {folds}")
    order = np.random.default_rng([int(seed), n, folds]).permutation(n)
    parts = [np.sort(part) for part in np.array_split(order, min(folds, n))]
    return [(np.setdiff1d(order, part), part) for part in parts]


def _values(values: Any, where: str, columns: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{where}: per-layer values are an (N, L) array, one row per input and one column per layer; "
                         f"got shape {array.shape}")
    if columns is not None and array.shape[1] != columns:
        raise ValueError(f"{where}: {array.shape[1]} layers, the combiner was fitted on {columns}")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: {int((~np.isfinite(array)).sum())} of {array.size} values are not finite")
    return array


def _indices(seeds: Any, n: int, where: str) -> np.ndarray:
    array = np.asarray(seeds).ravel()
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: seed indices must be integers; got dtype {array.dtype}")
    array = array.astype(np.int64)
    if array.size != n:
        raise ValueError(f"{where}: {array.size} seed indices for {n} rows; give one index per row")
    if np.unique(array).size != array.size:
        raise ValueError(f"{where}: repeated seed indices; each seed appears once per set")
    return array


def _overlap_text(overlap: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in overlap[:10])
    return shown + (f", … ({overlap.size} in all)" if overlap.size > 10 else "")


class SupervisedCombiner:
    """Logistic regression on per-layer detector values, trained on one attack (module docstring)."""

    def __init__(self, *, random_state: int = 0, C: float = 1.0, max_iter: int = 1000) -> None:
        self.random_state = int(random_state)
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.attack: str | None = None
        self.clean_pool: str = SEED_POOL
        #: The indices trained on, per pool (``"seeds"``, and the clean pool if it is another one).
        self.trained: dict[str, np.ndarray] = {}
        self.layers: int | None = None
        self.pipeline: Any = None

    @property
    def fitted(self) -> bool:
        return self.pipeline is not None

    def fit(self, clean_values: Any, adversarial_values: Any, *, seeds: Any, attack: str,
            clean_seeds: Any = None, clean_pool: str = SEED_POOL, control_values: Any = None) -> SupervisedCombiner:
        """Train on ``clean_values`` (label 0; ``(M, L)``), ``adversarial_values`` of ``attack`` (label 1; ``(N, L)``,
        row k the version of seed ``seeds[k]``) and, if given, ``control_values`` (label 0; the attack's random
        controls of the same ``seeds``, row by row). ``clean_seeds`` index the clean rows in ``clean_pool``: by
        default the pool is the seeds and ``clean_seeds`` defaults to ``seeds`` (the clean originals of the same
        seeds); with another pool they are required."""
        try:
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import StandardScaler
        except ImportError as error:  # a dependency (pyproject.toml); an environment made before it was one lacks it
            raise ImportError("the supervised layer combination needs scikit-learn (pip install -e . again, or "
                              "pip install scikit-learn)") from error
        if not isinstance(attack, str) or not attack:
            raise ValueError(f"fit: attack is the name of the attack the combiner is trained on; got {attack!r}")
        adversarial = _values(adversarial_values, "adversarial values")
        columns = adversarial.shape[1]
        clean = _values(clean_values, "clean values", columns)
        seed_index = _indices(seeds, adversarial.shape[0], "seeds")
        if clean_seeds is None:
            if clean_pool != SEED_POOL:
                raise ValueError(f"fit: clean_pool={clean_pool!r} is a pool of its own; give clean_seeds, the "
                                 f"indices of the clean rows in it")
            clean_seeds = seed_index
        clean_index = _indices(clean_seeds, clean.shape[0], "clean_seeds")
        parts, labels = [clean, adversarial], [np.zeros(clean.shape[0]), np.ones(adversarial.shape[0])]
        if control_values is not None:
            control = _values(control_values, "control values", columns)
            if control.shape[0] != adversarial.shape[0]:
                raise ValueError(f"control values: {control.shape[0]} rows, the adversarial values "
                                 f"{adversarial.shape[0]}; the controls are the same seeds, row by row")
            parts.append(control)
            labels.append(np.zeros(control.shape[0]))
        if clean.shape[0] == 0 or adversarial.shape[0] == 0:
            raise ValueError(f"fit needs clean and adversarial inputs; got {clean.shape[0]} clean and "
                             f"{adversarial.shape[0]} adversarial")
        pipeline = Pipeline([("scale", StandardScaler()),
                             ("regression", LogisticRegression(C=self.C, max_iter=self.max_iter,
                                                               random_state=self.random_state))])
        pipeline.fit(np.concatenate(parts), np.concatenate(labels))
        self.pipeline, self.layers, self.attack, self.clean_pool = pipeline, columns, attack, clean_pool
        self.trained = {SEED_POOL: np.sort(seed_index)}
        self.trained[clean_pool] = np.union1d(self.trained.get(clean_pool, np.empty(0, np.int64)), clean_index)
        return self

    def score(self, values: Any, *, seeds: Any, pool: str = SEED_POOL) -> np.ndarray:
        """``(N,)`` scores (the log-odds of "adversarial") of ``values`` ``(N, L)``, row k being index ``seeds[k]``
        of ``pool`` (any attack's version, a control or a clean original of that seed; or a clean image of a
        separate pool). A ValueError if any index was trained on."""
        if not self.fitted:
            raise ValueError("the combiner is not fitted; call fit on the training seeds first")
        array = _values(values, "values", self.layers)
        index = _indices(seeds, array.shape[0], "seeds")
        overlap = np.intersect1d(index, self.trained.get(pool, np.empty(0, np.int64)))
        if overlap.size:
            raise ValueError(f"the combiner was trained on {pool} {_overlap_text(overlap)} (attack {self.attack}); "
                             f"score only held-out indices (split_seeds' scoring part)")
        if array.shape[0] == 0:
            return np.empty(0)
        return self.pipeline.decision_function(array).astype(np.float64)


def cross_fit_scores(clean_values: Any, adversarial_values: Any, scored: Mapping[Any, Any], *, attack: str,
                     folds: int = 5, seed: int = 0, control_values: Any = None,
                     random_state: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Out-of-fold scores of a supervised combiner trained on ``attack`` (module docstring, "Cross-fitting").

    ``clean_values`` ``(M, L)``: a separate clean pool (``"clean"``); ``adversarial_values`` ``(N, L)`` and, if given,
    ``control_values`` ``(N, L)``: the training attack's versions of seeds ``0 … N-1``; ``scored``: name -> ``(N, L)``,
    every set to score, row ``i`` the version of seed ``i``. The seeds and the clean pool are each cut into ``folds``
    parts (:func:`fold_seeds`, seeds ``seed`` and ``seed + 1``); fold k's combiner is fitted on the other parts and
    scores only part k, so it refuses (ValueError) any index it trained on. Returns (clean scores ``(M,)``, name ->
    ``(N,)`` scores), every entry filled by a combiner that held it out."""
    adversarial = _values(adversarial_values, "adversarial values")
    clean = _values(clean_values, "clean values", adversarial.shape[1])
    n, m = adversarial.shape[0], clean.shape[0]
    sets = {name: _values(values, f"scored set {name}", adversarial.shape[1]) for name, values in scored.items()}
    for name, values in sets.items():
        if values.shape[0] != n:
            raise ValueError(f"scored set {name}: {values.shape[0]} rows for {n} seeds; one row per seed, in order")
    control = None if control_values is None else _values(control_values, "control values", adversarial.shape[1])
    k = min(int(folds), n, m)
    clean_out, out = np.full(m, np.nan), {name: np.full(n, np.nan) for name in sets}
    for (train, held), (clean_train, clean_held) in zip(fold_seeds(n, folds=k, seed=seed),
                                                        fold_seeds(m, folds=k, seed=seed + 1)):
        combiner = SupervisedCombiner(random_state=random_state).fit(
            clean[clean_train], adversarial[train], seeds=train, attack=attack, clean_seeds=clean_train,
            clean_pool="clean", control_values=None if control is None else control[train])
        clean_out[clean_held] = combiner.score(clean[clean_held], seeds=clean_held, pool="clean")
        for name, values in sets.items():
            out[name][held] = combiner.score(values[held], seeds=held)
    return clean_out, out


def seen_or_unseen(combiner: SupervisedCombiner, attack: str) -> str:
    """"seen" if ``combiner`` was trained on ``attack`` (the same name, e.g. an attack or an attack@strength, as the
    caller names sets), else "unseen"."""
    if not combiner.fitted:
        raise ValueError("the combiner is not fitted; it has seen no attack yet")
    return "seen" if attack == combiner.attack else "unseen"


# --- worst case over attacks -------------------------------------------------------------------------------------

def _by_attack(arrays: Mapping[str, Any], where: str, kind: str) -> tuple[list[str], np.ndarray]:
    """The attacks and an ``(A, N)`` array of their columns; a ValueError unless every column has the same N."""
    if not arrays:
        raise ValueError(f"{where}: no attack; give one (N,) array per attack")
    names = list(arrays)
    columns = [np.asarray(arrays[name]) for name in names]
    for name, column in zip(names, columns):
        if column.ndim != 1:
            raise ValueError(f"{where}: attack {name} has shape {column.shape}; give one (N,) array per attack")
    sizes = {name: column.size for name, column in zip(names, columns)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{where}: attacks have different numbers of seeds "
                         f"({', '.join(f'{k}: {v}' for k, v in sizes.items())}); every attack's set is crafted on the "
                         f"same seeds, in the same order")
    if kind == "bool":
        for name, column in zip(names, columns):
            if column.dtype != bool:
                raise ValueError(f"{where}: attack {name} has dtype {column.dtype}; give booleans")
        return names, np.stack(columns).astype(bool)
    stacked = np.stack(columns).astype(np.float64)
    if np.isnan(stacked).any():
        raise ValueError(f"{where}: {int(np.isnan(stacked).sum())} NaN scores; a detector must score every input")
    return names, stacked


def _success(success_by_attack: Mapping[str, Any] | None, names: list[str], n: int) -> np.ndarray:
    if success_by_attack is None:
        return np.ones((len(names), n), dtype=bool)
    if set(success_by_attack) != set(names):
        raise ValueError(f"success_by_attack has attacks {sorted(success_by_attack)}, the scores or flags "
                         f"{sorted(names)}; give one success column per attack")
    _, success = _by_attack({name: success_by_attack[name] for name in names}, "success_by_attack", "bool")
    if success.shape[1] != n:
        raise ValueError(f"success_by_attack: {success.shape[1]} seeds, the scores or flags {n}")
    return success


def worst_case_seeds(success_by_attack: Mapping[str, Any]) -> np.ndarray:
    """``(N,)`` bool: the seeds in the worst case over successful inputs, those at least one attack fooled on."""
    _, success = _by_attack(success_by_attack, "success_by_attack", "bool")
    return success.any(axis=0)


def worst_case_detected(flags_by_attack: Mapping[str, Any], *,
                        success_by_attack: Mapping[str, Any] | None = None) -> np.ndarray:
    """``(N,)`` bool: seed i is detected only if every attack's version of it is flagged; with
    ``success_by_attack``, every *successful* version (the attacker can pick no other), and a seed no attack fooled
    is left out: False here, and outside :func:`worst_case_seeds`, which is the denominator."""
    names, flags = _by_attack(flags_by_attack, "flags_by_attack", "bool")
    success = _success(success_by_attack, names, flags.shape[1])
    return (flags | ~success).all(axis=0) & success.any(axis=0)


def worst_case_scores(scores_by_attack: Mapping[str, Any], *,
                      success_by_attack: Mapping[str, Any] | None = None) -> np.ndarray:
    """``(N,)``: each seed's lowest score over the attacks' versions of it (the attacker picks the version the
    detector finds least suspicious); with ``success_by_attack``, over the successful versions, NaN for a seed no
    attack fooled (left out)."""
    names, scores = _by_attack(scores_by_attack, "scores_by_attack", "float")
    success = _success(success_by_attack, names, scores.shape[1])
    worst = np.where(success, scores, np.inf).min(axis=0)
    return np.where(success.any(axis=0), worst, np.nan)


def worst_case_tpr(scores_by_attack: Mapping[str, Any], limit: float, *,
                   success_by_attack: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The worst-case TPR at threshold ``limit`` (flagged: score > limit, :func:`advflow.defenses.flagged`): the
    share of seeds whose every (successful) version is flagged, with its 95 % Wilson interval over the ``n`` seeds
    in (``left_out``: seeds no attack fooled); NaN with ``n = 0``."""
    worst = worst_case_scores(scores_by_attack, success_by_attack=success_by_attack)
    inside = ~np.isnan(worst)
    n = int(inside.sum())
    tpr = float((worst[inside] > float(limit)).mean()) if n else math.nan
    low, high = wilson(tpr, n)
    return {"tpr": tpr, "tpr_low": low, "tpr_high": high, "n": n, "left_out": int(worst.size - n)}


def worst_case_auc(clean_scores: Any, scores_by_attack: Mapping[str, Any], *,
                   success_by_attack: Mapping[str, Any] | None = None, resamples: int = RESAMPLES,
                   seed: int = 0) -> dict[str, Any]:
    """The worst-case ROC AUC: :func:`worst_case_scores` (positives, the seeds in) against ``clean_scores``, with
    :func:`advflow.defenses.metrics.auc_interval`'s 95 % bootstrap interval; NaN with no seed in."""
    clean = _scores(clean_scores, "clean scores")
    worst = worst_case_scores(scores_by_attack, success_by_attack=success_by_attack)
    positives = worst[~np.isnan(worst)]
    auc = roc_auc(clean, positives) if positives.size and clean.size else math.nan
    low, high = auc_interval(clean, positives, resamples=resamples, seed=seed)
    return {"auc": auc, "auc_low": low, "auc_high": high, "n": int(positives.size), "n_clean": int(clean.size),
            "left_out": int(worst.size - positives.size)}


# --- ranking with uncertainty ------------------------------------------------------------------------------------

def _scores(values: Any, where: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{where}: give one score per input, an (N,) array; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: {int((~np.isfinite(array)).sum())} of {array.size} scores are not finite")
    return array


def _counts(rng: np.random.Generator, resamples: int, n: int) -> np.ndarray:
    """``(resamples, n)``: how often each input is drawn in each resample (auc_interval's draws)."""
    draws = rng.integers(0, n, size=(resamples, n)) + (np.arange(resamples) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _bootstrap_aucs(clean: np.ndarray, adversarial: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, D)``: the AUC of each of D detectors (rows of ``clean`` ``(D, M)`` and ``adversarial``
    ``(D, N)``) in each paired resample: the same clean and adversarial draws for every detector."""
    n_a, n_c = adversarial.shape[1], clean.shape[1]
    if int(resamples) < 1:
        raise ValueError(f"resamples must be at least 1; got {resamples}")
    rng = np.random.default_rng([int(seed), n_a, n_c])  # auc_interval's generator and order of draws
    count_a, count_c = _counts(rng, int(resamples), n_a), _counts(rng, int(resamples), n_c)
    aucs = np.empty((int(resamples), clean.shape[0]))
    for d in range(clean.shape[0]):
        order = np.argsort(clean[d], kind="mergesort")
        ordered = clean[d][order]
        cumulative = np.zeros((int(resamples), n_c + 1))
        np.cumsum(count_c[:, order], axis=1, out=cumulative[:, 1:])
        lo = np.searchsorted(ordered, adversarial[d], side="left")
        hi = np.searchsorted(ordered, adversarial[d], side="right")
        wins = cumulative[:, lo] + cumulative[:, hi]  # twice (clean below + half the ties), per adversarial input
        aucs[:, d] = np.einsum("rn,rn->r", count_a, wins) / 2.0 / (n_a * n_c)
    return aucs


def _stack(arrays: Sequence[Any], where: str) -> np.ndarray:
    columns = [_scores(a, f"{where} {i}") for i, a in enumerate(arrays)]
    if len({c.size for c in columns}) > 1:
        raise ValueError(f"{where}: the detectors score different numbers of inputs ({[c.size for c in columns]}); "
                         f"the same inputs go to every detector, in the same order")
    if columns[0].size == 0:
        raise ValueError(f"{where}: no input; an AUC needs clean and adversarial inputs")
    return np.stack(columns)


def compare(low: float, high: float) -> str:
    """The verdict on a difference of AUC (detector a − detector b) from its 95 % interval: "better" (above 0),
    "worse" (below 0), "tied within the interval" (contains 0); "n/a" if the interval is missing."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return "better" if low > 0 else "worse" if high < 0 else "tied within the interval"


def paired_auc_difference(clean_a: Any, adv_a: Any, clean_b: Any, adv_b: Any, *, resamples: int = RESAMPLES,
                          seed: int = 0) -> tuple[float, float, float]:
    """(AUC(a) − AUC(b), low, high): the difference of the two detectors' ROC AUCs on the same inputs (clean row k
    of a and of b is the same input, adversarial too), with its 95 % paired percentile-bootstrap interval."""
    clean = _stack([clean_a, clean_b], "clean scores")
    adversarial = _stack([adv_a, adv_b], "adversarial scores")
    aucs = _bootstrap_aucs(clean, adversarial, resamples, seed)
    low, high = np.percentile(aucs[:, 0] - aucs[:, 1], [2.5, 97.5])
    estimate = roc_auc(clean[0], adversarial[0]) - roc_auc(clean[1], adversarial[1])
    return float(estimate), float(low), float(high)


def rank_detectors(clean_scores: Mapping[str, Any], adversarial_scores: Mapping[str, Any], *,
                   resamples: int = RESAMPLES, seed: int = 0) -> list[dict[str, Any]]:
    """One row per detector, best first: ``detector``, ``auc`` with its 95 % interval (``auc_low``, ``auc_high``;
    equal to :func:`advflow.defenses.metrics.auc_interval` with the same seed), ``rank`` = 1 + the number of detectors
    significantly better than it (its difference's interval above 0; detectors tied within their intervals may
    share a rank), ``n_clean``, ``n_adversarial`` and ``comparisons``: ``{other: {difference, low, high, verdict}}``,
    the AUC of this detector minus the other's with its paired interval and :func:`compare`'s verdict. Rows are
    ordered by rank, then AUC (highest first), then name. :func:`pair_rows` flattens the comparisons."""
    names = list(clean_scores)
    if not names:
        raise ValueError("rank_detectors: no detector; give each detector's clean and adversarial scores")
    if set(adversarial_scores) != set(names):
        raise ValueError(f"rank_detectors: clean scores of {sorted(names)}, adversarial scores of "
                         f"{sorted(adversarial_scores)}; give both for every detector")
    clean = _stack([clean_scores[d] for d in names], "clean scores")
    adversarial = _stack([adversarial_scores[d] for d in names], "adversarial scores")
    aucs = _bootstrap_aucs(clean, adversarial, resamples, seed)
    point = [roc_auc(clean[d], adversarial[d]) for d in range(len(names))]
    bounds = np.percentile(aucs, [2.5, 97.5], axis=0)
    rows = []
    for d, name in enumerate(names):
        comparisons = {}
        for e, other in enumerate(names):
            if e == d:
                continue
            low, high = np.percentile(aucs[:, d] - aucs[:, e], [2.5, 97.5])
            comparisons[other] = {"difference": point[d] - point[e], "low": float(low), "high": float(high),
                                  "verdict": compare(float(low), float(high))}
        rows.append({"detector": name, "auc": point[d], "auc_low": float(bounds[0, d]),
                     "auc_high": float(bounds[1, d]), "n_clean": int(clean.shape[1]),
                     "n_adversarial": int(adversarial.shape[1]), "comparisons": comparisons,
                     "rank": 1 + sum(c["verdict"] == "worse" for c in comparisons.values())})
    return sorted(rows, key=lambda row: (row["rank"], -row["auc"], row["detector"]))


def pair_rows(ranking: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each pair of detectors once, in the ranking's order: ``detector``, ``other``, ``difference`` (AUC of detector
    − AUC of other), ``low``, ``high``, ``verdict`` (of detector against other)."""
    rows, done = [], set()
    for row in ranking:
        for other, c in row["comparisons"].items():
            if other not in done:
                rows.append({"detector": row["detector"], "other": other, **c})
        done.add(row["detector"])
    return rows
