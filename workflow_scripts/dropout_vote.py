"""Rule dropout_vote: seed 001's dropout vote on the clean images, the defense sweeps and the study's sets."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from pathlib import Path  # noqa: E402

from advflow.defenses.vote import run_dropout_vote  # noqa: E402

ready()

run_dropout_vote(sm.input.classifier, [tuple(s) for s in sm.params.sets], dict(sm.params.settings)["dropout_vote"],
                 seed=sm.params.seed, device=device, out_dir=Path(sm.output[0]))
