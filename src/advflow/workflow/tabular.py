"""Writing a table as CSV, one way for the report's and the defense stage's tables (kept out of :mod:`advflow.workflow.io`,
which every rule imports, so a change here reruns only the rules that write tables)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advflow.workflow.io import atomic_path


def write_table(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV with the given columns (floats written exactly, NaN as ``nan``), atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else (repr(float(row[c])) if isinstance(row.get(c), float)
                                                            else row.get(c, "")) for c in columns])
