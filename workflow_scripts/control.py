"""Rule control: the random-perturbation control of one adversarial set, adv/{target}/random_{attack}.h5."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.attacks.controls import make_control_set  # noqa: E402

ready()

make_control_set(sm.input.attack_set, sm.input.seeds, sm.input.model, seed=sm.params.seed, device=device,
                 out_path=sm.output[0])
