"""Turn run directories into tables and plots: groups × seeds, point estimates and confidence intervals.

Four modules, all re-exported here (``from mtrl.analysis import ...``):

* :mod:`mtrl.analysis.runs`: the one run loader: run directories as :class:`RunRecord` s
  (:func:`find_runs`; skipped runs named with the reason), one RL run's evaluations (:func:`run_history`).
* :mod:`mtrl.analysis.core`: mean ± std over seeds (:func:`summarize`), and rliable's aggregate
  statistics with stratified-bootstrap intervals (:func:`interval_estimates`, :func:`curve_estimates`,
  :func:`probability_of_improvement`, :func:`performance_profiles`).
* :mod:`mtrl.analysis.sweep`: a whole sweep (balancers × seeds, RL or vision) as one report: the
  protocol's headline statistic, IQM/mean/median/optimality gap per group, probability of improvement,
  per-task table, sample-efficiency curves (``scripts/aggregate.py``).
* :mod:`mtrl.analysis.plots`: the PNGs (performance profiles, sample-efficiency curves, learning curves).
"""

from __future__ import annotations

from mtrl.analysis.core import (
    STATISTICS,
    Interval,
    Summary,
    area_under_curve,
    curve_estimates,
    interval_estimates,
    learning_curves,
    markdown_table,
    performance_profiles,
    probability_of_improvement,
    summarize,
    task_scores,
    task_table,
)
from mtrl.analysis.runs import RunRecord, find_runs, flatten, group_name, run_files, run_history, unfinished_note
from mtrl.analysis.sweep import (
    GroupScores,
    Sweep,
    SweepReport,
    group_scores,
    load_sweep,
    report_markdown,
    result_keys,
    sample_efficiency,
    sweep_report,
)

__all__ = [
    "STATISTICS",
    "GroupScores",
    "Interval",
    "RunRecord",
    "Summary",
    "Sweep",
    "SweepReport",
    "area_under_curve",
    "curve_estimates",
    "find_runs",
    "flatten",
    "group_name",
    "group_scores",
    "interval_estimates",
    "learning_curves",
    "load_sweep",
    "markdown_table",
    "performance_profiles",
    "probability_of_improvement",
    "report_markdown",
    "result_keys",
    "run_files",
    "run_history",
    "sample_efficiency",
    "summarize",
    "sweep_report",
    "task_scores",
    "task_table",
    "unfinished_note",
]
