"""The defense stage (advflow.defenses.settings, advflow.defenses.stage, rules/defenses.smk): its config is
checked before any work, sweep sets are named and parsed one way, margins and saved MID states are read
honestly, and reruns follow the settings each rule depends on (an FPR re-tabulates, it rescores nothing)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from advflow.config import ConfigError
from advflow.defenses.settings import attack_settings, defense_settings, strength_name, sweep_sets, sweeps
from advflow.workflow.io import CorruptFileError
from conftest import REPO, dry_run_with, snakemake

BASE = {"seed": 0, "dataset": "synthetic", "models": {"good_init": {}}}


def settings_of(**block):
    return defense_settings({**BASE, "defense": block})


def test_a_config_without_a_defense_block_runs_no_defense_stage():
    assert defense_settings(BASE) is None
    assert settings_of()["detectors"] == ["magnet_l1", "magnet_l2", "mid"]  # seed 003 on Fashion-MNIST


@pytest.mark.parametrize("block, message", [
    ({"fpr": {"mid": 0}}, r"defense\.fpr\.mid: .*\(0, 1\); got 0"),
    ({"fpr": {"mid": 1.0}}, r"defense\.fpr\.mid: .*\(0, 1\)"),
    ({"fpr": {"mid": math.nan}}, r"defense\.fpr\.mid: .*\(0, 1\); got nan"),
    ({"fpr": {"mid": "a"}}, r"defense\.fpr\.mid: .*\(0, 1\)"),
    ({"fpr": {"magnet_l3": 0.01}}, r"defense\.fpr\.magnet_l3: unknown detector; allowed: magnet_l1, magnet_l2"),
    ({"detectors": ["mid", "odin"]}, r"defense\.detectors: unknown odin; allowed: magnet_l1, .*mid"),
    ({"lid": {"k": 0}}, r"defense\.lid\.k: must be a positive integer; got 0"),
    ({"lid": {"k": 20, "references": 20}}, r"defense\.lid\.references: .*must exceed k \(20\)"),
    ({"infopath": {"bins": 8}}, r"defense\.infopath\.bins: unknown key; allowed: train_size, buckets"),
    ({"mahalanobis": {"train_size": 1.5}}, r"defense\.mahalanobis\.train_size: must be a positive integer"),
    ({"detectors": []}, r"defense\.detectors: must be a non-empty list"),
    ({"attacks": ["pgd", "fgsm"]}, r"defense\.attacks: unknown fgsm; allowed: pgd, bim, cw, ead_l1, ead_en"),
    ({"epsilons": []}, r"defense\.epsilons: must be a non-empty list"),
    ({"epsilons": [0.1, 2.0]}, r"defense\.epsilons: 2\.0 is out of range"),
    ({"kappas": [-5]}, r"defense\.kappas: -5 is out of range"),
    ({"classifier": "resnet"}, r"defense\.classifier: 'resnet' is not a model of the zoo nor of yours; allowed: good_init"),
    ({"classifier": "vgg_like"}, r"defense\.classifier: vgg_like is not among the config's models"),
    ({"n": 0}, r"defense\.n: must be a positive integer"),
    ({"folds": 3}, r"defense\.folds: unknown key; allowed: classifier"),
])
def test_bad_defense_settings_are_config_errors_naming_the_key_and_the_allowed_values(block, message):
    with pytest.raises(ConfigError, match=message):
        settings_of(**block)


def test_sweep_sets_carry_their_attack_and_strength_as_values_and_epsilon_doubles_in_model_space():
    settings = settings_of(attacks=["pgd", "ead_l1"], epsilons=[0.05, 0.5], kappas=[0, 15])
    assert sweeps(settings) == {"pgd_eps0.05": ("pgd", 0.05), "pgd_eps0.5": ("pgd", 0.5),
                                "ead_l1_kappa0": ("ead_l1", 0.0), "ead_l1_kappa15": ("ead_l1", 15.0)}
    assert sweep_sets(settings) == list(sweeps(settings))
    for name, (attack, value) in sweeps(settings).items():
        assert f"{attack}_{strength_name(attack, value)}" == name
    library, own = attack_settings(settings, "pgd", 0.05)
    assert library == "pgd" and own["epsilon"] == pytest.approx(0.1)  # [0, 1] pixels -> [-1, 1]
    assert own["alpha"] == pytest.approx(settings["pgd"]["rel_stepsize"] * 0.1)
    assert attack_settings(settings, "bim", 0.2)[0] == "igsm"  # BIM is the library's IGSM
    assert attack_settings(settings, "ead_l1", 15)[1]["kappa"] == 15.0
    with pytest.raises(ValueError, match="unknown sweep attack 'fgsm'"):
        strength_name("fgsm", 0.1)


def test_margins_are_the_best_other_logit_minus_the_true_one():
    from advflow.defenses.stage import margins

    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0]])
    labels = torch.tensor([0, 0, 2])
    assert margins(logits, labels).tolist() == [-1.0, 3.0, -3.0]


def test_the_attack_and_scoring_jobs_do_not_import_lightning():
    """Lightning's import costs seconds per job; of the defense stage only the autoencoders' training needs it."""
    code = ("import sys, advflow.defenses.stage, advflow.defenses.magnet, advflow.defenses.mine, "
            "advflow.defenses.metrics; print('lightning' in sys.modules)")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert found[-1] == "False"
    code = "import sys, advflow.defenses.training; print('lightning' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split()[-1] == "True"  # the check above can fail


def test_a_sweep_sets_random_control_matches_each_inputs_perturbation_size_and_is_seeded():
    from advflow.defenses.stage import random_control

    x = torch.rand(4, 1, 6, 6) * 1.6 - 0.8
    linf = x.clone()
    linf[0] += 0.2 * torch.sign(torch.randn(1, 6, 6))
    linf[1] += 0.1
    # linf[2], linf[3]: the attack failed and left them unchanged
    control = random_control("pgd_eps0.1", "pgd", x, linf, seed=3)
    r = (torch.as_tensor(control) - x).flatten(1).abs()
    assert r[0].max() == pytest.approx(0.2, abs=1e-6) and r[1].max() == pytest.approx(0.1, abs=1e-6)
    assert r[2:].max() == 0 and not torch.equal(torch.as_tensor(control[1]), linf[1])  # random signs, not +0.1
    np.testing.assert_array_equal(control, random_control("pgd_eps0.1", "pgd", x, linf, seed=3))
    assert not np.array_equal(control, random_control("pgd_eps0.1", "pgd", x, linf, seed=4))
    l2 = x + 0.05 * torch.randn_like(x) * torch.tensor([1.0, 1.0, 0.0, 0.0]).view(4, 1, 1, 1)
    control = random_control("cw_kappa5", "cw", x, l2, seed=3)
    norms = (torch.as_tensor(control) - x).flatten(1).norm(dim=1)
    np.testing.assert_allclose(norms.numpy(), (l2 - x).flatten(1).norm(dim=1).numpy(), atol=1e-5)


def test_a_truncated_mid_state_is_an_error_naming_the_file_and_the_rule(tmp_path):
    from advflow.defenses.stage import load_mid_state

    path = tmp_path / "mid.pt"
    torch.save({"network": {"w": torch.zeros(2)}, "references": torch.zeros(3, 4)}, path)
    assert set(load_mid_state(path)) == {"network", "references"}
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match=r"mid\.pt: damaged \(not a readable MID state.*rule fit_mid"):
        load_mid_state(path)
    assert not path.exists() and path.with_name("mid.pt.damaged").exists()  # moved aside: the next run refits
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CorruptFileError, match="not a MID state"):
        load_mid_state(path)
    assert path.with_name("mid.pt.damaged.1").exists()


def test_a_bad_defense_block_stops_the_workflow_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    config["defense"]["fpr"] = {"mid": 1.5}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", "bad.yaml", workdir=tmp_path, check=False)
    assert result.returncode != 0
    assert "defense.fpr.mid" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------
# The tiny run


DEFENSE_TABLES = ("thresholds.csv", "table1_defense_rate.csv", "table2_defense_rate.csv", "clean_accuracy.csv",
                  "detectors.csv", "worst_case.csv", "ranking.csv", "detector_pairs.csv", "supervised.csv",
                  "layers.csv")
#: The detectors the tiny config judges: the defense's and the ones compared beside it.
TINY_DETECTORS = ("magnet_l1", "magnet_l2", "magnet_jsd_T10", "mid", "dropout_vote", "infopath", "mahalanobis", "lid")


@pytest.mark.slow
def test_tiny_run_writes_every_defense_table_and_figure_and_the_report_section(tiny_run):
    root = tiny_run / "results" / "synthetic" / "defense"
    for name in DEFENSE_TABLES:
        assert (root / "tables" / name).is_file(), name
    for name in ("defense_rate", "defense_roc", "infopath_layers"):
        assert (root / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (root / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    page = (tiny_run / "results" / "synthetic" / "report.html").read_text()
    assert '<section id="defense"' in page and 'href="#defense"' in page
    for name in DEFENSE_TABLES:
        assert f'data-table="defense_{name}"' in page
    assert "Against seed 003" in page
    # Every detector side by side: in the detector table, ranked on every set, and in the worst case over attacks.
    import csv
    for name in ("detectors.csv", "ranking.csv", "worst_case.csv"):
        with open(root / "tables" / name, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert {r["detector"] for r in rows} == set(TINY_DETECTORS), name
        # each row names how its detector was fitted and the attacker it faced
        assert {(r["detector"], r["fitting"]) for r in rows if r["detector"] in ("dropout_vote", "lid")} == {
            ("dropout_vote", "unsupervised (no fitting)"), ("lid", "unsupervised (clean data only)")}, name
        assert {r["threat"] for r in rows} == {"transfer (crafted on the undefended classifier; oblivious to the "
                                               "detector)"}, name
        if name != "worst_case.csv":  # the study's sets on the defense classifier are judged beside the sweeps
            assert {r["attack"] for r in rows} >= {"fgsm@good_init", "cw@good_init", "pgd", "ead_en"}, name
    for detector in ("infopath", "mahalanobis", "lid"):
        assert (root / "detectors" / f"{detector}.pt").is_file()
    assert "Detectors side by side" in page and "infopath vs mahalanobis:" in page
    with open(root / "tables" / "supervised.csv", newline="") as handle:
        supervised = list(csv.DictReader(handle))
    assert {r["detector"] for r in supervised} == {"infopath", "mahalanobis", "lid"}
    assert {r["seen"] for r in supervised} == {"seen", "unseen"} and "supervised (trained on one attack" in page
    assert {r["fitting"] for r in supervised} == {"supervised (one attack's inputs)"}
    assert {r["folds"] for r in supervised} == {"5"}  # cross-fitted: every one of the 20 seeds scored
    assert {r["n_adversarial"] for r in supervised if r["over"] == "attacked"} == {"20"}
    with open(root / "tables" / "layers.csv", newline="") as handle:
        layers = list(csv.DictReader(handle))
    assert {r["detector"] for r in layers} == {"infopath", "mahalanobis", "lid"}
    assert {r["vs_control"] for r in layers} <= {"above control", "inconclusive", "below control", "n/a"}
    assert "layer by layer against each attack&#x27;s random control" in page  # (html-escaped)


SCORED = 2 + 10 + 5  # validation, clean, the tiny config's 10 sweep sets and its 5 study sets on good_init
#: The tiny config's adaptive sets: 4 targets (undefended, defense, dropout_vote, infopath) x 4 sets (PGD and C&W at
#: one budget, each also longer); the defense's 4 are the only ones guarded by MID.
ADAPTIVE = {"adaptive_attack": 16, "adaptive_tables": 1}


@pytest.mark.slow
@pytest.mark.parametrize("change, expected", [
    # An FPR changes thresholds and tables only: nothing is rescored; the adaptive attacks MID guards are rerun at
    # its new threshold (the defense's 4 sets), no other.
    (lambda c: c["defense"].update(fpr={"mid": 0.05}),
     {"defense_tables": 1, "report": 1, "all": 1, "adaptive_attack": 4, "adaptive_tables": 1}),
    # A new ε crafts and scores only its new sets (PGD and BIM); seed 001's statistics and dropout vote take them in,
    # the adaptive tables draw them beside the adaptive budgets.
    (lambda c: c["defense"].update(epsilons=[0.1, 0.3, 0.2]),
     {"defense_attack": 2, "defense_scores": 2, "defense_tables": 1, "report": 1, "all": 1, "perturbation_stats": 1,
      "dropout_vote": 1, "adaptive_tables": 1}),
    # MINE's settings refit MID and rescore; the autoencoders are not retrained. The validation scores (every
    # guard's threshold) change, so the adaptive attacks run again.
    (lambda c: c["defense"]["mine"].update(steps=30),
     {"fit_mid": 1, "defense_scores": SCORED, "defense_tables": 1, "report": 1, "all": 1, **ADAPTIVE}),
    # An autoencoder setting retrains both autoencoders and what uses them, and crafts nothing.
    # A baseline's setting refits that detector alone and rescores (its settings are the scoring jobs' too).
    (lambda c: c["defense"]["lid"].update(k=10),
     {"fit_detector": 1, "defense_scores": SCORED, "defense_tables": 1, "report": 1, "all": 1, **ADAPTIVE}),
    (lambda c: c["defense"]["autoencoder"].update(epochs=3),
     {"train_autoencoder": 2, "fit_mid": 1, "defense_scores": SCORED, "defense_tables": 1, "report": 1, "all": 1,
      **ADAPTIVE}),
    # An adaptive setting reruns the adaptive attacks and their tables, nothing of the transfer stage.
    (lambda c: c["defense"]["adaptive"].update(eot=3), {**ADAPTIVE, "report": 1, "all": 1}),
])
def test_changing_one_defense_setting_reruns_only_what_depends_on_it(tiny_run, tmp_path, change, expected):
    assert dry_run_with(tiny_run, tmp_path, change) == expected


def test_the_comparison_with_the_seeds_numbers_counts_them_inside_below_and_above_our_intervals():
    from advflow.report.defense import comparison
    rows = [{"attack": "bim", "inputs": 100.0, "successful": 90.0, "defense_rate_attacked": r, "seed003": s}
            for r, s in ((0.84, 84.1), (0.95, 83.8), (0.60, 84.2), (0.80, math.nan))]
    text = comparison(rows, "ε")[0]
    assert "inside our 95 % interval at 1 of 3 εs, below it (ours higher) at 1, above it (ours lower) at 1" in text
    assert "90–90 of them successful" in text and "not adversarial" not in text
    failed = [{**r, "successful": 0.0} for r in rows]
    assert "No input fooled the undefended classifier" in comparison(failed, "ε")[0]


# ---------------------------------------------------------------------------------------------------------
# build_detectors on planted autoencoders and a planted classifier: every expected score computed by hand


def constant_autoencoder(name: str, pixel: float):
    """A MagNet autoencoder whose reconstruction of any image is ``pixel`` everywhere (pixels in [0, 1]): every
    weight zero, the last conv's bias logit(pixel), so the last sigmoid gives ``pixel``."""
    from advflow.defenses.magnet import autoencoder

    ae = autoencoder(name, 1)
    convs = [m for m in ae.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for conv in convs:
            conv.weight.zero_()
            conv.bias.zero_()
        convs[-1].bias.fill_(math.log(pixel / (1.0 - pixel)))
    return ae.eval()


class MeanLogits(torch.nn.Module):
    """Logits (8 m, -8 m, 0) of images of mean m (model space): a classifier whose softmax is known by hand."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1)
        return torch.stack([8 * m, -8 * m, torch.zeros_like(m)], dim=1)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def mean_logits(pixels: np.ndarray) -> np.ndarray:
    m = (2.0 * pixels - 1.0).reshape(len(pixels), -1).mean(1)
    return np.stack([8 * m, -8 * m, np.zeros_like(m)], axis=1)


AE_I_PIXEL, AE_II_PIXEL = 0.25, 0.5  # what the planted AE-I and AE-II reconstruct every pixel as


def planted_pixels() -> np.ndarray:
    """(4, 1, 6, 6) pixels in [0, 1]: all ones (|x - AE(x)| is 0.75 for AE-I, 0.5 for AE-II), then random."""
    pixels = np.random.default_rng(0).random((4, 1, 6, 6))
    pixels[0] = 1.0
    return pixels


def test_build_detectors_scores_l1_error_of_ae_ii_and_l2_error_of_ae_i_as_computed_by_hand():
    """MagNet's reference pairs the L1 error with AE-II and the L2 error with AE-I (settings.DETECTORS); each score
    is the mean over pixels of |x - AE(x)|^p, here against planted constant reconstructions."""
    from advflow.defenses.stage import build_detectors

    autoencoders = {"ae_i": constant_autoencoder("ae_i", AE_I_PIXEL),
                    "ae_ii": constant_autoencoder("ae_ii", AE_II_PIXEL)}
    detectors = build_detectors(["magnet_l1", "magnet_l2"], MeanLogits(), autoencoders, None, {}, seed=0)
    pixels = planted_pixels()
    x = torch.as_tensor(2.0 * pixels - 1.0, dtype=torch.float32)
    l1, l2 = detectors["magnet_l1"].score(x), detectors["magnet_l2"].score(x)
    # The all-ones image: L1 of AE-II = mean |1 - 0.5| = 0.5; L2 of AE-I = mean (1 - 0.25)^2 = 0.5625.
    assert l1[0] == pytest.approx(0.5, abs=1e-6) and l2[0] == pytest.approx(0.5625, abs=1e-6)
    flat = pixels.reshape(len(pixels), -1)
    np.testing.assert_allclose(l1, np.abs(flat - AE_II_PIXEL).mean(1), atol=1e-6)
    np.testing.assert_allclose(l2, ((flat - AE_I_PIXEL) ** 2).mean(1), atol=1e-6)


@pytest.mark.parametrize("temperature", [10, 40])
def test_build_detectors_scores_the_jsd_at_the_temperature_its_name_gives_with_ae_i(temperature):
    from scipy.spatial.distance import jensenshannon

    from advflow.defenses.stage import build_detectors

    autoencoders = {"ae_i": constant_autoencoder("ae_i", AE_I_PIXEL),
                    "ae_ii": constant_autoencoder("ae_ii", AE_II_PIXEL)}
    name = f"magnet_jsd_T{temperature}"
    detector = build_detectors([name], MeanLogits(), autoencoders, None, {}, seed=0)[name]
    pixels = planted_pixels()
    scores = detector.score(torch.as_tensor(2.0 * pixels - 1.0, dtype=torch.float32))
    p = softmax(mean_logits(pixels) / temperature)
    q = softmax(mean_logits(np.full_like(pixels, AE_I_PIXEL)) / temperature)  # the reformer is AE-I
    np.testing.assert_allclose(scores, jensenshannon(p, q, axis=1) ** 2, atol=1e-9)
    assert scores[0] > 1e-3  # the all-ones image: f(x) and f(AE(x)) differ a lot


def test_build_detectors_refuses_an_unknown_detector_naming_it_and_the_known_ones():
    from advflow.defenses.stage import build_detectors

    autoencoders = {"ae_i": constant_autoencoder("ae_i", AE_I_PIXEL),
                    "ae_ii": constant_autoencoder("ae_ii", AE_II_PIXEL)}
    for unknown in ("odin", "magnet_l3"):
        with pytest.raises(ValueError, match=rf"unknown detector '{unknown}'; allowed: magnet_l1, magnet_l2.*mid"):
            build_detectors(["magnet_l1", unknown], MeanLogits(), autoencoders, None, {}, seed=0)
    # the dropout vote is known, but scored by its own rule: the scoring jobs refuse it, naming the ones they score
    with pytest.raises(ValueError, match=r"'dropout_vote' is scored by its own rule \(dropout_vote\).*scoring jobs "
                                         r"know: magnet_l1, magnet_l2, magnet_jsd_T10, magnet_jsd_T40, mid, infopath, "
                                         r"mahalanobis, lid$"):
        build_detectors(["dropout_vote"], MeanLogits(), autoencoders, None, {}, seed=0)


MID_SETTINGS = {"mine": {"hidden": 8, "layers": 1, "steps": 5, "batch_size": 16, "lr": 0.002, "ema_rate": 0.01,
                         "shuffles": 2, "references": 5, "train_size": 20}}


def test_mid_keeps_softmax_of_the_reconstructions_of_ae_i_as_its_references():
    """MID's references are softmax f(AE(x_j)) of clean training images (mine.MIDDetector's i(x)), with AE = AE-I
    (the reformer's). AE-I reconstructs every image as the same constant image here, so every reference is the one
    softmax row of that image, while the clean images' own softmax rows (the wrong side) all differ."""
    from advflow.defenses.stage import mid_detector

    pixels = 0.4 + 0.6 * np.random.default_rng(1).random((20, 1, 6, 6)) ** np.linspace(0.3, 3, 20)[:, None, None, None]
    x = torch.as_tensor(2.0 * pixels - 1.0, dtype=torch.float32)
    detector = mid_detector(MeanLogits(), constant_autoencoder("ae_i", AE_I_PIXEL), MID_SETTINGS, seed=0).fit(x)
    reconstructed = softmax(mean_logits(np.full((1, 1, 6, 6), AE_I_PIXEL)))[0]
    assert np.abs(reconstructed - softmax(mean_logits(np.full((1, 1, 6, 6), AE_II_PIXEL)))[0]).max() > 0.1
    refs = detector.reference_features.numpy()
    assert refs.shape == (5, 3)
    np.testing.assert_allclose(refs, np.tile(reconstructed, (5, 1)), atol=1e-6)
    clean = softmax(mean_logits(pixels))
    assert np.abs(clean - reconstructed).max(1).min() > 0.1  # no clean row passes for a reference
    assert np.ptp(clean, axis=0).max() > 0.01  # and the clean rows differ from one another


def planted_mid_state(references: np.ndarray, w_a: np.ndarray, w_b: np.ndarray) -> dict:
    """A MID state whose statistics network is T(a, b) = w_a . a + w_b . b on softmax rows (an identity first
    layer: ELU is the identity on probabilities)."""
    k = references.shape[1]
    network = {"mlp.0.weight": torch.eye(2 * k), "mlp.0.bias": torch.zeros(2 * k),
               "mlp.2.weight": torch.as_tensor(np.r_[w_a, w_b], dtype=torch.float32)[None, :],
               "mlp.2.bias": torch.zeros(1)}
    return {"network": network, "references": torch.as_tensor(references, dtype=torch.float32),
            "input_shape": [1, 6, 6], "hidden": 2 * k, "layers": 1, "fitted_mi": 0.0}


def test_build_detectors_mid_scores_minus_the_pointwise_mi_computed_by_hand():
    """score(x) = -(T(f(x), f(AE(x))) - log mean_j exp T(f(x), r_j)), AE = AE-I, r_j the saved references."""
    from advflow.defenses.stage import build_detectors

    autoencoders = {"ae_i": constant_autoencoder("ae_i", AE_I_PIXEL),
                    "ae_ii": constant_autoencoder("ae_ii", AE_II_PIXEL)}
    references = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    w_a, w_b = np.array([0.7, -1.1, 0.4]), np.array([1.5, -2.0, 0.5])
    detector = build_detectors(["mid"], MeanLogits(), autoencoders, {"mid": planted_mid_state(references, w_a, w_b)},
                               MID_SETTINGS, seed=0)["mid"]
    pixels = planted_pixels()
    scores = detector.score(torch.as_tensor(2.0 * pixels - 1.0, dtype=torch.float32))
    p = softmax(mean_logits(pixels))
    q = softmax(mean_logits(np.full_like(pixels, AE_I_PIXEL)))
    t_joint = p @ w_a + q @ w_b
    t_refs = (p @ w_a)[:, None] + (references @ w_b)[None, :]
    expected = -(t_joint - np.log(np.exp(t_refs).mean(1)))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # The planted case tells the pairing apart: references paired with f(AE(x)) instead of f(x) would move every score.
    paired_with_q = -(t_joint - np.log(np.exp((q @ w_a)[:, None] + (references @ w_b)[None, :]).mean(1)))
    assert np.abs(paired_with_q - expected).min() > 0.1


class MeanScore:
    """A planted detector: the mean pixel (model space) of each input."""

    name = "mean"

    def score(self, x: torch.Tensor) -> np.ndarray:
        return x.flatten(1).mean(1).double().numpy()


class NegatingReformer:
    """A planted reformer: the classifier's class of -x (MeanLogits: the opposite of its class of x)."""

    def predict(self, classifier: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return classifier(-x).argmax(1).numpy()


def test_score_set_scores_the_adversarial_images_and_their_random_control_each_on_its_own(tmp_path):
    """Each column from its own images: the classifier's and the reformer's classes and the detectors' scores of the
    adversarial images, and the same of the control images (control_*), with the set's labels, success and margins.
    Adversarial images lean bright (class 0), their controls dark (class 1), so a column from the other images
    differs."""
    from advflow.attacks.sets import write_set
    from advflow.defenses.stage import score_set

    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.uniform(-0.2, 0.2, (6, 1, 6, 6)), dtype=torch.float32)
    adversarial = (x + 0.5).clamp(-1, 1)
    control = (x - 0.5).clamp(-1, 1)
    labels = np.array([0, 1, 0, 1, 0, 1])
    margin = np.arange(6.0)
    write_set(tmp_path / "pgd_eps0.1.h5", x=x, adversarial=adversarial, labels=labels, indices=np.arange(6),
              before=labels, logits=MeanLogits()(adversarial), attrs={"attack": "pgd"},
              extra={"margin": margin, "control": control.numpy()})
    columns = score_set(tmp_path / "pgd_eps0.1.h5", {"mean": MeanScore()}, MeanLogits(), NegatingReformer(),
                        torch.device("cpu"))
    adversarial_mean = adversarial.flatten(1).mean(1).double().numpy()
    control_mean = control.flatten(1).mean(1).double().numpy()
    assert (adversarial_mean > 0.2).all() and (control_mean < -0.2).all()
    np.testing.assert_array_equal(columns["label"], labels)
    np.testing.assert_array_equal(columns["success"], labels != 0)  # every adversarial image is class 0
    np.testing.assert_array_equal(columns["margin"], margin)
    np.testing.assert_array_equal(columns["prediction"], np.zeros(6))
    np.testing.assert_array_equal(columns["reformed_prediction"], np.ones(6))
    np.testing.assert_allclose(columns["score_mean"], adversarial_mean, atol=1e-6)
    np.testing.assert_array_equal(columns["control_prediction"], np.ones(6))
    np.testing.assert_array_equal(columns["control_reformed_prediction"], np.zeros(6))
    np.testing.assert_allclose(columns["control_score_mean"], control_mean, atol=1e-6)


def test_a_sweep_set_is_crafted_as_every_set_with_its_values_json_settings_margins_and_control(tmp_path, model):
    """craft_sweep_set goes through craft_set: the sweep's name and strength as attributes (values, not a name to
    parse), the library attack's settings as JSON (readable by advflow.read_set), a margin and a control per input."""
    import h5py

    import advflow
    from advflow.defenses.stage import craft_sweep_set
    from advflow.models.architectures import save_checkpoint
    from conftest import blobs

    save_checkpoint(model, tmp_path / "classifier.pt")
    images, labels = blobs(6, seed=1)
    with h5py.File(tmp_path / "seeds.h5", "w") as h5:
        h5["images"], h5["labels"], h5["indices"] = images, labels, np.arange(6)
        h5.attrs["split"] = "test"
    settings = settings_of(attacks=["bim"], epsilons=[0.1])
    out = tmp_path / "bim_eps0.1.h5"
    row = craft_sweep_set("bim", 0.1, tmp_path / "classifier.pt", tmp_path / "seeds.h5", settings, seed=0,
                          device=torch.device("cpu"), out=out)
    with h5py.File(out) as h5:
        assert (h5.attrs["attack"], h5.attrs["strength"], h5.attrs["norm"]) == ("bim", 0.1, "linf")
        adversarial = h5["adversarial"][:]
        margin, control = h5["extra/margin"][:], h5["extra/control"][:]
    assert margin.shape == (6,) and control.shape == adversarial.shape
    read = advflow.read_set(out)
    assert read.attrs["settings"] == {"epsilon": 0.2, "alpha": pytest.approx(0.2 * settings["bim"]["rel_stepsize"]),
                                      "steps": settings["bim"]["steps"]}  # BIM at ε = 0.1 pixels is IGSM at 0.2
    seeds = torch.as_tensor(images, dtype=torch.float32) / 127.5 - 1
    assert np.abs(adversarial - seeds.numpy()).max() <= 0.2 + 1e-5  # within 2ε of the seeds in model space
    assert row["attacked"] == 6 and 0 <= row["success"] <= 6


class LayeredScore(MeanScore):
    """A planted detector that scores layer by layer: two layers (the mean and minus the mean), the score their sum."""

    name = "layered"

    def scores_and_layers(self, x: torch.Tensor) -> tuple[np.ndarray, list[str], np.ndarray]:
        mean = x.flatten(1).mean(1).double().numpy()
        values = np.stack([mean, -2 * mean], axis=1)
        return values.sum(1), ["first", "second"], values


def test_score_set_stores_a_layered_detectors_per_layer_values_beside_its_score(tmp_path):
    from advflow.attacks.sets import write_set
    from advflow.defenses.metrics import layer_values
    from advflow.defenses.stage import score_set

    x = torch.as_tensor(np.random.default_rng(3).uniform(-0.2, 0.2, (4, 1, 6, 6)), dtype=torch.float32)
    write_set(tmp_path / "pgd_eps0.1.h5", x=x, adversarial=x + 0.3, labels=np.zeros(4, int), indices=np.arange(4),
              before=np.zeros(4, int), logits=MeanLogits()(x + 0.3), attrs={"attack": "pgd"},
              extra={"margin": np.zeros(4), "control": (x - 0.3).numpy()})
    columns = score_set(tmp_path / "pgd_eps0.1.h5", {"layered": LayeredScore()}, MeanLogits(), NegatingReformer(),
                        torch.device("cpu"))
    names, values = layer_values(columns, "layered")
    mean = (x + 0.3).flatten(1).mean(1).double().numpy()
    assert names == ["first", "second"]
    np.testing.assert_allclose(values, np.stack([mean, -2 * mean], axis=1))
    np.testing.assert_allclose(columns["score_layered"], values.sum(1))
    control_names, control = layer_values({k.removeprefix("control_"): v for k, v in columns.items()
                                           if k.startswith("control_") or k == "index"}, "layered")
    np.testing.assert_allclose(control[:, 0], (x - 0.3).flatten(1).mean(1).double().numpy())


def test_the_clean_fitted_detectors_build_from_their_saved_state_and_score_as_fitted(tmp_path):
    """rule fit_detector saves a state (weights_only); the scoring jobs build each detector from it: same scores."""
    from advflow.defenses import registry
    from advflow.defenses.settings import defense_defaults
    from advflow.defenses.stage import build_detectors, load_detector_state

    assert registry.fitted_by_rule() == ("infopath", "mahalanobis", "lid")
    assert set(registry.with_state()) == {"mid", "infopath", "mahalanobis", "lid"}
    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                     torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                     torch.nn.Linear(6 * 4 * 4, 3)).eval()
    x = torch.rand(120, 1, 8, 8) * 2 - 1
    labels = torch.arange(120) % 3
    settings = {**defense_defaults(), "lid": {"train_size": 100, "k": 5, "references": 30}}
    states, fitted = {}, {}
    for name in registry.fitted_by_rule():
        detector = registry.build(name, registry.Built(classifier, {}, {}, settings, 0))
        detector.fit(x[:100], labels[:100].numpy()) if registry.get(name).labels else detector.fit(x[:100])
        torch.save(detector.state_dict(), tmp_path / f"{name}.pt")
        states[name] = load_detector_state(name, tmp_path / f"{name}.pt")
        fitted[name] = detector.score(x[100:])
    built = build_detectors(list(registry.fitted_by_rule()), classifier, {}, states, settings, seed=0)
    for name, detector in built.items():
        np.testing.assert_allclose(detector.score(x[100:]), fitted[name])
    (tmp_path / "broken.pt").write_bytes(b"not a state")
    with pytest.raises(Exception, match="broken.pt.*rule fit_detector"):
        load_detector_state("lid", tmp_path / "broken.pt")


