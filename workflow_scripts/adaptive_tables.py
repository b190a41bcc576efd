"""Rule adaptive_tables: the adaptive attacks' tables (success, defended accuracy, detection, sanity checks,
surrogates) and one figure per target, beside the transfer sweeps on the same seeds."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

from pathlib import Path  # noqa: E402

from advflow.defenses.adaptive_stage import write_adaptive_tables  # noqa: E402

ready()

write_adaptive_tables(list(sm.input.sets), sm.input.validation, list(sm.input.sweeps), dict(sm.params.settings),
                      tables_dir=Path(sm.output.tables), figures_dir=Path(sm.output.figures),
                      dropout_dir=Path(sm.input.dropout[0]) if sm.input.dropout else None)
