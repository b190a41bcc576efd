# Helpers of the workflow (no rules): config checks, wildcard constraints, input functions, targets.
import sys
from pathlib import Path

from snakemake.utils import validate

# The scripts import the library from this checkout, so a code change is used without reinstalling;
# jobs (local, conda or Slurm) inherit this environment.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)

from advflow.workflow import export_pythonpath

export_pythonpath(SRC)

from advflow.catalog import DATASETS, TRAINED_FROM_SCRATCH, locate_dataset
from advflow.catalog import MODELS as MODEL_NAMES
from advflow.config import (
    ATTACK_DEFAULTS,
    attack_settings,
    canonical,
    check_config,
    model_settings,
    teacher_settings,
)

ATTACK_NAMES = list(ATTACK_DEFAULTS) + ["jsma_control"]

# First the readable messages (key, what was found, what is allowed), then Snakemake's own
# validation, which also fills in the schema's defaults.
check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
validate(config, schema="../schemas/config.schema.yaml")

DATASET = config["dataset"]
MODELS = list(config["models"])
RESULTS = f"results/{DATASET}"
ATTACK_SETS = {t: list(a) for t, a in (config.get("attack_sets") or {}).items() if a}
config.setdefault("inputs", {}).setdefault("n", 20)
config.setdefault("trajectories", {}).setdefault("n", 3)
config.setdefault("attacks", {})


wildcard_constraints:
    dataset="|".join(DATASETS),


def dataset_settings(wildcards):
    """The dataset's own section of the config (where it lives, or how it is generated)."""
    return canonical((config.get("datasets") or {}).get(wildcards.dataset) or {})


# A missing dataset stops the run before any job starts, with where we looked and how to get it.
if not Path(f"data/{DATASET}.h5").exists():
    locate_dataset(DATASET, (config.get("datasets") or {}).get(DATASET) or {})


def train_settings(wildcards):
    return canonical(model_settings(config, wildcards.model))


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
    return 0 if config.get("device", "auto") == "cpu" else 1


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


def adversarial_sets(wildcards):
    return set_list(wildcards.dataset)


def transfer_pairs(wildcards):
    """(set, measuring model) pairs of Table VI: a set crafted on a member of a transfer group is
    measured on every other member; a set crafted on the ensemble, on each of its members.
    """
    groups = [list(g) for g in config.get("transfer_groups") or []]
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
    return pairs


def transfer_models(wildcards):
    return sorted({model for _, model in transfer_pairs(wildcards)})


def final_targets():
    targets = [f"{RESULTS}/models/{m}.json" for m in MODELS]
    if ATTACK_SETS:
        targets += set_list(DATASET) + [
            f"{RESULTS}/tables/attacks.csv",
            f"{RESULTS}/tables/transferability.csv",
        ]
    if "jsma" in ATTACK_SETS.get("good_init", []) and config["trajectories"]["n"] > 0:
        targets.append(f"{RESULTS}/trajectories/good_init/jsma.h5")
    return targets
