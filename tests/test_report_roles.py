"""The report names roles, not architectures (issue 30): the study's roles (config key ``study``) decide which model
each question uses, and every caption, note, claim and quantity name follows the model actually used. With no
``study`` key the roles are the paper's models and the texts read as before; a model of the user's fills any role
and is named ("the base model my_resnet"); a role without a model skips its question, naming the role and
``study.<role>``; the user's models follow advflow's in every table, in the config's order."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from advflow.report import build_report, defense, q1, q2, q3, q4, summary
from advflow.report.page import model_listing
from advflow.report.results import ResultFiles, RunResults
from advflow.report.study import Study, fill, fill_names, role_text
from advflow.report.tables import Tables
from advflow.workflow.catalog import MODELS, ROLES

from test_report import SYNTHETIC_CONFIG, make_synthetic_run

pytestmark = pytest.mark.usefixtures("one_thread")

ATTACKS = ["fgsm", "jsma", "cw"]
#: Every role filled by a model of the user's (the README's example, with a distilled model of the user's too).
USER_ROLES = {"base": "my_resnet", "compressed": "my_pruned", "distilled": "my_distilled", "ensemble": None,
              "trajectories": "my_resnet"}
USER_CONFIG = {
    "seed": 0,
    "dataset": "synthetic",
    "models": {"my_resnet": {"module": "mynets.resnet:build"}, "my_pruned": {"module": "mynets.resnet:pruned"},
               "my_distilled": {"module": "mynets.resnet:distilled", "temperature": 40}},
    "study": USER_ROLES,
    "inputs": {"n": 8},
    "trajectories": {"n": 2},
    "attacks": {"jsma": {"theta": 1.0, "gamma": 0.1}},
    "attack_sets": {"my_resnet": ATTACKS, "my_pruned": ATTACKS, "my_distilled": ["jsma_adaptive", "jsma_control"]},
    "transfer_groups": [["my_resnet", "my_pruned"]],
    "report": {"bootstrap_resamples": 20},
}


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- the roles' defaults ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("study_key", [None, dict(ROLES)], ids=["no study key", "the defaults stated"])
def test_without_a_study_key_the_roles_are_the_papers_models_and_read_as_before(study_key):
    config = {**SYNTHETIC_CONFIG, "models": {**SYNTHETIC_CONFIG["models"], "ensemble": {}}}
    if study_key is not None:
        config["study"] = study_key
    study = Study.from_config(config)
    assert study.roles == {"base": "good_init", "compressed": "compressed", "distilled": "distilled",
                           "ensemble": "ensemble", "trajectories": "good_init"}
    assert study.trajectory_model == "good_init" and study.trajectory_set == "trajectory@good_init"
    assert study.q3_models == ("good_init", "compressed") and study.q3_attacks == ("fgsm", "jsma")
    assert study.measured("good_init", "trajectory@good_init")
    # The texts written once for every study read exactly as they did before the roles.
    assert study.fill(q3.CLAIM) == ("Q3: the gap between the sets targeting the inference model and the other model "
                                    "is larger on compressed than on good_init (OIP; Table V as the paper reads it)")
    assert tuple(fill_names(n, study.roles) for n in q3.QUOTED) == (
        "oip_gap_difference", "oip_gap_good_init", "oip_gap_compressed", "iip_gap_difference")
    assert q2.TABLES["table2_attacks.csv"].text(study.roles).startswith(
        "Table II: adversarial sets on good_init and compressed: distortion")
    assert study.fill(q4.CLAIM).startswith("Q4: on the defensively distilled model the adaptive JSMA shifts")
    assert q1.TABLES["q1_trajectory.csv"].text(study.roles).endswith("(single inputs on good_init).")
    assert summary.quantity_words("oip_gap_difference", study.roles) == "OIP gap on compressed − on good_init"
    assert all(study.role_missing(r) == "" and study.role_note(r) == "" for r in ROLES)


def test_a_role_text_names_the_default_model_plainly_and_a_users_with_its_role():
    assert role_text("base", "good_init") == "good_init"
    assert role_text("base", "my_resnet") == "the base model my_resnet"
    assert role_text("base", "deep_conv") == "the base model deep_conv"  # advflow's, but not the role's default
    assert role_text("compressed", None) == "the compressed model"
    assert fill("on the distilled model{+distilled}", {"distilled": "distilled"}) == "on the distilled model"
    assert fill("on the distilled model{+distilled}", {"distilled": "my_distilled"}) == \
        "on the distilled model my_distilled"
    assert fill("{base} vs {compressed}", USER_ROLES) == "the base model my_resnet vs the compressed model my_pruned"


# --- the user's models in every role ----------------------------------------------------------------------------

def test_user_models_in_every_role_give_q1_to_q4_their_models_sets_and_measurements():
    study = Study.from_config(USER_CONFIG)
    assert study.roles == USER_ROLES
    assert study.role("base") == "my_resnet" and study.role("ensemble") is None
    # Q1: the trajectories are recorded and measured on the trajectories role's model.
    assert study.has_trajectories and study.trajectory_set == "trajectory@my_resnet"
    assert study.measured("my_resnet", "trajectory@my_resnet")
    assert study.measured("my_resnet", "random_trajectory@my_resnet")
    assert not any("good_init" in model or "good_init" in set_ for model, set_ in study._measurements)
    # Q3: the base and compressed roles' models, each measuring the other's sets.
    assert study.q3_models == ("my_resnet", "my_pruned") and study.q3_attacks == tuple(ATTACKS)
    assert study.measured("my_pruned", "fgsm@my_resnet") and study.measured("my_resnet", "cw@my_pruned")
    # The quantity names of Q3 and the texts are built from the models' names.
    assert tuple(fill_names(n, study.roles) for n in q3.QUOTED) == (
        "oip_gap_difference", "oip_gap_my_resnet", "oip_gap_my_pruned", "iip_gap_difference")
    assert "larger on the compressed model my_pruned than on the base model my_resnet" in study.fill(q3.CLAIM)
    assert study.fill(q2.CLAIM).endswith("successful inputs on the base model my_resnet)")
    assert study.fill(q4.CLAIM).startswith("Q4: on the defensively distilled model my_distilled the adaptive")
    assert "good_init" not in q2.setting(study) and "the base model my_resnet" in q2.setting(study)
    assert "the trajectory model my_resnet" in q1.setting(study)
    assert q3.setting(study).startswith("Q3 compares the base model my_resnet with the compressed model my_pruned, "
                                        "which stands for its compression (study.base, study.compressed; Table IV)")
    assert "on the distilled model my_distilled" in q4.setting(study)


@pytest.fixture(scope="module")
def user_report(tmp_path_factory):
    """A synthetic run whose models are all the user's (records with ``architecture.kind: user``), and its report."""
    root = tmp_path_factory.mktemp("roles")
    results = make_synthetic_run(root, USER_CONFIG)
    for model, source in (("my_resnet", "checkpoint"), ("my_pruned", "trained"), ("my_distilled", "trained")):
        record = json.loads((results / "models" / f"{model}.json").read_text())
        record.update(architecture={"name": model, "kind": "user",
                                    "module": USER_CONFIG["models"][model]["module"]},
                      test_size=200, source=source)
        (results / "models" / f"{model}.json").write_text(json.dumps(record))
    captions = build_report(results, USER_CONFIG, out_html=root / "report.html", tables_dir=root / "tables",
                            figures_dir=root / "figures")
    return {"results": results, "tables": root / "tables", "captions": captions,
            "html": (root / "report.html").read_text(), "findings": json.loads((root / "findings.json").read_text())}


