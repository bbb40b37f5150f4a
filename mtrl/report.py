"""The end-of-run report's shape: a few lines about the run, then a table with a row per task (and metric).

Every training script ends with one (``scripts/train.py`` and ``scripts/train_stl.py`` through
:func:`agents.report.final_report`, ``scripts/train_vision.py`` through :func:`mtrl.vision.report.final_report`);
each trainer chooses its rows from its ``results.json`` record, and :func:`end_of_run_report` lays them out the
same way: text columns left-aligned, numbers right-aligned, two spaces between columns.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["end_of_run_report", "task_table"]


def task_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> list[str]:
    """The lines of a table: ``header`` then ``rows`` (cells already formatted; a row as long as the header),
    the first ``text_columns`` columns left-aligned, the others right-aligned, each line indented by two
    spaces and without trailing blanks."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        aligned = zip(row, widths, strict=True)
        cells = [c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(aligned)]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def end_of_run_report(
    head: Sequence[str],
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    text_columns: int = 1,
    tail: Sequence[str] = (),
) -> str:
    """The report a training script prints when a run ends: the ``head`` lines (the run, how its numbers were
    chosen), the per-task table (:func:`task_table`; left out when there are no ``rows``), then ``tail``
    (e.g. Δm)."""
    table = task_table(header, rows, text_columns) if rows else []
    return "\n".join([*head, *table, *tail])
