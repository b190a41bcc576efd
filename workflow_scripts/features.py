"""Rule features: every conv layer's output maps of one set on one measuring model."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.information.features import record_features  # noqa: E402

ready()

storage = dict(sm.params.storage)
lossless = sm.config["features"]  # compression and batch size change no value: not params, so they rerun nothing
record_features(sm.input.model, sm.input.inputs, sm.output[0], set_name=sm.wildcards.set, dtype=storage["dtype"],
                compression=lossless["compression"], level=lossless["compression_level"],
                batch_size=lossless["batch_size"], device=device)
