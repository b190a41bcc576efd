"""Rule attack_tables: Table II / VIII (attacks.csv) and Table VI (transferability.csv)."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
device = start(sm)

from advflow.attacks.sets import write_tables  # noqa: E402

ready()

write_tables(list(sm.input.sets), [tuple(p) for p in sm.params.transfer], device, sm.output.attacks,
             sm.output.transferability)
