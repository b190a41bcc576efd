# Helpers of the workflow (no rules): config checks, wildcard constraints, input functions, targets.
import re
import sys
from pathlib import Path

from snakemake.utils import validate

# The scripts import the library from this checkout, so a code change is used without reinstalling;
# jobs (local, conda or Slurm) inherit this environment.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from advflow.workflow.digests import (
    dataset_digest,
    user_model_digests,
    code_digest,
    export_hdf5_locking,
    export_pythonpath,
    release_stale_locks,
)

export_pythonpath(SRC)

# A run killed with SIGKILL (or by a power cut) leaves Snakemake's directory locks behind; the next
# run removes them when no live run holds them (advflow.workflow.digests.release_stale_locks).
if workflow.is_main_process:
    for lock in release_stale_locks():
        print(
            f"advflow: removed {lock}, left by a Snakemake run that was killed",
            file=sys.stderr,
        )

from advflow.workflow import worker
from advflow.workflow.resources import gpu_memory as resources_gpu_memory
from advflow.workflow.catalog import DATASETS, TRAINED_FROM_SCRATCH, locate_dataset
from advflow.workflow.catalog import MODELS as BUILTIN_MODELS
from advflow.workflow.catalog import is_custom, role_model, user_models
from advflow.workflow.catalog import measurements as catalog_measurements
from advflow.workflow.catalog import (
    control_name,
    is_trajectory,
    set_name,
    set_path,
    trajectories_wanted,
    transfer_subsets,
)
from advflow.perturbations.settings import perturbation_settings
from advflow.defenses.settings import (
    SCORED_BY_SCORES_RULE,
    STUDY_PREFIX,
    SWEEP_PATTERN,
    adaptive_guards_of,
    adaptive_reformer,
    adaptive_sets,
    adaptive_targets,
    defense_settings,
    judged,
    sweeps,
    uses_dropout_vote,
)
from advflow.attacks import registry as attack_registry
from advflow.defenses import registry as detector_registry
from advflow.config import (
    check_user_models,
    resolve,
    write_resolved,
    attack_settings,
    canonical,
    check_config,
    check_sizes,
    model_settings,
    teacher_settings,
)

ATTACK_NAMES = list(attack_registry.names())

# First the readable messages (key, what was found, what is allowed), then Snakemake's own
# validation, which also fills in the schema's defaults: the rules read every default from the
# config, never from a literal of their own (the schema is its one home; tests/test_defaults.py).
check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
validate(config, schema="../schemas/config.schema.yaml")
# Counts the dataset cannot supply (attack seeds, held-out images, the defense's and the grid's images).
check_sizes(config, Path(f"data/{config['dataset']}.h5"))
# The user's models, built and run once on a blank batch as a job will (README, "Your own model and data"):
# an import, a checkpoint or a layer name that fails stops the run here, before any job.
USER_MODELS = user_models(config)
if USER_MODELS and workflow.is_main_process:
    check_user_models(config, Path(f"data/{config['dataset']}.h5"))
# Every model name a rule's wildcard may take: advflow's and the user's.
MODEL_NAMES = [*BUILTIN_MODELS, *USER_MODELS]

# HDF5 file locking for every job (docs/recovery.md, "HDF5 on shared filesystems").
export_hdf5_locking(config["hdf5_locking"])

DATASET = config["dataset"]
MODELS = list(config["models"])
RESULTS = f"results/{DATASET}"
ATTACK_SETS = {t: list(a) for t, a in config["attack_sets"].items() if a}
# Batch sizes change no result, so they are not params (changing them reruns nothing); the scripts
# read them from the config.
FEATURES, MI, GP = config["features"], config["mi"], config["aggregate"]


wildcard_constraints:
    dataset="|".join([*DATASETS, *config["datasets"]]),


def code(script):
    """The `code` param of a rule: a digest of its script and the library modules the script
    imports, so that a code change reruns exactly the rules that run it (docs/reruns.md).
    """
    return code_digest(str(Path(workflow.basedir) / "workflow_scripts" / script))


