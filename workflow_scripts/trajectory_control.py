"""Rule trajectory_control: Q1's random control trajectories, trajectories/{target}/random_jsma.h5."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

from advflow.attacks.controls import make_control_trajectories  # noqa: E402

ready()

make_control_trajectories(sm.input[0], seed=sm.params.seed, out_path=sm.output[0])
