"""Rule mi: the source and target MI matrices of every input and layer, and the information paths."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.information.stage import measure_set  # noqa: E402

ready()

measure_set(sm.input[0], sm.output.mi, sm.output.paths, buckets=sm.params.buckets, batch_size=sm.config["mi"]["batch_size"],
            device=device, bias_correction=sm.params.bias_correction, seed=sm.params.seed,
            expect={"model": sm.wildcards.model, "set": sm.wildcards.set})
