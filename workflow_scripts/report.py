"""Rule report: the tables, figures and report.html that answer Q1-Q5."""
from advflow.workflow import ready, start

sm = snakemake  # noqa: F821 (the object Snakemake passes to scripts)
start(sm)

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

from advflow.report import build_report  # noqa: E402

ready()

html = Path(sm.output.html)
captions = build_report(html.parent, dict(sm.params.study), out_html=html, tables_dir=Path(sm.output.tables),
                        figures_dir=Path(sm.output.figures), seed=sm.params.seed)
logging.getLogger("advflow.report").info("report: %d tables and figures, %s", len(captions), html)
