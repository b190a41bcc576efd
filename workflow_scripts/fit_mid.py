"""Rule fit_mid: the MID detector (MINE on the classifier's softmax of x and of AE-I(x)) on clean training images."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.defenses.stage import fit_mid  # noqa: E402

ready()

fit_mid(sm.input.data, sm.input.classifier, sm.input.ae_i, dict(sm.params.settings), seed=sm.params.seed,
        device=device, out=sm.output[0])
