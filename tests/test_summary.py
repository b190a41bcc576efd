"""The report's first screen (advflow.report.summary) and how the page reads: the verdict before the paper's raw
comparison, the numbers that decided it, a smoke-test warning, the defenses and seed 001 in a few lines, the
provenance, long tables in an appendix, counts as integers and rates as percentages."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from advflow.information.shifts import Interval
from advflow.report import summary
from advflow.report.page import Placer, format_cell
from advflow.report.study import Study

from test_report import SYNTHETIC_CONFIG


def first_screen(page: str) -> str:
    """The page from its start to the first question's section."""
    return page[:page.index('<section id="q1"')]


def test_the_summary_comes_first_with_each_questions_claim_verdict_interval_and_n(synthetic_report):
    page = synthetic_report["html"].read_text()
    record = json.loads((synthetic_report["html"].parent / "findings.json").read_text())
    head = first_screen(page)
    assert head.index('<section id="summary"') < head.index('data-summary="run"')  # before the run's settings
    items = re.findall(r'<li data-question="(q\d)">(.*?)</li>\s*(?=<li data-question|</ol>)', head, re.S)
    assert [k for k, _ in items] == ["q1", "q2", "q3", "q4", "q5"]
    for (key, item), data in zip(items, record["summary"]["questions"]):
        question = record["questions"][key]
        assert f'data-verdict="{question["verdict"]}"' in item
        assert re.search(r"n = \d+", item), item
        assert data["verdict"] == question["verdict"] and data["cases"] == len(question["cases"])
        for case in data["said"]:
            for deciding in case["deciding"]:  # the deciding interval in words, with its reading
                assert re.search(r"\[[-0-9.e]+, [-0-9.e]+\]: (above 0|below 0|contains 0)", deciding["text"])
                assert deciding["words"] != deciding["quantity"]  # words, not the code name
                assert deciding["text"].split(" [")[0].rsplit(" ", 1)[0] == deciding["words"]


def test_no_raw_comparison_is_styled_above_its_verdict(synthetic_report):
    page = synthetic_report["html"].read_text()
    head = first_screen(page)
    for item in re.findall(r'<li data-question="q\d">.*?</span></li>', head, re.S):
        assert item.index('class="badge') < item.index('class="literal-note"')  # the verdict first
        literal = item[item.index('class="literal-note"'):]
        assert "badge" not in literal and "holds" not in re.findall(r'class="([^"]*)"', literal)[0]
    for key in ("q1", "q2", "q3", "q4", "q5"):
        section = re.search(rf'<section id="{key}".*?</section>', page, re.S).group(0)
        statistical = section.index('data-kind="statistical"')
        literal = section.index('data-kind="literal"')
        assert statistical < literal
        assert re.findall(r'<div class="([^"]*)" data-kind="literal"', section) == ["finding literal"]


def test_findings_json_has_the_summary_defenses_seed001_and_provenance(synthetic_report):
    record = json.loads((synthetic_report["html"].parent / "findings.json").read_text())
    assert {"summary", "defenses", "seed001", "provenance"} <= set(record)
    provenance = record["provenance"]
    import advflow
    assert provenance["advflow"] == advflow.__version__
    assert provenance["commit"] and provenance["torch"] and provenance["python"]
    assert record["defenses"] is None and record["seed001"] is None  # the synthetic run has neither stage
    assert 'data-summary="provenance"' in first_screen(synthetic_report["html"].read_text())


def test_a_smoke_test_is_said_below_a_useful_n():
    small = Study.from_config({**SYNTHETIC_CONFIG, "inputs": {"n": 6}})
    large = Study.from_config({**SYNTHETIC_CONFIG, "inputs": {"n": summary.USEFUL_N}})
    assert any("Smoke test" in w and "N = 6" in w for w in summary.smoke_warnings(small))
    assert summary.smoke_warnings(large) == []


def test_an_estimate_outside_its_interval_is_marked_and_explained():
    inside, off = Interval(0.2, 0.1, 0.3), Interval(0.095, 0.105, 0.28)
    assert not summary.outside(inside) and summary.outside(off)
    assert summary.interval_words("control_oip_shift", off).endswith("†")
    assert "†" not in summary.interval_words("oip_shift", inside, "holds")
    assert "resampling adds spread" in summary.OUTSIDE


