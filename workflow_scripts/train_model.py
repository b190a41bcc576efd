"""Rule train_model: train good_init, deep_conv, vgg_like or a model of the user's without a checkpoint from scratch."""
from pathlib import Path

from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.models.recipes import train_model  # noqa: E402

ready()

train_model(sm.wildcards.model, sm.input.data, dict(sm.params.settings), seed=sm.params.seed, device=device,
            out_pt=sm.output.checkpoint, out_json=sm.output.record, log_dir=str(Path(sm.log[0]).with_suffix("")))
