"""Rule defense_inputs: the defense stage's seeds, clean validation and clean held-out test images."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.defenses.stage import select_inputs  # noqa: E402

ready()

select_inputs(sm.input.data, sm.input.classifier, dict(sm.params.settings), seed=sm.params.seed, device=device,
              out_seeds=sm.output.seeds, out_validation=sm.output.validation, out_clean=sm.output.clean)
