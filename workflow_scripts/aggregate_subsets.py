"""Rule aggregate_subsets: Q5's transferable and non-transferable inputs of one set on another model, aggregated."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

import logging  # noqa: E402

from advflow.information.aggregate import MIN_SUBSET, aggregate_subsets, write_aggregate  # noqa: E402
from advflow.information.paths import read_mi_record  # noqa: E402
from advflow.workflow.catalog import set_name  # noqa: E402

ready()

log = logging.getLogger("advflow.information.aggregate")
gp = dict(sm.params.gp)
record = read_mi_record(sm.input.mi, model=sm.wildcards.model, set_=set_name(sm.wildcards.attack, sm.wildcards.target))
subsets = aggregate_subsets(sm.input.paths, sm.input.adversarial, seed=sm.params.seed, grid_step=gp["grid_step"],
                            record=record)
for subset, (count, aggregated) in subsets.items():
    write_aggregate(sm.output[subset], aggregated)  # no rows below MIN_SUBSET inputs: nothing to aggregate
    if aggregated:
        log.info("%s: %d inputs; %s", subset, count, {k: p.hyperparameters for k, p in aggregated.items()})
    else:
        log.info("%s: %d inputs, fewer than %d: not aggregated", subset, count, MIN_SUBSET)
