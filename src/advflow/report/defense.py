"""The report's "Defenses" section: seed 003's MagNet + MID against transfer attacks (rule ``defense_tables``).

Reads ``defense/tables/*.csv`` and ``defense/figures/*.png`` and states what the numbers show against the seed's:
each defense rate with its 95 % Wilson interval over its denominator, and whether the seed's published number lies
inside it (consistent), below it (ours higher) or above it (ours lower); and, per detector, on how many sets its
AUC's 95 % interval lies above the AUC it reaches on the set's random control (a random perturbation of the same
size), i.e. whether it detects the attack rather than any perturbation. A difference from the seed is not a
refutation of it: the classifier, N_d and the attacks' budgets differ, and the setting says so. The page shows each
table with its intervals in the cells ("84.0 % [70.1 %, 92.3 %]"); the CSVs hold them as columns.
"""

from __future__ import annotations

import csv
import html
import math
from pathlib import Path
from typing import Any

from advflow.defenses.settings import defense_defaults, defense_settings
from advflow.information.shifts import wilson
from advflow.workflow.errors import ConfigError
from advflow.report import adaptive
from advflow.report import findings as fx
from advflow.report.plotting import Figure, FigureBytes
from advflow.report.study import Study

KEY = "defense"
TITLE = "Defenses and detectors against transfer attacks: MagNet and MID (seed 003), the dropout vote, the " \
        "information-path detector, Mahalanobis and LID"
TABLES = ("clean_accuracy.csv", "thresholds.csv", "table1_defense_rate.csv", "table2_defense_rate.csv",
          "detectors.csv", "worst_case.csv", "ranking.csv", "detector_pairs.csv", "supervised.csv", "layers.csv")
#: Ours; the published baselines it is ranked against first (the others follow).
OURS, BASELINES = "infopath", ("mahalanobis", "lid")
CAPTIONS = {
    "clean_accuracy.csv": "Clean accuracy on held-out test images without and with the defense, and what it costs: "
                          "correct images the detectors flag, correct images the reformer turns wrong, wrong ones it "
                          "turns right; the seed's Fashion-MNIST numbers below.",
    "thresholds.csv": "Each detector's threshold: the (1 − FPR) quantile of its scores on the clean validation "
                      "images.",
    "table1_defense_rate.csv": "Table 1 (seed 003): defense rate (flagged by a detector, or classified correctly "
                               "after the reformer) vs ε in [0, 1] pixel units, over all attacked inputs and over "
                               "the successful ones, each with its 95 % Wilson interval; flagged: attacked inputs a "
                               "detector flags, beside control flagged: the same seeds perturbed at random by the "
                               "attack's own size; seed003: the seed's number in % (its column order is uncertain "
                               "in the extracted text).",
    "table2_defense_rate.csv": "Table 2 (seed 003): defense rate vs the confidence κ, columns as Table 1; "
                               "reached_kappa: inputs whose achieved logit margin reaches κ.",
    "worst_case.csv": "The worst case over attacks: a seed counts as detected only if every attack's version of it "
                      "is flagged (over the successful inputs: every successful version; seeds no attack fooled are "
                      "left out), since an attacker picks the attack a detector misses; per family (the L∞ sweeps at "
                      "one ε, the κ sweeps at one κ): TPR at the detector's threshold (Wilson interval) and the ROC AUC "
                      "of each seed's lowest score (bootstrap interval).",
    "ranking.csv": "Detectors ranked by ROC AUC per set and denominator, with 95 % bootstrap intervals; rank = 1 + "
                   "the number of detectors whose AUC is better beyond its paired interval (ties share a rank).",
    "detector_pairs.csv": "Every pair of detectors per set: the difference of their AUCs on the same inputs with its "
                          "95 % paired-bootstrap interval: better / worse / tied within the interval.",
    "supervised.csv": "Supervised variants (as the Mahalanobis and LID reference codes combine layers): a logistic "
                      "regression on each detector's per-layer values, trained on one attack at its largest strength "
                      "(its controls and clean images as negatives), cross-fitted over 5 folds of the seeds and of the "
                      "clean images: every input is scored by the fold's regression that never saw it. 'seen' the "
                      "attack it was trained on, 'unseen' every other; beside it the unsupervised detector's AUC on "
                      "the same inputs.",
    "layers.csv": "Each layered detector's per-layer view (the information-path detector's IIP and OIP values, "
                  "Mahalanobis' and LID's layer scores): each layer's ROC AUC alone, clean vs each attack at its "
                  "largest strength (successful inputs), its separation max(AUC, 1 − AUC), and the attack's AUC minus "
                  "its random control's with a paired-bootstrap interval over the same seeds (vs control).",
    "detectors.csv": "Each detector alone on each set: ROC AUC (95 % percentile-bootstrap interval) and TPR at 1 % "
                     "and 5 % FPR (thresholds on the clean held-out images; Wilson intervals), over all attacked "
                     "inputs and over the successful ones, beside its AUC and TPR on the set's random control; "
                     "vs control: whether the AUC's interval lies above the control's.",
}


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            try:
                row[key] = float(value) if value not in ("", None) and key not in ("attack", "detector", "over",
                                                                                    "note", "defense") else value
            except ValueError:
                pass
    return rows


