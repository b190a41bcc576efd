# advflow: information flow of adversarial inputs through CNN feature maps.
# Run: snakemake --cores all            (default config.yaml)
#      snakemake --cores all --configfile configs/tiny.yaml
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("8.0")


# The config is config.yaml beside this Snakefile, or else exactly the --configfile preset(s) given: a
# preset replaces config.yaml rather than adding to it, and neither depends on the directory Snakemake
# is started from. Keys a config leaves out take the schema's and the library's defaults; the run's
# complete settings are written to results/{dataset}/config.resolved.yaml (README, "Presets").
# config.yaml is read by advflow first, so that a YAML error names the file, the line and the column (a file
# given with --configfile is read by Snakemake before this runs: `python -m advflow.config FILE` says where).
if not workflow.overwrite_configfiles:
    sys.path.insert(0, str(Path(workflow.basedir) / "src"))
    from advflow.config import load_config_file

    load_config_file(workflow.source_path("config.yaml"))

    configfile: workflow.source_path("config.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/attacks.smk"
include: "rules/information.smk"
include: "rules/defenses.smk"
include: "rules/perturbations.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),


# The run's complete settings beside its results (an older, different file is kept, not overwritten).
# A local run starts the warm worker that its jobs fork from (advflow.workflow.worker; docs/warm-worker.md).
onstart:
    kept = write_resolved(f"{RESULTS}/config.resolved.yaml", resolve(config))
    if kept:
        print(
            f"advflow: settings changed; the previous resolved config is kept as {kept}",
            file=sys.stderr,
        )
    # Not for a Slurm run (jobs on other nodes) nor conda/apptainer (the jobs' own Python).
    deployed = getattr(workflow.deployment_settings, "deployment_method", None)
    local = workflow.local_exec and not workflow.touch and not deployed
    if local and config["warm_worker"]:
        worker.launch(
            ".snakemake/log/advflow-worker.log", cuda_workers=config["cuda_workers"]
        )


onsuccess:
    worker.stop()
    if Path(f"{RESULTS}/report.html").exists():
        print(
            f"advflow: done; the report is {RESULTS}/report.html", file=sys.stderr
        )


onerror:
    worker.stop()
