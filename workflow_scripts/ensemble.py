"""Rule ensemble: the logit average of the trained members."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.models.recipes import ensemble  # noqa: E402

ready()

ensemble(list(sm.input.members), sm.input.data, dict(sm.params.settings), seed=sm.params.seed, device=device,
         out_pt=sm.output.checkpoint, out_json=sm.output.record)