def dataset_settings(wildcards):
    """The dataset's own section of the config (where it lives, or how it is generated); for one of the user's,
    the SHA-256 of its files too (editing them prepares it again, touching them does not).
    """
    settings = config["datasets"].get(wildcards.dataset) or {}
    if is_custom(settings):
        settings = {**settings, "content_sha256": dataset_digest(settings["path"])}
    return canonical(settings)


# A missing dataset stops the run before any job starts, with where we looked and how to get it.
if not Path(f"data/{DATASET}.h5").exists():
    locate_dataset(DATASET, config["datasets"].get(DATASET) or {})


def train_settings(wildcards):
    if wildcards.model in USER_MODELS:
        return user_model_params(wildcards)
    return canonical(model_settings(config, wildcards.model))


#: The user's models the workflow trains (no checkpoint) and those it loads from their checkpoint.
USER_TRAINED = [m for m in USER_MODELS if not config["models"][m].get("checkpoint")]
USER_LOADED = [m for m in USER_MODELS if config["models"][m].get("checkpoint")]


def user_model_params(wildcards):
    """A user's model's settings and the SHA-256 of what it is made of: its factory's source file and its checkpoint
    (content, not time: touching the file reruns nothing, changing it reruns the model and what depends on it).
    """
    settings = model_settings(config, wildcards.model)
    return canonical({**settings, **user_model_digests(settings)})


def distilled_settings(wildcards):
    return canonical(model_settings(config, "distilled"))


def distill_teacher_settings(wildcards):
    return canonical(teacher_settings(config))


def compressed_settings(wildcards):
    return canonical(model_settings(config, "compressed"))


def ensemble_members(wildcards):
    members = model_settings(config, "ensemble")["members"]
    return [f"results/{wildcards.dataset}/models/{m}.pt" for m in members]


def ensemble_settings(wildcards):
    return canonical(model_settings(config, "ensemble"))


def gpu_request():
    """One GPU for the rules that use it, unless the config pins the CPU."""
    return 0 if config["device"] == "cpu" else 1


def gpu_memory(rule):
    """The GPU memory a rule's job holds at most (advflow.workflow.resources): profiles/local runs GPU jobs side by
    side within its `gpu_mem_mb` budget."""
    return resources_gpu_memory(rule, config["device"])


def profile_models(wildcards):
    """The seeds are test images every attacked model classifies correctly."""
    return [f"results/{wildcards.dataset}/models/{t}.pt" for t in ATTACK_SETS]


def attack_params(wildcards):
    return canonical(attack_settings(config, wildcards.attack))


def jsma_params(wildcards):
    return canonical(attack_settings(config, "jsma"))


def set_list(dataset):
    return [
        f"results/{dataset}/adv/{target}/{attack}.h5"
        for target, attacks in ATTACK_SETS.items()
        for attack in attacks
    ]


def control_list(dataset):
    """The random-perturbation control beside every measured adversarial set (docs/method.md, "How a finding is
    decided"); the ensemble's sets enter Table VI only and get none."""
    return [
        f"results/{dataset}/adv/{target}/{control_name(attack)}.h5"
        for target, attacks in ATTACK_SETS.items()
        if target != "ensemble"
        for attack in attacks
    ]


def adversarial_sets(wildcards):
    return set_list(wildcards.dataset) + control_list(wildcards.dataset)


def transfer_pairs(wildcards):
    """(set, measuring model) pairs of Table VI: a set crafted on a member of a transfer group is
    measured on every other member; a set crafted on the ensemble, on each of its members.
    """
    groups = [list(g) for g in config["transfer_groups"]]
    if "ensemble" in config["models"]:
        groups.append(["ensemble", *model_settings(config, "ensemble")["members"]])
    pairs = []
    for target, attacks in ATTACK_SETS.items():
        measured = sorted(
            {
                m
                for g in groups
                if target in g
                for m in g
                if m != target and m != "ensemble"
            }
        )
        for attack in attacks:
            for model in measured:
                pairs.append(
                    (
                        f"results/{wildcards.dataset}/adv/{target}/{attack}.h5",
                        f"results/{wildcards.dataset}/models/{model}.pt",
                    )
                )
    return sorted(pairs)  # params: the order of keys in the config must not matter


def transfer_models(wildcards):
    return sorted({model for _, model in transfer_pairs(wildcards)})


