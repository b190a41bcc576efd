"""Rule train_autoencoder: one of MagNet's autoencoders (AE-I, AE-II) on clean training images."""
from pathlib import Path

from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.defenses.stage import train_defense_autoencoder  # noqa: E402

ready()

train_defense_autoencoder(sm.wildcards.ae, sm.input.data, dict(sm.params.settings), seed=sm.params.seed,
                          device=device, out=sm.output[0], log_dir=str(Path(sm.log[0]).with_suffix("")))
