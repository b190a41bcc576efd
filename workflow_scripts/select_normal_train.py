"""Rule select_normal_train: the normal profile normal_train (N random training images; no model enters it)."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

from advflow.attacks.profiles import select_normal_train  # noqa: E402

ready()

select_normal_train(sm.input.data, n=sm.params.n, seed=sm.params.seed, out=sm.output[0])