#: Q1's model: the `trajectories` role's (study.trajectories).
TRAJECTORY_MODEL = role_model(config, "trajectories")


def measurements():
    return catalog_measurements(
        ATTACK_SETS,
        config["transfer_groups"],
        config["trajectories"]["n"],
        TRAJECTORY_MODEL,
    )


def trajectory_wanted():
    return trajectories_wanted(
        ATTACK_SETS, config["trajectories"]["n"], TRAJECTORY_MODEL
    )


def measured_set(wildcards):
    return set_path(f"results/{wildcards.dataset}", wildcards.set)


def features_params(wildcards):
    """The storage precision of the maps, which changes the MI. The compression filter and level are lossless and
    the batch size changes no value: the script reads them from the config, so changing them reruns nothing.
    """
    return canonical({"dtype": FEATURES["dtype"]})


def gp_params(wildcards):
    return canonical(GP)


def aggregated_sets():
    """Every measured pair but the trajectories (Q1 compares steps of single inputs)."""
    return [(m, s) for m, s in measurements() if not is_trajectory(s)]


def subset_aggregates():
    """Q5's transferable / non-transferable subsets, aggregated beside their sets."""
    return transfer_subsets(ATTACK_SETS, config["transfer_groups"])


def report_params(wildcards):
    """What the report reads from the config: the study's matrix, the settings it states, and the
    report-only settings. Changing any of them re-renders the report and nothing else.
    """
    keys = (
        "dataset",
        "seed",
        "models",
        "study",
        "inputs",
        "attack_sets",
        "transfer_groups",
        "trajectories",
        "aggregate",
        "mi",
        "report",
        "defense",
    )
    study = {k: config.get(k) for k in keys}
    study["mi"] = {  # batch sizes change no result
        "buckets": MI["buckets"],
        "bias_correction": MI["bias_correction"],
    }
    study["attacks"] = {
        a: attack_settings(config, a)
        for attacks in ATTACK_SETS.values()
        for a in attacks
    }
    return canonical(study)


# The defense stage runs when the config has a `defense` block (rules/defenses.smk).
DEFENSE = defense_settings(config)


def defense_params(*keys):
    """The defense settings one step depends on, and only those (an FPR re-tabulates, it does not rescore)."""
    return canonical({k: DEFENSE[k] for k in keys})


def defense_classifier(wildcards):
    return f"results/{wildcards.dataset}/models/{DEFENSE['classifier']}.pt"


# Detectors fitted on clean training images by rule fit_detector; those whose scoring loads a saved state.
FITTED_BY_RULE = detector_registry.fitted_by_rule()
WITH_STATE = detector_registry.with_state()


# Each sweep set's file name -> (attack, strength): the rules pass the values, never parse the name.
SWEEPS = sweeps(DEFENSE) if DEFENSE else {}


def defense_sweeps():
    return list(SWEEPS)


def defense_study_attacks():
    """The study's attacks crafted on the defense classifier: every detector scores their sets too."""
    return sorted(ATTACK_SETS.get(DEFENSE["classifier"], [])) if DEFENSE else []


def defense_score_inputs(wildcards):
    root = f"results/{wildcards.dataset}/defense"
    scored = wildcards.scored
    inputs = {
        "classifier": defense_classifier(wildcards),
        "ae_i": f"{root}/autoencoders/ae_i.pt",
        "ae_ii": f"{root}/autoencoders/ae_ii.pt",
        "set": (
            f"{root}/inputs/{scored}.h5"
            if scored in ("validation", "clean")
            else f"{root}/adv/{scored}.h5"
        ),
    }
    if scored.startswith(
        STUDY_PREFIX
    ):  # a study set on the defense classifier, its control a file of its own
        attack, target = scored[len(STUDY_PREFIX) :], DEFENSE["classifier"]
        inputs["set"] = f"results/{wildcards.dataset}/adv/{target}/{attack}.h5"
        inputs["control"] = (
            f"results/{wildcards.dataset}/adv/{target}/{control_name(attack)}.h5"
        )
    for detector in defense_scored_detectors():
        if (
            detector in WITH_STATE
        ):  # MID (rule fit_mid) and the detectors of rule fit_detector
            inputs[detector] = f"{root}/detectors/{detector}.pt"
    return inputs