def comparison(rows: list[dict[str, Any]], strength: str) -> list[str]:
    """Per attack: our defense rate range, the seed's, and how many of the seed's numbers lie inside, below or
    above our 95 % intervals (over all attacked inputs)."""
    out = []
    for attack in dict.fromkeys(r["attack"] for r in rows):
        mine = [r for r in rows if r["attack"] == attack]
        inside = below = above = 0
        for r in mine:
            seed = r.get("seed003")
            if not isinstance(seed, float) or not math.isfinite(seed):
                continue
            low, high = (r["defense_rate_attacked_low"], r["defense_rate_attacked_high"]) \
                if "defense_rate_attacked_low" in r else wilson(r["defense_rate_attacked"], r["inputs"])
            if low <= seed / 100 <= high:
                inside += 1
            elif seed / 100 < low:
                below += 1
            else:
                above += 1
        rates = [r["defense_rate_attacked"] for r in mine if math.isfinite(r["defense_rate_attacked"])]
        seeds = [r["seed003"] for r in mine if isinstance(r.get("seed003"), float) and math.isfinite(r["seed003"])]
        ours = f"{fx.percent(min(rates))}–{fx.percent(max(rates))}" if rates else "n/a"
        theirs = f"{min(seeds):.1f}–{max(seeds):.1f} %" if seeds else "none published"
        compared = inside + below + above
        verdict = (f"the seed's number lies inside our 95 % interval at {inside} of {compared} {strength}s, below it "
                   f"(ours higher) at {below}, above it (ours lower) at {above}" if compared
                   else "nothing to compare")
        successful = [int(r["successful"]) for r in mine]
        premise = ("" if any(successful) else " No input fooled the undefended classifier at any strength, so these "
                   "rates describe the defense on inputs that were not adversarial, not its robustness.")
        out.append(f"{attack}: defense rate {ours} over {int(mine[0]['inputs'])} attacked inputs per {strength}, "
                   f"{min(successful)}–{max(successful)} of them successful on the undefended classifier (seed 003: "
                   f"{theirs}); {verdict}.{premise}")
    return out


def detector_statements(rows: list[dict[str, Any]]) -> list[str]:
    """Per detector, over the successful inputs: its AUC range and on how many sets its AUC's 95 % interval lies
    above, overlaps or lies below its AUC on the set's random control."""
    out = []
    for detector in dict.fromkeys(r["detector"] for r in rows):
        mine = [r for r in rows if r["detector"] == detector and r["over"] == "successful"]
        judged = [r for r in mine if r.get("vs_control") in ("above control", "inconclusive", "below control")]
        aucs = [r["auc"] for r in mine if isinstance(r["auc"], float) and math.isfinite(r["auc"])]
        if not aucs:
            out.append(f"{detector}: no set with a successful adversarial input, nothing to judge.")
            continue
        counts = {v: sum(r["vs_control"] == v for r in judged) for v in ("above control", "inconclusive",
                                                                           "below control")}
        out.append(f"{detector}: ROC AUC {min(aucs):.3f}–{max(aucs):.3f} over the successful inputs of {len(aucs)} "
                   f"sets; its 95 % interval lies above its AUC on the random control of the same size on "
                   f"{counts['above control']} of {len(judged)} sets (it detects the attack, not only a perturbation), "
                   f"overlaps it on {counts['inconclusive']} (inconclusive) and lies below it on "
                   f"{counts['below control']}.")
    return out


