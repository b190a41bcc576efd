"""Rule select_inputs: the attack seeds (normal_test), N test images every attacked model classifies correctly."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.attacks.profiles import select_attack_seeds  # noqa: E402

ready()

select_attack_seeds(sm.input.data, list(sm.input.models), n=sm.params.n, seed=sm.params.seed, device=device,
                    out=sm.output.normal_test)
