"""Rule aggregate: the GP-aggregated IIP and OIP of one set on one measuring model."""
from advflow.workflow import start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

import logging  # noqa: E402

from advflow.aggregate import aggregate_paths, write_aggregate  # noqa: E402

gp = dict(sm.params.gp)
aggregated = aggregate_paths(sm.input[0], seed=sm.params.seed, grid_step=gp["grid_step"])
write_aggregate(sm.output[0], aggregated)
for name, path in aggregated.items():
    logging.getLogger("advflow.aggregate").info("%s: %s", name, path.hyperparameters)