def ranking_statements(pairs: list[dict[str, Any]], ours: str = OURS) -> list[str]:
    """Where ``ours`` wins, ties and loses against each other detector, over the attacked inputs of every sweep set:
    counts of the paired-bootstrap verdicts on the AUC difference, and the attacks where it is better or worse.
    Nothing here claims more than an interval says: a tie is "tied within the interval"."""
    mine = [r for r in pairs if r.get("over") == "attacked" and ours in (r["detector"], r["other"])]
    if not mine:
        return []
    flip = {"better": "worse", "worse": "better"}
    out = []
    others = list(dict.fromkeys(r["other"] if r["detector"] == ours else r["detector"] for r in mine))
    order = {d: i for i, d in enumerate(others)}
    others = sorted(others, key=lambda d: (d not in BASELINES, order[d]))
    for other in others:
        rows = [r for r in mine if other in (r["detector"], r["other"])]
        verdicts = [(r["attack"], r["strength"], r["verdict"] if r["detector"] == ours else flip.get(r["verdict"],
                                                                                                  r["verdict"]))
                    for r in rows]
        count = {v: sum(x[2] == v for x in verdicts) for v in ("better", "tied within the interval", "worse")}
        where = {v: sorted({a for a, _, x in verdicts if x == v}) for v in ("better", "worse")}
        text = (f"{ours} vs {other}: better on {count['better']}, tied within the interval on "
                f"{count['tied within the interval']}, worse on {count['worse']} of {len(verdicts)} sets")
        details = [f"{v} against {', '.join(where[v])}" for v in ("better", "worse") if where[v]]
        families = []
        for family in dict.fromkeys(_family(a) for a, _, _ in verdicts):
            mine_here = [x for a, _, x in verdicts if _family(a) == family]
            families.append(f"{family} {sum(x == 'better' for x in mine_here)}/"
                            f"{sum(x == 'tied within the interval' for x in mine_here)}/"
                            f"{sum(x == 'worse' for x in mine_here)}")
        by_family = f"; better/tied/worse by family: {', '.join(families)}" if len(families) > 1 else ""
        out.append(text + (f" ({'; '.join(details)})" if details else "") + by_family + ".")
    return out


def _family(attack: str) -> str:
    """The attack family a set belongs to: the L∞ sweeps (over ε), the L2/L1 sweeps (over κ) or the study's sets."""
    from advflow.defenses.settings import EPSILON_ATTACKS, KAPPA_ATTACKS

    if attack in EPSILON_ATTACKS:
        return "L∞ sweeps"
    if attack in KAPPA_ATTACKS:
        return "L2/L1 sweeps"
    return "the study's sets"


def supervised_statements(rows: list[dict[str, Any]]) -> list[str]:
    """Per detector with a supervised variant, over the attacked held-out inputs: its AUC range on the attack it was
    trained on ("seen") and on the others ("unseen"), beside the unsupervised detector's on the same inputs."""
    out = []

    def span(values: list[float]) -> str:
        finite = [v for v in values if isinstance(v, float) and math.isfinite(v)]
        return f"{min(finite):.2f}–{max(finite):.2f}" if finite else "n/a"

    for detector in dict.fromkeys(r["detector"] for r in rows):
        mine = [r for r in rows if r["detector"] == detector and r["over"] == "attacked"]
        seen = [r for r in mine if r["seen"] == "seen"]
        unseen = [r for r in mine if r["seen"] == "unseen"]
        folds = next((int(float(r["folds"])) for r in mine if str(r.get("folds", "")).strip()), None)
        how = f"cross-fitted over {folds} folds of the seeds" if folds else "scored on held-out seeds"
        out.append(f"{detector}, supervised (trained on one attack, {how}): AUC {span([r['auc'] for r in seen])} on "
                   f"the attack it was trained on ({len(seen)} sets, seen; intervals "
                   f"{span([r['auc_low'] for r in seen] + [r['auc_high'] for r in seen])}), "
                   f"{span([r['auc'] for r in unseen])} on the others ({len(unseen)} sets, unseen); unsupervised on "
                   f"the same inputs {span([r['unsupervised_auc'] for r in mine])}.")
    return out


