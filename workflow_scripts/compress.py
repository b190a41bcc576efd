"""Rule compress: Network Trimming of good_init (APoZ-ranked removal, fine-tuning, repeated)."""
from pathlib import Path

from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.models.recipes import compress  # noqa: E402

ready()

compress(sm.input.data, sm.input.base, dict(sm.params.settings), seed=sm.params.seed, device=device,
         out_pt=sm.output.checkpoint, out_json=sm.output.record, out_rounds=sm.output.rounds,
         log_dir=str(Path(sm.log[0]).with_suffix("")))
