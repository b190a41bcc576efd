"""Rule perturbation_stats: seed 001's statistics of every adversarial set (summary, class pairs, norm histograms)."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

from pathlib import Path  # noqa: E402

from advflow.perturbations.tables import perturbation_tables  # noqa: E402

ready()

perturbation_tables([tuple(s) for s in sm.params.sets], Path(sm.output[0]), histogram_sets=list(sm.params.histograms))