def test_a_study_set_is_scored_with_its_control_set_file_and_a_foreign_control_is_refused(tmp_path):
    from advflow.attacks.sets import write_set
    from advflow.defenses.stage import score_set

    x = torch.as_tensor(np.random.default_rng(4).uniform(-0.2, 0.2, (4, 1, 6, 6)), dtype=torch.float32)
    common = dict(x=x, labels=np.zeros(4, int), before=np.zeros(4, int), attrs={"attack": "fgsm"})
    write_set(tmp_path / "fgsm.h5", adversarial=x + 0.3, indices=np.arange(4), logits=MeanLogits()(x + 0.3), **common)
    write_set(tmp_path / "random_fgsm.h5", adversarial=x - 0.3, indices=np.arange(4), logits=MeanLogits()(x - 0.3),
              **common)
    write_set(tmp_path / "other.h5", adversarial=x - 0.3, indices=np.arange(4) + 10, logits=MeanLogits()(x - 0.3),
              **common)
    columns = score_set(tmp_path / "fgsm.h5", {"mean": MeanScore()}, MeanLogits(), NegatingReformer(),
                        torch.device("cpu"), control_path=tmp_path / "random_fgsm.h5")
    np.testing.assert_allclose(columns["score_mean"], (x + 0.3).flatten(1).mean(1).double().numpy(), atol=1e-6)
    np.testing.assert_allclose(columns["control_score_mean"], (x - 0.3).flatten(1).mean(1).double().numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match="other.h5: not the control of .*fgsm.h5"):
        score_set(tmp_path / "fgsm.h5", {"mean": MeanScore()}, MeanLogits(), NegatingReformer(), torch.device("cpu"),
                  control_path=tmp_path / "other.h5")
