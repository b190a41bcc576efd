"""Findings decided by statistics (advflow.report.evidence and each question module's cases) and the literal
reading applied to the paper's own published numbers (each question module's literal reading).

The paper's Tables III and V are typed in below; the findings code must reach the paper's conclusions on
them: Q2 holds literally (every attack moves the OIP further than the IIP), Q3 holds for JSMA and C&W (the
gap between the sets targeting the two models is larger on the compressed model), not for FGSM."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from advflow.report import evidence as decisions
from advflow.report import q1, q2, q3, q4, q5
from advflow.information.shifts import FAILS, HOLDS, INCONCLUSIVE

# Ji & Wang, Table III: difference of IIPs and OIPs between normal and adversarial inputs (CIFAR-10).
PAPER_TABLE_III = {"fgsm": (0.0040, 0.0117), "igsm": (0.0043, 0.0162), "deepfool": (0.0030, 0.0157),
                   "cw": (0.0036, 0.0140)}
# Ji & Wang, Table V: IIP, OIP and average distance between the sets targeting the original and the
# compressed model, measured on each model.
PAPER_TABLE_V = {
    ("fgsm", "good_init"): (0.0026, 0.0066, 0.0046), ("fgsm", "compressed"): (0.0021, 0.0028, 0.0025),
    ("jsma", "good_init"): (0.0019, 0.0039, 0.0029), ("jsma", "compressed"): (0.0029, 0.0116, 0.0072),
    ("cw", "good_init"): (0.0010, 0.0040, 0.0025), ("cw", "compressed"): (0.0015, 0.0056, 0.0036),
}
# Ji & Wang, Q4: OIP distance from normal of the regular and the adaptive JSMA on the distilled model.
PAPER_Q4 = {"jsma_control": 0.0033, "jsma_adaptive": 0.0219}


def test_literal_q2_on_the_papers_table_iii_holds():
    rows = [{"attack": a, "iip_distance": iip, "oip_distance": oip} for a, (iip, oip) in PAPER_TABLE_III.items()]
    finding = q2.attack_mechanisms(rows)
    assert finding.verdict == "holds" and finding.holds is True
    assert "holds for 4 of 4 attacks" in finding.text


@pytest.mark.parametrize("path", ["oip", "iip"])
def test_literal_q3_on_the_papers_table_v_holds_for_jsma_and_cw(path):
    rows = [{"attack": a, "measured_on": m, "iip_gap": iip, "oip_gap": oip, "average_gap": avg}
            for (a, m), (iip, oip, avg) in PAPER_TABLE_V.items()]
    finding = q3.model_complexity(rows, path=path)
    assert finding.numbers["holding_attacks"] == ["jsma", "cw"]
    assert finding.verdict == "holds in part" and "for 2 of 3 attacks" in finding.text


def test_literal_q4_on_the_papers_distances_holds():
    rows = [{"attack": a, "oip_distance": d, "success_rate": 0.0 if a == "jsma_control" else 0.3132}
            for a, d in PAPER_Q4.items()]
    assert q4.adaptive_attack(rows).verdict == "holds"


# ---------------------------------------------------------------------------------------------------------
# The statistical reading on planted per-input paths

N, K = 40, 4


@dataclass
class _Paths:
    mu_s: np.ndarray
    mu_t: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    bias_s: np.ndarray | None = None
    bias_t: np.ndarray | None = None


class _Results:
    """What evidence.Evidence reads: per-input paths by (model, set) and the set files under root."""

    def __init__(self, root: Path) -> None:
        self.files = SimpleNamespace(root=root)
        self.paths: dict[tuple[str, str], _Paths] = {}

    def input_paths(self, model: str, set_: str) -> _Paths:
        return self.paths[(model, set_)]

    def add_set(self, target: str, attack: str, success: np.ndarray) -> None:
        path = self.files.root / "adv" / target / f"{attack}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as h5:
            h5["success"] = success
            h5["norms_r/l0"] = np.where(success, 5.0, 0.0)
            h5["norms_r/l2"] = np.where(success, 1.0, 0.0)


def _planted_run(tmp_path: Path, *, oip_shift: float, iip_shift: float, control_shift: float,
                 target_maps_1x1: bool = False) -> _Results:
    rng = np.random.default_rng(0)
    run = _Results(tmp_path)
    labels = np.zeros(N, dtype=int)
    base_s, base_t = rng.uniform(0.3, 0.6, K), rng.uniform(0.1, 0.3, K)

    def paths(shift_s: float, shift_t: float, seed_noise: tuple[np.ndarray, np.ndarray] | None = None) -> _Paths:
        s = (seed_noise[0] if seed_noise else base_s + rng.normal(0, 0.02, (N, K))) + shift_s * 0.02
        t = (seed_noise[1] if seed_noise else base_t + rng.normal(0, 0.02, (N, K))) + shift_t * 0.02
        s = s + rng.normal(0, 0.002, (N, K)) if seed_noise else s
        t = t + rng.normal(0, 0.002, (N, K)) if seed_noise else t
        if target_maps_1x1:
            t = np.zeros_like(t)
        return _Paths(s, t, labels, labels)

    run.paths[("good_init", "normal_train")] = paths(0, 0)
    seeds = paths(0, 0)
    run.paths[("good_init", "normal_test")] = seeds
    noise = (seeds.mu_s, seeds.mu_t)
    run.paths[("good_init", "fgsm@good_init")] = paths(iip_shift, oip_shift, noise)
    run.paths[("good_init", "random_fgsm@good_init")] = paths(control_shift / 3, control_shift, noise)
    run.add_set("good_init", "fgsm", np.ones(N, dtype=bool))
    return run


def _evidence(run: _Results) -> decisions.Evidence:
    return decisions.Evidence(run, resamples=500, seed=0)


def test_q2_holds_when_the_oip_shift_exceeds_the_iip_shift_and_the_control(tmp_path):
    case = q2.attack_case(_evidence(_planted_run(tmp_path, oip_shift=2.0, iip_shift=0.2, control_shift=0.3)),
                               "good_init", "fgsm")
    assert case.verdict == HOLDS, case
    assert case.claims == {"oip_minus_iip": HOLDS, "oip_minus_control": HOLDS}
    oip = case.intervals["oip_shift"]
    assert oip.lower <= oip.estimate <= oip.upper and oip.estimate > 0


def test_q2_is_inconclusive_when_the_control_shifts_as_much(tmp_path):
    case = q2.attack_case(_evidence(_planted_run(tmp_path, oip_shift=2.0, iip_shift=0.2, control_shift=2.0)),
                               "good_init", "fgsm")
    assert case.claims["oip_minus_iip"] == HOLDS
    assert case.claims["oip_minus_control"] == INCONCLUSIVE and case.verdict == INCONCLUSIVE


def test_q2_fails_when_the_iip_moves_more(tmp_path):
    case = q2.attack_case(_evidence(_planted_run(tmp_path, oip_shift=0.2, iip_shift=3.0, control_shift=0.0)),
                               "good_init", "fgsm")
    assert case.claims["oip_minus_iip"] == FAILS and case.verdict == FAILS


def test_one_by_one_target_maps_are_flagged_as_carrying_no_information(tmp_path):
    run = _planted_run(tmp_path, oip_shift=2.0, iip_shift=0.2, control_shift=0.0, target_maps_1x1=True)
    case = q2.attack_case(_evidence(run), "good_init", "fgsm")
    assert case.verdict == decisions.NO_INFORMATION and "no information" in case.notes[0]


def test_too_few_successes_is_a_premise_not_met(tmp_path):
    run = _planted_run(tmp_path, oip_shift=2.0, iip_shift=0.2, control_shift=0.0)
    run.add_set("good_init", "fgsm", np.eye(1, N, dtype=bool)[0])  # one successful input
    case = q2.attack_case(_evidence(run), "good_init", "fgsm")
    assert case.verdict == decisions.PREMISE and "1 successful" in case.notes[0]


def test_toggled_estimator_adds_back_the_subtracted_bias(tmp_path):
    run = _planted_run(tmp_path, oip_shift=2.0, iip_shift=0.2, control_shift=0.0)
    for p in run.paths.values():
        p.bias_s, p.bias_t = np.full((N, K), 0.01), np.full((N, K), 0.02)
    corrected = decisions.Evidence(run, resamples=10, seed=0, corrected=True, toggled=True)
    raw = decisions.Evidence(run, resamples=10, seed=0, corrected=False, toggled=True)
    mu = run.paths[("good_init", "normal_test")].mu_t
    np.testing.assert_allclose(corrected.mu("good_init", "normal_test", "oip"), mu + 0.02)
    np.testing.assert_allclose(raw.mu("good_init", "normal_test", "oip"), mu - 0.02)


def test_overall_labels():
    case = lambda v: decisions.Case("q2", "a", v, 10)  # noqa: E731
    assert decisions.overall([case(HOLDS), case(HOLDS)]) == HOLDS
    assert decisions.overall([case(HOLDS), case(INCONCLUSIVE)]) == "holds in part"
    assert decisions.overall([case(FAILS), case(INCONCLUSIVE)]) == FAILS
    assert decisions.overall([case(INCONCLUSIVE)]) == INCONCLUSIVE
    assert decisions.overall([case(decisions.PREMISE)]) == decisions.PREMISE
    assert decisions.overall([case(HOLDS), case(decisions.PREMISE)]) == "holds in part"


# ---------------------------------------------------------------------------------------------------------
# Planted cases of every question (Q1, Q3, Q4, Q5 as Q2 above): a planted effect gives "holds", the reversed
# effect "fails", no effect "inconclusive"; estimates are checked against shifts computed by hand with numpy.

SIGMA = 0.02  # the normal inputs' spread per layer: shifts are planted in units of it


@dataclass
class _StepPaths(_Paths):
    seed: np.ndarray | None = None
    step: np.ndarray | None = None


def _normal_inputs(run: _Results, model: str, rng: np.random.Generator, n: int = N) -> _Paths:
    """normal_train and normal_test (the seeds) on ``model``, both spread SIGMA per layer; returns the seeds."""
    labels = np.zeros(n, dtype=int)
    base_s, base_t = rng.uniform(0.3, 0.6, K), rng.uniform(0.1, 0.3, K)
    for name in ("normal_train", "normal_test"):
        run.paths[(model, name)] = _Paths(base_s + rng.normal(0, SIGMA, (n, K)), base_t + rng.normal(0, SIGMA, (n, K)),
                                          labels, labels)
    return run.paths[(model, "normal_test")]


def _per_input(value, n: int) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    return np.broadcast_to(value.reshape(-1, 1) if value.ndim else value, (n, K))


def _moved(reference: _Paths, rng: np.random.Generator, oip, iip=0.0, noise: float = 1.0,
           prediction: np.ndarray | None = None) -> _Paths:
    """``reference``'s paths moved by ``oip`` (``iip``) normal spreads (a number or one per input), plus paired
    noise of ``noise`` spreads per input and layer."""
    n = reference.mu_t.shape[0]
    mu_s = reference.mu_s + SIGMA * (_per_input(iip, n) + noise * rng.standard_normal((n, K)))
    mu_t = reference.mu_t + SIGMA * (_per_input(oip, n) + noise * rng.standard_normal((n, K)))
    return _Paths(mu_s, mu_t, reference.label, reference.label if prediction is None else prediction)


def _write_set(run: _Results, target: str, attack: str, success: np.ndarray) -> None:
    path = run.files.root / "adv" / target / f"{attack}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5["success"] = np.asarray(success, dtype=bool)
        h5["norms_r/l0"] = np.where(success, 5.0, 1.0)
        h5["norms_r/l2"] = np.where(success, 1.0, 0.5)


def _hand_scale(run: _Results, model: str, path: str = "oip") -> np.ndarray:
    """sigma_k by hand: the standard deviation over normal_train AND the seeds (normal_test), ddof 1."""
    key = "mu_t" if path == "oip" else "mu_s"
    both = np.concatenate([getattr(run.paths[(model, "normal_train")], key),
                           getattr(run.paths[(model, "normal_test")], key)])
    return both.std(axis=0, ddof=1)


def _hand_shift(run: _Results, model: str, set_: str, reference: str, index=None, path: str = "oip") -> float:
    """(1/K) sum_k |mean_i (mu_k(set_i) - mu_k(reference_i))| / sigma_k, by hand."""
    key = "mu_t" if path == "oip" else "mu_s"
    diff = getattr(run.paths[(model, set_)], key) - getattr(run.paths[(model, reference)], key)
    if index is not None:
        diff = diff[index]
    return float(np.mean(np.abs(diff.mean(axis=0)) / _hand_scale(run, model, path)))


# --- the normal spread (evidence.Evidence.scale) ---------------------------------------------------------

def test_the_normal_spread_is_taken_over_normal_train_and_the_seeds(tmp_path):
    """Seeds spread five times wider than normal_train; on layer 1 normal_train is constant but the seeds are not
    (the layer carries information); on layer 2 both are the same constant (no information: NaN)."""
    rng = np.random.default_rng(7)
    run = _Results(tmp_path)
    labels = np.zeros(N, dtype=int)
    train_t, seeds_t = 0.2 + rng.normal(0, 0.01, (N, K)), 0.2 + rng.normal(0, 0.05, (N, K))
    train_t[:, 1] = 0.3
    train_t[:, 2] = seeds_t[:, 2] = 0.1
    run.paths[("good_init", "normal_train")] = _Paths(train_t.copy(), train_t.copy(), labels, labels)
    run.paths[("good_init", "normal_test")] = _Paths(seeds_t.copy(), seeds_t.copy(), labels, labels)
    scale = _evidence(run).scale("good_init", "oip")
    by_hand = np.concatenate([train_t, seeds_t]).std(axis=0, ddof=1)
    np.testing.assert_allclose(scale[[0, 1, 3]], by_hand[[0, 1, 3]], rtol=1e-12)
    assert math.isnan(scale[2])
    assert scale[0] > 2 * train_t[:, 0].std(ddof=1)  # the seeds' wider spread counts
    assert not decisions.no_information(_evidence(run), "good_init", "oip")
    # every delta divides by it
    adv = seeds_t + 0.01
    run.paths[("good_init", "fgsm@good_init")] = _Paths(adv, adv, labels, labels)
    deltas = _evidence(run).deltas("good_init", "fgsm@good_init", "normal_test", "oip")
    np.testing.assert_allclose(deltas[:, [0, 1, 3]], (adv - seeds_t)[:, [0, 1, 3]] / by_hand[[0, 1, 3]], rtol=1e-9)


def test_q2_estimates_equal_the_shifts_computed_by_hand_over_the_successful_inputs(tmp_path):
    """Q2 reads only the successful inputs: the failed ones are planted with a large IIP shift that would flip the
    case if they were counted."""
    rng = np.random.default_rng(8)
    run = _Results(tmp_path)
    seeds = _normal_inputs(run, "good_init", rng)
    success = np.arange(N) >= 10
    run.paths[("good_init", "fgsm@good_init")] = _moved(seeds, rng, oip=np.where(success, 2.0, 0.0),
                                                        iip=np.where(success, 0.3, 8.0))
    run.paths[("good_init", "random_fgsm@good_init")] = _moved(seeds, rng, oip=0.3, iip=0.1)
    _write_set(run, "good_init", "fgsm", success)
    case = q2.attack_case(_evidence(run), "good_init", "fgsm")
    assert case.inputs == 30 and case.verdict == HOLDS, case
    index = np.flatnonzero(success)
    oip = _hand_shift(run, "good_init", "fgsm@good_init", "normal_test", index)
    iip = _hand_shift(run, "good_init", "fgsm@good_init", "normal_test", index, path="iip")
    control = _hand_shift(run, "good_init", "random_fgsm@good_init", "normal_test", index)
    assert case.intervals["oip_shift"].estimate == pytest.approx(oip, rel=1e-9)
    assert case.intervals["iip_shift"].estimate == pytest.approx(iip, rel=1e-9)
    assert case.intervals["oip_minus_iip"].estimate == pytest.approx(oip - iip, rel=1e-9)
    assert case.intervals["oip_minus_control"].estimate == pytest.approx(oip - control, rel=1e-9)


@pytest.mark.parametrize(("successful", "verdict"), [(decisions.MIN_INPUTS, HOLDS),
                                                     (decisions.MIN_INPUTS - 1, decisions.PREMISE)])
def test_q2_needs_at_least_min_inputs_successful_inputs(tmp_path, successful, verdict):
    run = _planted_run(tmp_path, oip_shift=4.0, iip_shift=0.0, control_shift=0.0)
    run.add_set("good_init", "fgsm", np.arange(N) < successful)
    assert q2.attack_case(_evidence(run), "good_init", "fgsm").verdict == verdict


# --- Q1: JSMA's trajectories vs random trajectories ------------------------------------------------------

STEPS = 4


def _q1_run(tmp_path: Path, *, jsma, control, success: np.ndarray) -> _Results:
    """Trajectories of N seeds, STEPS steps each (rows shuffled); the last step of each moves the OIP by ``jsma``
    (``control``) normal spreads from step 0 (a number or one per seed)."""
    rng = np.random.default_rng(9)
    run = _Results(tmp_path)
    seeds = _normal_inputs(run, "good_init", rng)
    order = rng.permutation(N * STEPS)
    for name, planted in (("trajectory@good_init", jsma), ("random_trajectory@good_init", control)):
        last = _moved(seeds, rng, oip=planted, iip=planted)
        middle = _moved(seeds, rng, oip=0.5, iip=0.5)
        steps = [seeds, middle, middle, last]
        mu_s = np.concatenate([p.mu_s for p in steps])[order]
        mu_t = np.concatenate([p.mu_t for p in steps])[order]
        seed = np.tile(np.arange(N), STEPS)[order].astype(str)
        step = np.repeat(np.arange(STEPS), N)[order]
        labels = np.zeros(N * STEPS, dtype=int)
        run.paths[("good_init", name)] = _StepPaths(mu_s, mu_t, labels, labels, seed=seed, step=step)
    path = tmp_path / "trajectories" / "good_init" / "jsma.h5"
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as h5:
        h5["success"] = success
    return run


def _q1_hand_shift(run: _Results, set_: str, index: np.ndarray) -> float:
    paths = run.paths[("good_init", set_)]
    first = np.array([np.flatnonzero((paths.seed == str(s)) & (paths.step == 0))[0] for s in index])
    last = np.array([np.flatnonzero((paths.seed == str(s)) & (paths.step == STEPS - 1))[0] for s in index])
    diff = paths.mu_t[last] - paths.mu_t[first]
    return float(np.mean(np.abs(diff.mean(axis=0)) / _hand_scale(run, "good_init")))


@pytest.mark.parametrize(("jsma", "control", "verdict"), [(2.0, 0.5, HOLDS), (0.5, 2.0, FAILS),
                                                          (1.5, 1.5, INCONCLUSIVE)])
def test_q1_planted_trajectories_hold_fail_or_are_inconclusive(tmp_path, jsma, control, verdict):
    success = np.arange(N) >= 8
    run = _q1_run(tmp_path, jsma=np.where(success, jsma, 0.0), control=np.where(success, control, 6.0),
                  success=success)
    case = q1.trajectory_case(_evidence(run))
    assert case.inputs == 32 and case.numbers == {"recorded": N, "successful": 32}
    assert case.verdict == verdict, case
    index = np.flatnonzero(success)
    expected = (_q1_hand_shift(run, "trajectory@good_init", index)
                - _q1_hand_shift(run, "random_trajectory@good_init", index))
    assert case.intervals["oip_minus_control"].estimate == pytest.approx(expected, rel=1e-9)


def test_q1_needs_min_inputs_successful_trajectories(tmp_path):
    for successful, verdict in ((decisions.MIN_INPUTS, HOLDS), (decisions.MIN_INPUTS - 1, decisions.PREMISE)):
        success = np.arange(N) < successful
        run = _q1_run(tmp_path / str(successful), jsma=6.0, control=0.0, success=success)
        assert q1.trajectory_case(_evidence(run)).verdict == verdict


# --- Q3: the gap between the sets targeting each model, larger on compressed ---------------------------------

#: Q3 pairs the seeds successful on both targets: fgsm fails on compressed for every fifth seed.
Q3_BOTH = np.arange(N) % 5 != 0


def _q3_run(tmp_path: Path, *, gap_original: float, gap_compressed: float) -> _Results:
    """On each model, the set targeting it lies ``gap_*`` normal spreads (OIP) from the set targeting the other,
    over the seeds successful on both targets; on the others good_init's gap is 8 (it would flip the case if they
    counted)."""
    rng = np.random.default_rng(10)
    run = _Results(tmp_path)
    for model, gap in (("good_init", np.where(Q3_BOTH, gap_original, 8.0)), ("compressed", gap_compressed)):
        seeds = _normal_inputs(run, model, rng)
        other = "compressed" if model == "good_init" else "good_init"
        run.paths[(model, f"fgsm@{other}")] = _moved(seeds, rng, oip=1.0, iip=1.0)
        run.paths[(model, f"fgsm@{model}")] = _moved(run.paths[(model, f"fgsm@{other}")], rng, oip=gap, iip=gap)
    _write_set(run, "good_init", "fgsm", np.ones(N, dtype=bool))
    _write_set(run, "compressed", "fgsm", Q3_BOTH)
    return run


@pytest.mark.parametrize(("gap_original", "gap_compressed", "verdict"), [(0.5, 2.0, HOLDS), (2.0, 0.5, FAILS),
                                                                         (1.2, 1.2, INCONCLUSIVE)])
def test_q3_planted_gaps_give_the_sign_of_the_difference_and_the_verdict_in_verdicts_csv(
        tmp_path, gap_original, gap_compressed, verdict):
    from advflow.report import diagnostics
    from advflow.report.tables import Tables
    from advflow.workflow.tabular import write_table

    run = _q3_run(tmp_path, gap_original=gap_original, gap_compressed=gap_compressed)
    study = SimpleNamespace(q3_attacks=["fgsm"], measured=lambda model, set_: True, resamples=500,
                            bias_corrected=False, measuring_models=lambda: set())
    run.aggregates = {}  # no GP aggregate read: nothing for the diagnostics to flag
    tables = Tables()
    diagnostics.add_statistics([q3], study, run, tables, seed=0)
    (case,) = tables.cases["q3"]
    assert case.inputs == Q3_BOTH.sum() == 32
    gap_o = _hand_shift(run, "good_init", "fgsm@good_init", "fgsm@compressed", Q3_BOTH)
    gap_c = _hand_shift(run, "compressed", "fgsm@compressed", "fgsm@good_init", Q3_BOTH)
    difference = case.intervals["oip_gap_difference"]
    assert case.intervals["oip_gap_good_init"].estimate == pytest.approx(gap_o, rel=1e-9)
    assert case.intervals["oip_gap_compressed"].estimate == pytest.approx(gap_c, rel=1e-9)
    assert difference.estimate == pytest.approx(gap_c - gap_o, rel=1e-9)  # compressed minus original
    if verdict != INCONCLUSIVE:
        assert np.sign(difference.estimate) == np.sign(gap_compressed - gap_original)
    assert case.verdict == verdict
    for name in ("verdicts.csv", "intervals.csv"):
        write_table(tmp_path / name, tables.rows[name], diagnostics.TABLES[name].columns)
    verdicts = read_csv(tmp_path / "verdicts.csv")
    assert [(r["question"], r["case"], r["verdict"], r["inputs"]) for r in verdicts] == [
        ("q3", "fgsm", verdict, "32")]
    (gap_row,) = [r for r in read_csv(tmp_path / "intervals.csv") if r["quantity"] == "oip_gap_difference"]
    assert float(gap_row["estimate"]) == pytest.approx(gap_c - gap_o, rel=1e-9) and gap_row["verdict"] == verdict


def read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- Q4: adaptive vs regular JSMA on the distilled model -------------------------------------------------

def _q4_run(tmp_path: Path, *, adaptive: float, regular: float, adaptive_control: float = 0.0,
            regular_control: float = 0.0, regular_successes: int = 0) -> _Results:
    rng = np.random.default_rng(11)
    run = _Results(tmp_path)
    seeds = _normal_inputs(run, "distilled", rng)
    for attack, shift, control in (("jsma_adaptive", adaptive, adaptive_control),
                                   ("jsma_control", regular, regular_control)):
        run.paths[("distilled", f"{attack}@distilled")] = _moved(seeds, rng, oip=shift)
        run.paths[("distilled", f"random_{attack}@distilled")] = _moved(seeds, rng, oip=control)
    _write_set(run, "distilled", "jsma_adaptive", np.arange(N) < 12)
    _write_set(run, "distilled", "jsma_control", np.arange(N) < regular_successes)
    return run


@pytest.mark.parametrize(("adaptive", "regular", "verdict"), [(2.0, 0.5, HOLDS), (0.5, 2.0, FAILS),
                                                              (1.2, 1.2, INCONCLUSIVE)])
def test_q4_planted_shifts_hold_fail_or_are_inconclusive(tmp_path, adaptive, regular, verdict):
    run = _q4_run(tmp_path, adaptive=adaptive, regular=regular)
    case = q4.adaptive_case(_evidence(run))
    assert case.verdict == verdict and case.inputs == N, case
    expected = (_hand_shift(run, "distilled", "jsma_adaptive@distilled", "normal_test")
                - _hand_shift(run, "distilled", "jsma_control@distilled", "normal_test"))
    assert case.intervals["adaptive_minus_regular"].estimate == pytest.approx(expected, rel=1e-9)
    assert case.numbers["premise_met"] and case.numbers["jsma_adaptive"]["success_rate"] == pytest.approx(12 / N)


def test_q4_excess_over_control_uses_each_sets_own_control(tmp_path):
    """The adaptive set shifts as much as its control (excess 0); the regular set shifts 1 spread, its control
    none (excess about 1): the excess difference is about -1 and fails. Taking the regular set's excess over the
    adaptive set's control would give about +1."""
    run = _q4_run(tmp_path, adaptive=2.0, regular=1.0, adaptive_control=2.0, regular_control=0.0)
    case = q4.adaptive_case(_evidence(run))
    shift = {name: _hand_shift(run, "distilled", f"{name}@distilled", "normal_test")
             for name in ("jsma_adaptive", "jsma_control", "random_jsma_adaptive", "random_jsma_control")}
    expected = ((shift["jsma_adaptive"] - shift["random_jsma_adaptive"])
                - (shift["jsma_control"] - shift["random_jsma_control"]))
    assert expected < -0.5
    excess = case.intervals["excess_over_control_difference"]
    assert excess.estimate == pytest.approx(expected, rel=1e-9)
    assert case.intervals["regular_control_oip_shift"].estimate == pytest.approx(shift["random_jsma_control"],
                                                                                 rel=1e-9)
    assert case.claims["excess_over_control_difference"] == FAILS
    reversed_run = _q4_run(tmp_path / "reversed", adaptive=2.0, regular=1.0, adaptive_control=0.0,
                           regular_control=1.0)
    assert q4.adaptive_case(_evidence(reversed_run)).claims["excess_over_control_difference"] == HOLDS


