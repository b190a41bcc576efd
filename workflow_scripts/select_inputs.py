"""Rule select_inputs: the normal profiles (normal_train) and the attack seeds (normal_test)."""
from advflow.workflow import start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.profiles import select_profiles  # noqa: E402

select_profiles(sm.input.data, list(sm.input.models), n=sm.params.n, seed=sm.params.seed, device=device,
                out_train=sm.output.normal_train, out_test=sm.output.normal_test)
