"""Rule import_model: load a model of the user's from its checkpoint, check it and measure its test accuracy."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.models.recipes import import_model  # noqa: E402

ready()

import_model(sm.wildcards.model, sm.input.data, dict(sm.params.settings), seed=sm.params.seed, device=device,
             out_pt=sm.output.checkpoint, out_json=sm.output.record)