def test_the_report_of_user_models_uses_and_names_the_models_of_the_roles(user_report):
    tables = user_report["tables"]
    assert {r["measured_on"] for r in read_rows(tables / "table3_distance_from_normal.csv")} == {"my_resnet"}
    assert {r["measured_on"] for r in read_rows(tables / "table5_gap.csv")} == {"my_resnet", "my_pruned"}
    assert [r["model"] for r in read_rows(tables / "table4_models.csv")] == ["my_resnet", "my_pruned"]
    assert {r["measured_on"] for r in read_rows(tables / "q4_defense.csv")} == {"my_distilled"}
    assert read_rows(tables / "q1_trajectory.csv")
    quantities = {r["quantity"] for r in read_rows(tables / "intervals.csv") if r["question"] == "q3"}
    assert {"oip_gap_my_resnet", "oip_gap_my_pruned", "oip_gap_difference"} <= quantities
    captions = user_report["captions"]
    assert captions["table6_transferability.csv"].startswith(
        "Table VI: transferability between the base model my_resnet and the compressed model my_pruned")
    assert "single inputs on the trajectory model my_resnet" in captions["q1_trajectory.csv"]
    assert "JSMA crafting on the trajectory model my_resnet" in captions["q1_trajectory.png"]
    questions = user_report["findings"]["questions"]
    assert "larger gap between their OIPs on my_pruned than on my_resnet" in questions["q3"]["literal_text"]
    assert "on the compressed model my_pruned than on the base model my_resnet" in questions["q3"]["text"]
    assert "oip gap my resnet" in questions["q3"]["text"]  # each case quotes the gap on each model (QUOTED)
    assert "JSMA on the trajectory model my_resnet" in questions["q1"]["literal_text"]
    said = {q["key"]: q for q in user_report["findings"]["summary"]["questions"]}
    words = {d["words"] for case in said["q3"]["said"] for d in case["deciding"]}
    assert words == {"OIP gap on my_pruned − on my_resnet", "IIP gap on my_pruned − on my_resnet"}
    page = user_report["html"]
    assert "good_init" not in page and "@compressed" not in page and "@distilled" not in page
    assert "Attacks on the base model my_resnet" in page


