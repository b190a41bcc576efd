# advflow: information flow of adversarial inputs through CNN feature maps.
# Run: snakemake --cores all            (default config.yaml)
#      snakemake --cores all --configfile configs/tiny.yaml
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/attack.smk"
include: "rules/information.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
