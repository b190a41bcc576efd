"""Rule train_distillation_teacher: good_init's architecture trained on softmax(Z / T)."""
from pathlib import Path

from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.models.recipes import train_model  # noqa: E402

ready()

settings = dict(sm.params.settings)
train_model("distilled_teacher", sm.input.data, settings, seed=sm.params.seed, device=device,
            out_pt=sm.output.checkpoint, out_json=sm.output.record, temperature=float(settings["temperature"]),
            architecture_of="distilled", log_dir=str(Path(sm.log[0]).with_suffix("")))