def test_the_pages_models_table_names_the_users_models_with_their_module_and_weights(user_report):
    page = user_report["html"]
    table = page[page.index('data-table="models"'):]
    table = table[:table.index("</table>")]
    for model, where in (("my_resnet", "loaded from checkpoint"), ("my_pruned", "trained by the workflow")):
        row = table[table.index(f">{model}<"):]
        row = row[:row.index("</tr>")]
        assert f"yours: {USER_CONFIG['models'][model]['module']}" in row and where in row


def test_the_models_table_keeps_its_three_columns_without_a_users_model(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("good_init", "compressed"):
        (models / f"{name}.json").write_text(json.dumps({"model": name, "parameters": 10, "test_accuracy": 0.9,
                                                         "architecture": {"name": name}, "source": "trained"}))
    study = Study.from_config({"dataset": "synthetic", "models": {"compressed": {}, "good_init": {}}})
    rows, columns, caption = model_listing(study, RunResults(ResultFiles(tmp_path)))
    assert columns == ("model", "parameters", "test_accuracy") and [r["model"] for r in rows] == ["good_init",
                                                                                                "compressed"]
    assert caption == "Models of this run (parameters, accuracy on the whole test split)."
    (models / "mine.json").write_text(json.dumps({"model": "mine", "parameters": 5, "test_accuracy": 0.5,
                                                  "architecture": {"kind": "user", "module": "pkg.mod:factory"},
                                                  "source": "checkpoint"}))
    study = Study.from_config({"dataset": "synthetic", "models": {"mine": {"module": "pkg.mod:factory"},
                                                                  "compressed": {}, "good_init": {}}})
    rows, columns, _ = model_listing(study, RunResults(ResultFiles(tmp_path)))
    assert columns[-2:] == ("architecture", "weights")
    assert rows[-1] == {"model": "mine", "parameters": 5, "test_accuracy": 0.5,
                        "architecture": "yours: pkg.mod:factory", "weights": "loaded from checkpoint"}
    assert rows[0]["architecture"] == "advflow's good_init"


# --- a role without a model -------------------------------------------------------------------------------------

def test_a_missing_role_skips_its_question_naming_the_role_and_its_config_key():
    config = {**USER_CONFIG, "study": {"base": None, "compressed": "my_gone", "distilled": None,
                                       "trajectories": None}}
    study = Study.from_config(config)
    assert study.roles == {"base": None, "compressed": None, "distilled": None, "ensemble": None,
                           "trajectories": None}
    assert study.q3_models == () and study.q3_attacks == () and not study.has_trajectories
    assert not study.measured("my_resnet", "trajectory@my_resnet")
    tables = Tables(roles=dict(study.roles))
    for question in (q1, q2, q3, q4):
        question.add_tables(study, None, tables)  # the results are never read: each question stops at its note
        assert question.cases(study, None) == []
    notes = {key: " ".join(text) for key, text in tables.notes.items()}
    assert notes["q1"] == ("skipped: the config records no JSMA trajectories: no model has the trajectories role "
                           "(study.trajectories is null)")
    assert notes["q2"].startswith("skipped: no model has the base role (study.base is null)")
    assert "my_gone, the compressed role's model (study.compressed), is not under models" in notes["q3"]
    assert "study.base is null" in notes["q3"] and notes["q3"].startswith("skipped: ")
    assert notes["q4"].startswith("skipped: no model has the distilled role (study.distilled is null)")
    assert not tables.rows
    for question, key in ((q3, "study.compressed"), (q4, "study.distilled")):
        finding = question.literal(tables)
        assert finding.verdict == "cannot be checked" and key in finding.text


def test_a_role_whose_default_model_is_absent_keeps_the_old_note_and_says_why():
    config = {**SYNTHETIC_CONFIG, "models": {k: v for k, v in SYNTHETIC_CONFIG["models"].items() if k != "distilled"},
              "attack_sets": {k: v for k, v in SYNTHETIC_CONFIG["attack_sets"].items() if k != "distilled"}}
    study = Study.from_config(config)
    tables = Tables(roles=dict(study.roles))
    q4.add_tables(study, None, tables)
    assert tables.notes["q4"] == ["skipped: attack_sets.distilled has neither jsma_control nor jsma_adaptive; "
                                  "distilled, the distilled role's model (study.distilled), is not under models"]


# --- order and words --------------------------------------------------------------------------------------------

def test_model_order_puts_the_users_models_after_advflows_in_the_configs_order():
    configured = {"zeta": {"module": "m:z"}, "compressed": {}, "alpha": {"module": "m:a"}, "good_init": {},
                  "mid": {"module": "m:m"}, "deep_conv": {}}
    study = Study.from_config({"dataset": "synthetic", "models": configured,
                               "attack_sets": {name: ["fgsm"] for name in configured}})
    expected = ("good_init", "deep_conv", "compressed", "zeta", "alpha", "mid")
    assert study.models == expected
    assert tuple(study.attack_sets) == expected
    shuffled = list(configured)
    for seed in range(5):  # however a set or a listing hands them over
        random.Random(seed).shuffle(shuffled)
        assert tuple(sorted(shuffled, key=study.model_order)) == expected
    assert [m for m in expected if m in MODELS] == [m for m in MODELS if m in expected]


def test_summary_words_of_a_gap_quantity_use_the_models_names():
    assert summary.quantity_words("oip_gap_my_resnet") == "OIP gap on my_resnet"
    assert summary.quantity_words("iip_gap_my_pruned", USER_ROLES) == "IIP gap on my_pruned"
    assert summary.quantity_words("oip_gap_difference", USER_ROLES) == "OIP gap on my_pruned − on my_resnet"
    assert summary.quantity_words("iip_gap_difference", USER_ROLES) == "IIP gap on my_pruned − on my_resnet"
    assert summary.quantity_words("oip_gap_difference") == "OIP gap on compressed − on good_init"


def test_the_defense_setting_names_the_classifier_the_stage_attacked():
    base = {"dataset": "synthetic", "models": {"good_init": {}, "my_resnet": {"module": "mynets.resnet:build"}}}
    assert "undefended good_init and shown" in defense.setting(Study.from_config({**base, "defense": {}}))
    mine = Study.from_config({**base, "defense": {"classifier": "my_resnet"}})
    assert "undefended my_resnet and shown" in defense.setting(mine)
