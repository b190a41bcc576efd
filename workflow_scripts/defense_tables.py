"""Rule defense_tables: thresholds at the configured FPRs, seed 003's Tables 1 and 2, clean accuracy, detector
metrics and figures, from the scores alone (changing an FPR rescores nothing)."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

from pathlib import Path  # noqa: E402

from advflow.defenses.settings import STUDY_PREFIX  # noqa: E402
from advflow.defenses.stage import set_sizes  # noqa: E402
from advflow.defenses.tables import write_defense_tables  # noqa: E402

ready()

# Each score table must hold as many rows as its set has inputs (a table cut short is moved aside and rescored).
sizes = set_sizes({Path(p).stem: p for p in [sm.input.validation_set, sm.input.clean_set, *sm.input.sweep_sets]})
sizes.update({STUDY_PREFIX + attack: n for attack, n in set_sizes({Path(p).stem: p for p in sm.input.study_sets}).items()})
write_defense_tables(sm.input.validation, sm.input.clean, list(sm.input.sweeps), dict(sm.params.settings),
                     study_csvs=list(sm.input.studies),
                     tables_dir=Path(sm.output.tables), figures_dir=Path(sm.output.figures),
                     resamples=int(sm.params.resamples), seed=int(sm.params.seed),
                     dropout_dir=Path(sm.input.dropout[0]) if sm.input.dropout else None, sizes=sizes)