def defense_scored_detectors():
    """The detectors the scoring jobs score (the dropout vote has its own rule)."""
    return [d for d in judged(DEFENSE) if d in SCORED_BY_SCORES_RULE]


def defense_outputs(dataset):
    if not DEFENSE:
        return []
    outputs = [
        f"results/{dataset}/defense/tables",
        f"results/{dataset}/defense/figures",
    ]
    if ADAPTIVE_SETS:
        outputs += [
            f"results/{dataset}/defense/adaptive/tables",
            f"results/{dataset}/defense/adaptive/figures",
        ]
    return outputs


# The adaptive attacks (defense.adaptive): each adaptive set's file name -> (attack, strength, longer), per target.
ADAPTIVE_SETS = adaptive_sets(DEFENSE) if DEFENSE else {}
ADAPTIVE_TARGETS = adaptive_targets(DEFENSE) if DEFENSE else []


def adaptive_files(dataset):
    return [
        f"results/{dataset}/defense/adaptive/{t}/{s}.h5"
        for t in ADAPTIVE_TARGETS
        for s in ADAPTIVE_SETS
    ]


def adaptive_params(target):
    """The settings one adaptive set depends on, and only those: its guards' FPRs and settings, the reformer where
    the target has one, the attacks' block (an FPR of another detector reruns nothing here).
    """
    guards = adaptive_guards_of(target, DEFENSE)
    settings = {
        "detectors": DEFENSE["detectors"] if target == "defense" else [],
        "reformer": adaptive_reformer(target, DEFENSE),
        "fpr": {g: DEFENSE["fpr"][g] for g in guards},
        "adaptive": {k: v for k, v in DEFENSE["adaptive"].items() if k != "targets"},
        **{g: DEFENSE[g] for g in guards if g in FITTED_BY_RULE},
    }
    if "mid" in guards:
        settings["mine"] = DEFENSE["mine"]
    if "dropout_vote" in guards:
        settings["dropout_vote"] = DEFENSE["dropout_vote"]
    return canonical(settings)


def adaptive_attack_inputs(wildcards):
    """What one adaptive set reads: the classifier, the seeds, the validation images and scores (the thresholds),
    the autoencoders, the fitted states of its guards and, for the dropout vote, the vote's scores.
    """
    root = f"results/{wildcards.dataset}/defense"
    inputs = {
        "classifier": defense_classifier(wildcards),
        "seeds": f"{root}/inputs/seeds.h5",
        "validation": f"{root}/inputs/validation.h5",
        "validation_scores": f"{root}/scores/validation.csv",
        "ae_i": f"{root}/autoencoders/ae_i.pt",
        "ae_ii": f"{root}/autoencoders/ae_ii.pt",
    }
    guards = adaptive_guards_of(wildcards.target, DEFENSE)
    for detector in guards:
        if detector in WITH_STATE:
            inputs[detector] = f"{root}/detectors/{detector}.pt"
    return inputs


# Seed 001 (rules/perturbations.smk): perturbation statistics and the grid run with a `perturbations` block; the
# dropout vote when the defense judges the `dropout_vote` detector.
PERTURBATIONS = perturbation_settings(config)


def study_sets_on(dataset, model):
    """(name, set file) of the study's adversarial sets crafted on `model` (not the controls), sorted: the
    config's order of keys must not rerun anything."""
    return sorted(
        (set_name(attack, model), f"results/{dataset}/adv/{model}/{attack}.h5")
        for attack in ATTACK_SETS.get(model, [])
    )


def perturbation_sets(dataset):
    """(name, set file, seeds file) of every adversarial set of the study (sorted: the config's order of keys
    must not rerun anything) and of the defense sweeps."""
    seeds = f"results/{dataset}/inputs/normal_test.h5"
    out = sorted(
        (set_name(attack, target), f"results/{dataset}/adv/{target}/{attack}.h5", seeds)
        for target, attacks in ATTACK_SETS.items()
        for attack in attacks
    )
    if DEFENSE:
        out += [
            (
                s,
                f"results/{dataset}/defense/adv/{s}.h5",
                f"results/{dataset}/defense/inputs/seeds.h5",
            )
            for s in defense_sweeps()
        ]
    return out