def test_quantities_read_as_words_not_code_names():
    assert summary.quantity_words("excess_over_control_difference") == \
        "adaptive − regular JSMA's excess over its control"
    assert summary.quantity_words("oip_gap_good_init") == "OIP gap on good_init"
    assert "_" not in summary.quantity_words("some_new_minus_thing")


def test_counts_print_as_integers_and_rates_as_percentages():
    assert format_cell(60.0, "n") == "60" and format_cell(60.0, "n_adversarial") == "60"
    assert format_cell(1.0, "accuracy") == "100.0 %" and format_cell(0.25, "tpr_at_5") == "25.0 %"
    assert format_cell(0.5, "auc") == "0.5000"
    assert format_cell(60.0, "validation_images") == "60" and format_cell(10.0, "kappa") == "10"
    assert format_cell(0.1, "epsilon") == "0.1" and format_cell(0.001, "fpr") == "0.1 %"
    assert format_cell(93.0, "seed003") == "93.0"


def test_a_long_table_goes_to_the_appendix_with_a_line_that_says_where():
    place = Placer({"tables": "tables"})
    rows = [{"a": i} for i in range(30)]
    short = place("short.csv", rows[:3], ("a",), "Short: three rows.", href="tables:short.csv")
    long = place("long.csv", rows, ("a",), "Long: thirty rows.", href="tables:long.csv")
    assert 'data-table="short.csv"' in short and 'href="tables/short.csv"' in short
    assert 'data-table="long.csv"' not in long and "30 rows" in long and 'href="#appendix-long-csv"' in long
    assert len(place.appendix) == 1 and 'data-table="long.csv"' in place.appendix[0]


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def detector_row(detector, attack, strength, over, n, auc, vs_control):
    return {"detector": detector, "attack": attack, "strength": strength, "over": over, "n_adversarial": n,
            "auc": auc, "auc_low": auc - 0.1, "auc_high": auc + 0.1, "vs_control": vs_control}


def test_the_detector_matrix_takes_the_largest_budget_and_counts_sets_above_their_control(tmp_path):
    rows = [detector_row("mid", "pgd", 0.1, "attacked", 20, 0.55, "inconclusive"),
            detector_row("mid", "pgd", 0.3, "attacked", 20, 0.80, "above control"),
            detector_row("mid", "pgd", 0.1, "successful", 3, 0.60, "inconclusive"),
            detector_row("mid", "pgd", 0.3, "successful", 12, 0.90, "above control"),
            detector_row("mid", "cw", 10, "attacked", 20, 0.50, "inconclusive"),
            detector_row("mid", "cw", 10, "successful", 0, math.nan, "n/a")]
    write_csv(tmp_path / "tables" / "detectors.csv", rows)
    write_csv(tmp_path / "tables" / "clean_accuracy.csv",
              [{"defense": "mid", "n": 60, "without": 1.0, "with_defense": 0.9, "lost_to_detectors": 0.1,
                "lost_to_reformer": 0.0, "gained_by_reformer": 0.0}])
    record = summary.defense_record(tmp_path)
    cells = {c["attack"]: c for c in record["detectors"]}
    assert cells["pgd"]["strength"] == 0.3 and cells["pgd"]["auc"] == pytest.approx(0.80)
    assert (cells["pgd"]["sets_above_control"], cells["pgd"]["sets_judged"]) == (1, 2)
    assert cells["cw"]["sets_judged"] == 0
    text = summary.defense_html(record)
    assert "0.80 [0.70, 0.90]" in text and "above control on 1 of 2" in text and "no successful input" in text
    assert "ε = 0.3" in text and "κ = 10" in text
    assert "100.0 %" in text and "90.0 %" in text  # clean accuracy without and with the defense
    assert "oblivious" in text  # the threat model is said


def test_many_untested_cases_read_as_one_line_and_decided_cases_one_each():
    from advflow.report.evidence import Case
    from advflow.report.findings import Finding
    from advflow.report.page import finding_html

    decided = Case("q5", "cw: itself vs other", "holds", 12, {"itself_minus_other": Interval(0.5, 0.1, 0.9)},
                   {"itself_minus_other": "holds"})
    untested = [Case("q5", f"fgsm case {i}", "premise not met", 1, notes=["1 seed successful"]) for i in range(6)]
    finding = Finding("Q5: claim: holds in part (1 holds, 6 premise not met; ...). details", False, {}, "holds in part")
    text = finding_html(finding, cases=[decided, *untested])
    assert text.count("<li") == 2
    assert "OIP shift targeting itself − targeting the other model 0.5 [0.1, 0.9]: above 0" in text
    assert "6 cases <b>premise not met</b>" in text and "fgsm case 5 (n = 1)" in text
    few = finding_html(finding, cases=[decided, *untested[:2]])
    assert few.count("<li") == 3 and "1 seed successful" in few


