"""Rule fit_detector: a detector fitted on clean training images only (the information-path detector, Mahalanobis,
LID), its state saved for the scoring jobs."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.defenses.stage import fit_detector  # noqa: E402

# Every detector module the registry may build (advflow.defenses.registry loads them with importlib): in this rule's
# code digest, so a change to a detector's code reruns its fitting and scoring.
from advflow.defenses import infopath, lid, magnet, mahalanobis, mine  # noqa: E402, F401

ready()

fit_detector(sm.wildcards.detector, sm.input.data, sm.input.classifier, dict(sm.params.settings),
             seed=sm.params.seed, device=device, out=sm.output[0])
