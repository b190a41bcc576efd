"""Rule features: every conv layer's output maps of one set on one measuring model."""
from advflow.workflow import start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.features import record_features  # noqa: E402

storage = dict(sm.params.storage)
record_features(sm.input.model, sm.input.inputs, sm.output[0], set_name=sm.wildcards.set, dtype=storage["dtype"],
                compression=storage["compression"], level=storage["compression_level"],
                batch_size=sm.config["features"]["batch_size"], device=device)