def layer_statements(rows: list[dict[str, Any]]) -> list[str]:
    """Per layered detector: in how many (layer, attack) pairs its layer alone separates the attack better than the
    attack's random control of the same size (the paired interval of the AUC difference above 0), and which layers do
    so for most attacks, or the reverse: a layer that flags the control as well detects the perturbation's size."""
    out = []
    for detector in dict.fromkeys(r["detector"] for r in rows):
        mine = [r for r in rows if r["detector"] == detector and r.get("vs_control") in ("above control",
                                                                                        "inconclusive",
                                                                                        "below control")]
        if not mine:
            continue
        attacks = len({r["attack"] for r in mine})
        count = {v: sum(r["vs_control"] == v for r in mine) for v in ("above control", "inconclusive",
                                                                      "below control")}

        def most(verdict: str) -> list[str]:
            values = list(dict.fromkeys(r["value"] for r in mine))
            return [v for v in values if sum(r["value"] == v and r["vs_control"] == verdict for r in mine) * 2 > attacks]

        above, below = most("above control"), most("below control")
        text = (f"{detector}, layer by layer against each attack's random control ({attacks} attacks at their largest "
                f"strength): above the control in {count['above control']}, inconclusive in {count['inconclusive']}, "
                f"below in {count['below control']} of {len(mine)} (layer, attack) pairs")
        details = ([f"above for most attacks in {', '.join(above)}"] if above else []) + \
                  ([f"below (the layer flags noise of the same size better than the attack) for most attacks in "
                    f"{', '.join(below)}"] if below else [])
        out.append(text + (f"; {'; '.join(details)}" if details else "") + ".")
    return out


def anchor_statement(rows: list[dict[str, Any]]) -> str | None:
    """Mahalanobis and LID on the large-step L∞ sets (ε ≥ 0.3), each beside the AUCs near 0.99 both papers report for
    FGSM/BIM on MNIST and CIFAR-10: stated per detector, and why ours may differ, never glossed."""
    large = [r for r in rows if r["detector"] in BASELINES and r["attack"] in ("pgd", "bim") and r["over"] == "attacked"
             and isinstance(r.get("strength"), float) and r["strength"] >= 0.3 and isinstance(r.get("auc"), float)
             and math.isfinite(r["auc"])]
    if not large:
        return None
    parts = []
    for detector in dict.fromkeys(r["detector"] for r in large):
        aucs = [r["auc"] for r in large if r["detector"] == detector]
        verdict = "near the anchors" if min(aucs) >= 0.95 else "below the anchors"
        parts.append(f"{detector} {min(aucs):.2f}–{max(aucs):.2f} over {len(aucs)} sets ({verdict})")
    below = any(min(r["auc"] for r in large if r["detector"] == d) < 0.95 for d in dict.fromkeys(r["detector"]
                                                                                                  for r in large))
    why = (" What differs here for a detector below them: layers combined without supervision (fitted on clean data "
           "only, where the reference codes train a logistic regression on the attack they are tested on: the "
           "supervised rows), the number of seeds N_d, the classifier, and for LID one fixed clean reference batch; "
           "which of these it is is not established on this run." if below else "")
    return (f"Anchors: Lee et al. and Ma et al. report ROC AUCs near 0.99 for large-step L∞ attacks on MNIST and "
            f"CIFAR-10. Here, on PGD and BIM at ε ≥ 0.3 over all attacked inputs: {'; '.join(parts)}.{why}")


def _cell(row: dict[str, Any], key: str, rate: bool) -> str:
    value = row.get(key)
    if not isinstance(value, float) or not math.isfinite(value):
        return row.get("note") or "n/a"
    text = fx.percent if rate else (lambda v: f"{v:.3f}")
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    if isinstance(low, float) and isinstance(high, float) and math.isfinite(low) and math.isfinite(high):
        return f"{text(value)} [{text(low)}, {text(high)}]"
    return text(value)


#: What the page shows of each table: (column, header key, a rate?); intervals go into the cells.
DISPLAY = {
    "rates": (("inputs", False), ("successful", False), ("defense_rate_attacked", True),
              ("defense_rate_successful", True), ("flagged", True), ("control_flagged", True), ("seed003", False)),
    "detectors.csv": (("n_adversarial", False), ("auc", False), ("control_auc", False), ("vs_control", False),
                      ("tpr_at_1", True), ("tpr_at_5", True), ("control_tpr_at_5", True)),
}


