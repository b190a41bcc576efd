"""Rule attack: one adversarial set, adv/{target}/{attack}.h5."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.attacks.sets import craft_set  # noqa: E402

ready()

craft_set(sm.wildcards.attack, sm.input.model, sm.input.seeds, dict(sm.params.settings), seed=sm.params.seed,
          device=device, out_path=sm.output[0], batch_size=sm.params.batch_size)
