"""Rule aggregate: the GP-aggregated IIP and OIP of one set on one measuring model."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

import logging  # noqa: E402

from advflow.information.aggregate import aggregate_paths, write_aggregate  # noqa: E402
from advflow.information.paths import read_mi_record  # noqa: E402

ready()

gp = dict(sm.params.gp)
# The MI file, checked, says how many inputs and layers the paths CSV (the same job's) must hold.
record = read_mi_record(sm.input.mi, model=sm.wildcards.model, set_=sm.wildcards.set)
aggregated = aggregate_paths(sm.input.paths, seed=sm.params.seed, grid_step=gp["grid_step"], record=record)
write_aggregate(sm.output[0], aggregated)
for name, path in aggregated.items():
    logging.getLogger("advflow.information.aggregate").info("%s: %s", name, path.hyperparameters)
