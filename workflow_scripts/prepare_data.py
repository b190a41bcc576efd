"""Rule prepare_data: read the configured dataset (or generate it) into data/{dataset}.h5."""
from advflow.workflow import ready, start

start(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)

import logging  # noqa: E402

from advflow.data import prepare  # noqa: E402

ready()

dataset = prepare(snakemake.wildcards.dataset, snakemake.params.settings, snakemake.output[0],  # noqa: F821
                  seed=snakemake.params.seed)  # noqa: F821
logging.getLogger("advflow").info(
    "%s from %s: %d train / %d test images of shape %s, %d classes", dataset.name, dataset.source,
    len(dataset.train.labels), len(dataset.test.labels), dataset.shape, len(dataset.classes))
