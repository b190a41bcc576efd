"""Rule adaptive_attack: one adaptive set (PGD at an ε or C&W-L2 at a κ) against one target that the attacker knows."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.defenses.adaptive_stage import craft_adaptive_set  # noqa: E402

# Every detector module a guard may be (advflow.defenses.registry loads them with importlib): in this rule's code
# digest, so a change to a detector's code reruns the attacks on it.
from advflow.defenses import adaptive, dropout, infopath, lid, magnet, mahalanobis, mine  # noqa: E402, F401

ready()

states = {name: sm.input[name] for name in ("mid", "infopath", "mahalanobis", "lid") if name in sm.input.keys()}
craft_adaptive_set(sm.wildcards.target, sm.wildcards.adaptive, sm.input.classifier, sm.input.seeds,
                   sm.input.validation, sm.input.validation_scores, dict(sm.params.settings),
                   autoencoders={"ae_i": sm.input.ae_i, "ae_ii": sm.input.ae_ii}, states=states,
                   seed=sm.params.seed, device=device, out=sm.output[0])