def test_the_detectors_section_says_where_the_information_path_detector_wins_ties_and_loses():
    from advflow.report.defense import anchor_statement, ranking_statements

    def pair(attack, a, b, verdict):
        return {"attack": attack, "strength": 0.3, "over": "attacked", "detector": a, "other": b, "verdict": verdict}

    pairs = [pair("pgd", "mahalanobis", "infopath", "better"),   # infopath worse on pgd
             pair("bim", "infopath", "mahalanobis", "better"),   # infopath better on bim
             pair("cw", "infopath", "mahalanobis", "tied within the interval"),
             pair("pgd", "infopath", "magnet_l1", "tied within the interval"),
             {**pair("pgd", "infopath", "lid", "better"), "over": "successful"}]  # another denominator: not counted
    said = ranking_statements(pairs)
    assert said[0] == ("infopath vs mahalanobis: better on 1, tied within the interval on 1, worse on 1 of 3 sets "
                       "(better against bim; worse against pgd); better/tied/worse by family: L∞ sweeps 1/0/1, "
                       "L2/L1 sweeps 0/1/0.")
    assert said[1] == "infopath vs magnet_l1: better on 0, tied within the interval on 1, worse on 0 of 1 sets."
    assert len(said) == 2
    rows = [{"detector": "lid", "attack": "pgd", "strength": 0.3, "over": "attacked", "auc": 0.62},
            {"detector": "mahalanobis", "attack": "bim", "strength": 0.5, "over": "attacked", "auc": 0.97}]
    anchor = anchor_statement(rows)
    assert "lid 0.62–0.62 over 1 sets (below the anchors)" in anchor
    assert "mahalanobis 0.97–0.97 over 1 sets (near the anchors)" in anchor and "not established" in anchor
    assert "not established" not in anchor_statement(rows[1:])


def test_the_supervised_variants_are_said_seen_and_unseen_beside_the_unsupervised():
    from advflow.report.defense import supervised_statements

    def row(attack, seen, auc, own):
        return {"detector": "lid", "attack": attack, "over": "attacked", "seen": seen, "auc": auc, "folds": 5.0,
                "auc_low": auc - 0.05, "auc_high": min(auc + 0.04, 1.0), "unsupervised_auc": own}

    said = supervised_statements([row("pgd", "seen", 0.95, 0.7), row("bim", "unseen", 0.6, 0.65),
                                  row("cw", "unseen", 0.8, 0.5), {**row("pgd", "seen", 0.1, 0.1), "over": "successful"}])
    assert said == ["lid, supervised (trained on one attack, cross-fitted over 5 folds of the seeds): AUC 0.95–0.95 "
                    "on the attack it was trained on (1 sets, seen; intervals 0.90–0.99), 0.60–0.80 on the others "
                    "(2 sets, unseen); unsupervised on the same inputs 0.50–0.70."]


def test_the_layers_that_beat_their_control_and_those_that_flag_noise_are_said():
    from advflow.report.defense import layer_statements

    def row(value, attack, verdict):
        return {"detector": "lid", "value": value, "attack": attack, "vs_control": verdict}

    rows = [row("conv1", "pgd", "below control"), row("conv1", "bim", "below control"),
            row("conv9", "pgd", "above control"), row("conv9", "bim", "above control"),
            row("conv5", "pgd", "inconclusive"), row("conv5", "bim", "above control"),
            {**row("conv2", "pgd", "n/a")}]  # a constant layer: not counted
    (said,) = layer_statements(rows)
    assert said == ("lid, layer by layer against each attack's random control (2 attacks at their largest strength): "
                    "above the control in 3, inconclusive in 1, below in 2 of 6 (layer, attack) pairs; above for most "
                    "attacks in conv9; below (the layer flags noise of the same size better than the attack) for most "
                    "attacks in conv1.")
