"""Findings decided by statistics (advflow.report.evidence and each question module's cases) and the literal
reading applied to the paper's own published numbers (each question module's literal reading).

The paper's Tables III and V are typed in below; the findings code must reach the paper's conclusions on
them: Q2 holds literally (every attack moves the OIP further than the IIP), Q3 holds for JSMA and C&W (the
gap between the sets targeting the two models is larger on the compressed model), not for FGSM."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from advflow.report import evidence as decisions
from advflow.report import q2, q3, q4
from advflow.shifts import FAILS, HOLDS, INCONCLUSIVE

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