@pytest.mark.parametrize(("regular_successes", "premise_met"), [(2, True), (3, False)])
def test_q4_premise_is_met_at_a_regular_success_rate_of_at_most_five_percent(tmp_path, regular_successes,
                                                                             premise_met):
    """2 of 40 = 5 % exactly still meets the premise (the regular JSMA "fails"); 3 of 40 = 7.5 % does not."""
    run = _q4_run(tmp_path, adaptive=2.0, regular=0.5, regular_successes=regular_successes)
    case = q4.adaptive_case(_evidence(run))
    assert case.numbers["premise_met"] is premise_met
    assert case.verdict == (HOLDS if premise_met else decisions.PREMISE)


# --- Q5: the set targeting the model vs another's; transferable vs non-transferable inputs ---------------------

@pytest.mark.parametrize(("own", "foreign", "verdict"), [(2.0, 0.5, HOLDS), (0.5, 2.0, FAILS),
                                                         (1.2, 1.2, INCONCLUSIVE)])
def test_q5_planted_itself_vs_other_holds_fails_or_is_inconclusive(tmp_path, own, foreign, verdict):
    rng = np.random.default_rng(12)
    run = _Results(tmp_path)
    seeds = _normal_inputs(run, "good_init", rng)
    both = np.arange(N) % 4 != 0  # 30 seeds successful on both targets
    run.paths[("good_init", "fgsm@good_init")] = _moved(seeds, rng, oip=np.where(both, own, 0.0))
    run.paths[("good_init", "fgsm@deep_conv")] = _moved(seeds, rng, oip=np.where(both, foreign, 6.0))
    _write_set(run, "good_init", "fgsm", both | (np.arange(N) == 0))
    _write_set(run, "deep_conv", "fgsm", both | (np.arange(N) == 4))
    case = q5.itself_vs_other_case(_evidence(run), "fgsm", "good_init", "deep_conv")
    assert case.inputs == 30 and case.verdict == verdict, case
    index = np.flatnonzero(both)
    expected = (_hand_shift(run, "good_init", "fgsm@good_init", "normal_test", index)
                - _hand_shift(run, "good_init", "fgsm@deep_conv", "normal_test", index))
    assert case.intervals["itself_minus_other"].estimate == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("transferable", "non_transferable", "verdict"), [(2.0, 0.5, HOLDS), (0.5, 2.0, FAILS),
                                                                          (1.2, 1.2, INCONCLUSIVE)])
