"""Rule defense_attack: one sweep set (PGD/BIM at an ε, C&W/EAD at a κ) on the undefended classifier."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.defenses.stage import craft_sweep_set  # noqa: E402

ready()

craft_sweep_set(sm.params.attack, float(sm.params.strength), sm.input.classifier, sm.input.seeds,
                dict(sm.params.settings), seed=sm.params.seed, device=device, out=sm.output[0])
