"""Rule jsma_trajectories: every intermediate input of JSMA for a few seeds (Q1)."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.attacks.sets import record_trajectories  # noqa: E402

ready()

record_trajectories(sm.input.model, sm.input.seeds, dict(sm.params.settings), n=sm.params.n, device=device,
                    out_path=sm.output[0])