def test_q5_planted_transferable_vs_non_transferable_holds_fails_or_is_inconclusive(tmp_path, transferable,
                                                                                  non_transferable, verdict):
    """fgsm crafted on deep_conv, measured on good_init: 14 inputs successful and fooling good_init too
    (transferable), 14 successful but classified right (non-transferable), 12 unsuccessful on the target (left
    out: classified right, with a large shift that would flip the case if they counted as non-transferable)."""
    rng = np.random.default_rng(13)
    run = _Results(tmp_path)
    seeds = _normal_inputs(run, "good_init", rng)
    kind = np.repeat([0, 1, 2], [14, 14, 12])[rng.permutation(N)]  # 0 transferable, 1 non-transferable, 2 failed
    fooled = kind == 0
    run.paths[("good_init", "fgsm@deep_conv")] = _moved(
        seeds, rng, oip=np.choose(kind, [transferable, non_transferable, 8.0]), prediction=np.where(fooled, 3, 0))
    _write_set(run, "deep_conv", "fgsm", kind != 2)
    case = q5.transferable_case(_evidence(run), "fgsm", "deep_conv", "good_init")
    assert case.numbers == {"transferable": 14, "non_transferable": 14} and case.inputs == 28
    assert case.verdict == verdict, case
    expected = (_hand_shift(run, "good_init", "fgsm@deep_conv", "normal_test", kind == 0)
                - _hand_shift(run, "good_init", "fgsm@deep_conv", "normal_test", kind == 1))
    interval = case.intervals["transferable_minus_non_transferable"]
    assert interval.estimate == pytest.approx(expected, rel=1e-9)
