"""The end-of-run report of a vision run: a table of each task's metrics, and Δm when a baseline is set.

The vision counterpart of :func:`agents.report.final_report` (what ``scripts/train_vision.py`` prints when a
run completes), read from the results record (``results.json``, :meth:`mtrl.vision.trainer.VisionTrainer.results`)
and laid out by :func:`mtrl.report.end_of_run_report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtrl.report import end_of_run_report
from mtrl.vision.metrics import HIGHER_IS_BETTER

__all__ = ["final_report"]


def _task_and_metric(key: str) -> tuple[str, str]:
    """``"seg/miou"`` → ``("seg", "miou")``; an evaluation loss ``"loss/seg"`` → ``("seg", "loss")``."""
    first, rest = key.split("/", 1)
    return (rest, "loss") if first == "loss" else (first, rest)


def _direction(metric: str) -> str:
    """``↑`` (higher is better), ``↓`` (lower is better; losses too) or blank for an unknown metric."""
    if metric == "loss":
        return "↓"
    higher = HIGHER_IS_BETTER.get(metric)
    return "" if higher is None else ("↑" if higher else "↓")


def final_report(results: Mapping[str, Any]) -> str:
    """The lines a vision run prints when it completes: the run, the selection rule, a row per task and metric
    (the selected value, the last evaluation's and, with a baseline, the baseline's value and the relative
    change ``r_m`` in %, positive = worse), then Δm (metric- and task-weighted, lower is better)."""
    selected: Mapping[str, float] = results["selected"]
    final: Mapping[str, float] = results["final"]
    delta = results.get("delta_m")
    what = f"single task {results['single_task']}" if results.get("single_task") else f"balancer {results['balancer']}"
    lines = [f"run: {results['run']} ({results['steps']:,} steps, {what}, seed {results['seed']})"]
    lines.append(f"selected: {results['selection_rule']}")
    order = {task: i for i, task in enumerate(results.get("tasks", []))}
    rows = [(_task_and_metric(key), key) for key in selected]  # tasks in the run's order, each task's loss last
    rows.sort(key=lambda row: (order.get(row[0][0], len(order)), row[0][1] == "loss", row[0][1]))
    header = ["task", "metric", "", "selected", "final"]
    if delta is not None:
        header += ["baseline", "r_m %"]
    table = []
    for (task, metric), key in rows:
        row = [task, metric, _direction(metric), f"{selected[key]:.4f}", f"{final[key]:.4f}"]
        if delta is not None:
            base = delta["baseline_values"].get(key)
            drop = delta["relative"].get(key)
            row += ["" if base is None else f"{base:.4f}", "" if drop is None else f"{100 * drop:+.2f}"]
        table.append(row)
    tail = []
    if delta is not None:
        tail.append(
            f"Δm vs {delta['baseline']}: {delta['metric_weighted']:+.2f} % metric-weighted, "
            f"{delta['task_weighted']:+.2f} % task-weighted (lower is better)"
        )
    return end_of_run_report(lines, header, table, text_columns=3, tail=tail)