def display_rows(name: str, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The rows as the page shows them: interval columns folded into their value's cell."""
    if name.startswith("table"):
        keys = ("attack", "epsilon" if name.startswith("table1") else "kappa")
        shown = DISPLAY["rates"] + ((("reached_kappa", False),) if name.startswith("table2") else ())
    elif name == "detectors.csv":
        keys, shown = ("detector", "attack", "strength", "over"), DISPLAY[name]
    else:
        return rows, tuple(rows[0]) if rows else ()
    out = []
    for row in rows:
        display = {k: row.get(k) for k in keys}
        for key, rate in shown:
            value = row.get(key)
            display[key] = (_cell(row, key, rate) if f"{key}_low" in row or (rate and isinstance(value, float))
                            else value)
        out.append(display)
    return out, keys + tuple(key for key, _ in shown)


def classifier(study: Study) -> str:
    """The undefended classifier the defense stage attacked, as the stage resolves it (the block's ``classifier``,
    else :func:`advflow.defenses.settings.defense_defaults`'s): any model of the config, the user's too."""
    try:
        return str((defense_settings(dict(study.config)) or defense_defaults())["classifier"])
    except (ConfigError, KeyError, TypeError, ValueError):  # a block the stage would refuse: say what it names
        return str((study.config.get("defense") or {}).get("classifier") or defense_defaults()["classifier"])


def setting(study: Study) -> str:
    block = dict(study.config.get("defense") or {})
    return html.escape(
        f"Transfer (oblivious) attacks crafted on the undefended {classifier(study)} and shown to "
        f"the defended classifier; detectors {', '.join(block.get('detectors') or ['magnet_l1', 'magnet_l2', 'mid'])}"
        f", the reformer {'on' if block.get('reformer', True) else 'off'}; N_d = {block.get('n', 1000)} seeds "
        f"(seed 003: 1,000). The seed's numbers are for its own classifier (94.34 % clean accuracy) and attack "
        f"budgets; the complete settings are in config.resolved.yaml.")


def section(study: Study, root: Path, html_table: Any, figure_html: Any) -> str:
    """The section's HTML (empty when the run has no defense stage)."""
    tables, figures = root / "tables", root / "figures"
    if not tables.is_dir():
        return ""
    parts = [f'<section id="{KEY}" data-question="{KEY}"><h2>{html.escape(TITLE)}</h2>',
             f'<p class="setting"><b>Setting.</b> {setting(study)}</p>']
    for name in ("defense_rate.png", "defense_roc.png", "infopath_layers.png"):
        if (figures / name).is_file():
            caption = (figures / f"{Path(name).stem}.rst").read_text().strip()
            parts.append(figure_html(Figure(name, FigureBytes((figures / name).read_bytes()), caption)))
    statements, ranking = [], []
    for name in TABLES:
        if (tables / name).is_file():
            rows = read_rows(tables / name)
            caption = CAPTIONS[name]
            kept = rows
            if name == "detectors.csv":  # a row over no successful input says only that; one sentence says it once
                kept = [r for r in rows if not (r.get("over") == "successful" and not r.get("n_adversarial"))]
                if len(kept) < len(rows):
                    caption += (f" Left out here (in the CSV): {len(rows) - len(kept)} rows over the successful "
                                f"inputs of sets where no input fooled the undefended classifier.")
            shown, columns = display_rows(name, kept)
            parts.append(html_table(f"defense_{name}", shown, columns, caption, href=f"results:defense/tables/{name}"))
            if name.startswith("table1"):
                statements += comparison(rows, "ε")
            elif name.startswith("table2"):
                statements += comparison(rows, "κ")
            elif name == "detectors.csv":
                statements += detector_statements(rows)
                anchor = anchor_statement(rows)
                if anchor:
                    ranking.append(anchor)
            elif name == "detector_pairs.csv":
                ranking = ranking_statements(rows) + ranking
            elif name == "supervised.csv":
                ranking += supervised_statements(rows)
            elif name == "layers.csv":
                ranking += layer_statements(rows)
    if statements:
        parts.append("<h3>Against seed 003</h3><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in statements)
                     + "</ul>")
    if ranking:
        parts.append("<h3>Detectors side by side</h3><p class=\"setting\">Every detector in the ranking is "
                     "unsupervised (fitted on clean data only; the supervised variants, trained on one attack, are "
                     "named so) and faces transfer attacks that ignore it. Each comparison is the difference of two "
                     "detectors' ROC AUCs on the same inputs with its 95 % paired-bootstrap interval.</p><ul>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in ranking) + "</ul>")
    fprs = {r["detector"]: float(r["fpr"]) for r in read_rows(tables / "thresholds.csv")} \
        if (tables / "thresholds.csv").is_file() else {}
    parts.append(adaptive.section(root / "adaptive", read_rows, html_table, figure_html, fprs))
    parts.append("</section>")
    return "\n".join(parts)
