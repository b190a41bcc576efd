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
from advflow.config import check_config, model_settings, teacher_settings

# First the readable messages (key, what was found, what is allowed), then Snakemake's own
# validation, which also fills in the schema's defaults.
check_config(config, workflow.source_path("../schemas/config.schema.yaml"))
validate(config, schema="../schemas/config.schema.yaml")

DATASET = config["dataset"]
MODELS = list(config["models"])
RESULTS = f"results/{DATASET}"


wildcard_constraints:
    dataset="|".join(DATASETS),


def dataset_settings(wildcards):
    """The dataset's own section of the config (where it lives, or how it is generated)."""
    return (config.get("datasets") or {}).get(wildcards.dataset) or {}


# A missing dataset stops the run before any job starts, with where we looked and how to get it.
if not Path(f"data/{DATASET}.h5").exists():
    locate_dataset(DATASET, (config.get("datasets") or {}).get(DATASET) or {})


def train_settings(wildcards):
    return model_settings(config, wildcards.model)


def distilled_settings(wildcards):
    return model_settings(config, "distilled")


def distill_teacher_settings(wildcards):
    return teacher_settings(config)


def compressed_settings(wildcards):
    return model_settings(config, "compressed")


def ensemble_members(wildcards):
    members = model_settings(config, "ensemble")["members"]
    return [f"results/{wildcards.dataset}/models/{m}.pt" for m in members]


def ensemble_settings(wildcards):
    return model_settings(config, "ensemble")


def gpu_request():
    """One GPU for the rules that use it, unless the config pins the CPU."""
    return 0 if config.get("device", "auto") == "cpu" else 1


def final_targets():
    return [f"{RESULTS}/models/{m}.json" for m in MODELS]
