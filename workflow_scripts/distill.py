"""Rule distill: the defensively distilled student, trained on the teacher's soft labels at T."""
from pathlib import Path

from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.models.recipes import distill  # noqa: E402

ready()

distill(sm.input.data, sm.input.teacher, dict(sm.params.settings), seed=sm.params.seed, device=device,
        out_pt=sm.output.checkpoint, out_json=sm.output.record, out_soft_labels=sm.output.soft_labels,
        log_dir=str(Path(sm.log[0]).with_suffix("")))