def dropout_vote_sets(dataset):
    """(name, kind, file) of every set the dropout vote runs on: the clean validation and held-out images, the
    defense sweeps, and the study's sets crafted on the defense classifier."""
    root = f"results/{dataset}/defense"
    out = [(n, "clean", f"{root}/inputs/{n}.h5") for n in ("validation", "clean")]
    out += [(s, "defense sweep", f"{root}/adv/{s}.h5") for s in defense_sweeps()]
    out += [
        (name, "study", path)
        for name, path in study_sets_on(dataset, DEFENSE["classifier"])
    ]
    return out


def dropout_outputs(dataset):
    return [f"results/{dataset}/defense/dropout"] if uses_dropout_vote(DEFENSE) else []


def seed001_outputs(dataset):
    if not PERTURBATIONS:
        return dropout_outputs(dataset)
    return [
        f"results/{dataset}/seed001/perturbations",
        f"results/{dataset}/seed001/grid.h5",
        f"results/{dataset}/seed001/grid",
    ] + dropout_outputs(dataset)


def intermediate_targets():
    """Every file the workflow writes on the way to the results: they are targets of `rule all` too, so
    a missing one (deleted, moved aside as damaged, or removed by Snakemake when its job failed) is rebuilt
    by the next plain run, which Snakemake does not do for a file that only feeds outputs already there.
    """
    targets = [f"data/{DATASET}.h5"]
    targets += [f"{RESULTS}/models/{m}.pt" for m in MODELS]
    if "distilled" in MODELS:
        targets += [
            f"{RESULTS}/models/distilled_teacher.pt",
            f"{RESULTS}/models/distilled_teacher.json",
            f"{RESULTS}/models/distilled_soft_labels.h5",
        ]
    if "compressed" in MODELS:
        targets.append(f"{RESULTS}/models/compressed_trimming.csv")
    if ATTACK_SETS:
        targets += [
            f"{RESULTS}/inputs/normal_train.h5",
            f"{RESULTS}/inputs/normal_test.h5",
        ]
    for m, s in measurements():
        targets += [f"{RESULTS}/features/{m}/{s}.h5", f"{RESULTS}/mi/{m}/{s}.h5"]
    targets += [
        f"{RESULTS}/aggregates/{m}/{s}.{subset}.csv"
        for m, s, subset in subset_aggregates()
    ]
    if DEFENSE:
        root = f"{RESULTS}/defense"
        targets += [f"{root}/inputs/{n}.h5" for n in ("seeds", "validation", "clean")]
        targets += [f"{root}/autoencoders/{ae}.pt" for ae in ("ae_i", "ae_ii")]
        targets += [
            f"{root}/detectors/{d}.pt" for d in judged(DEFENSE) if d in WITH_STATE
        ]
        targets += [f"{root}/adv/{s}.h5" for s in defense_sweeps()]
        targets += adaptive_files(DATASET)
        targets += [
            f"{root}/scores/{s}.csv"
            for s in [
                "validation",
                "clean",
                *defense_sweeps(),
                *(STUDY_PREFIX + a for a in defense_study_attacks()),
            ]
        ]
    return targets


def final_targets():
    targets = [f"{RESULTS}/models/{m}.json" for m in MODELS]
    targets += intermediate_targets()
    if ATTACK_SETS:
        targets += (
            set_list(DATASET)
            + control_list(DATASET)
            + [
                f"{RESULTS}/tables/attacks.csv",
                f"{RESULTS}/tables/transferability.csv",
            ]
        )
    if trajectory_wanted():
        targets.append(f"{RESULTS}/trajectories/{TRAJECTORY_MODEL}/jsma.h5")
        targets.append(f"{RESULTS}/trajectories/{TRAJECTORY_MODEL}/random_jsma.h5")
    targets += [f"{RESULTS}/paths/{m}/{s}.csv" for m, s in measurements()]
    targets += [f"{RESULTS}/aggregates/{m}/{s}.csv" for m, s in aggregated_sets()]
    targets += defense_outputs(DATASET)
    targets += seed001_outputs(DATASET)
    if ATTACK_SETS:
        targets.append(f"{RESULTS}/report.html")
    return targets
