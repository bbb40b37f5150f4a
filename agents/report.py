"""What the RL runs report: the ``summary`` of ``results.json``, the hparams metrics and the end-of-run report.

Shared by the multi-task trainer (:mod:`agents.trainer`) and the single-task reference (:mod:`agents.stl`), whose
``results.json`` have the same ``summary`` and ``evals``: :func:`summarize` (the protocol's reported numbers),
:func:`hparam_metrics` (``hparam/success_*`` after each evaluation), :func:`log_hparams` (the hparams record
written when the logs open) and :func:`final_report` (what ``scripts/train.py`` and ``scripts/train_stl.py``
print at the end, laid out by :func:`mtrl.report.end_of_run_report`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from envs.protocols import Protocol
from mtrl.logger import Logger, flatten_hparams
from mtrl.report import end_of_run_report

__all__ = ["final_report", "hparam_metrics", "log_hparams", "summarize"]


def summarize(evals: list[dict[str, Any]], protocol: Protocol) -> dict[str, Any]:
    """The protocol's reported numbers (``Protocol.summarize``: final and last-n mean, or best), the
    headline statistic of the protocol (``reported_statistic`` and its ``reported_value``), plus the
    final and the best evaluation with their per-task success."""
    if not evals:
        return {"num_evals": 0, "report_rule": protocol.report, "reported_statistic": protocol.reported_statistic}
    means = [e["success_mean"] for e in evals]
    best = int(np.argmax(means))
    reported = protocol.summarize(means)
    return {
        "num_evals": len(evals),
        "report_rule": protocol.report,
        "reported_statistic": protocol.reported_statistic,
        "reported_value": reported[protocol.reported_statistic],
        "reported": reported,
        "final": evals[-1],
        "best": evals[best],
    }


def hparam_metrics(evals: list[dict[str, Any]], protocol: Protocol) -> dict[str, float]:
    """The scalars behind the hparams metrics after each evaluation: ``hparam/success_reported`` (the
    protocol's headline statistic) and ``hparam/success_<key>`` for every key of ``Protocol.summarize``."""
    reported = protocol.summarize([e["success_mean"] for e in evals])
    out = {f"hparam/success_{key}": value for key, value in reported.items()}
    out["hparam/success_reported"] = reported[protocol.reported_statistic]
    return out


def log_hparams(logger: Logger, config: Mapping[str, Any], protocol: Protocol) -> None:
    """The hparams record of a run that starts: its flattened ``config`` and, as metrics (NaN until the first
    evaluation logs them), the tags of :func:`hparam_metrics` under ``protocol``."""
    tags = hparam_metrics([{"success_mean": 0.0}], protocol)
    logger.hparams(flatten_hparams(config), dict.fromkeys(tags, math.nan))


def final_report(results: Mapping[str, Any]) -> str:
    """The lines a training script prints at the end of a run (``scripts/train.py``, ``scripts/train_stl.py``):
    the run, the protocol's reported success and the last evaluation, then a table of each task's success
    (and its return when the results carry one)."""
    summary = results["summary"]
    head = [f"run: {results['run_dir']} ({results['steps']:,} steps, {results['protocol']})"]
    if not summary.get("num_evals"):
        return "\n".join([*head, "no evaluation yet"])
    final = summary["final"]
    head.append(
        f"{summary['reported_statistic']} evaluation success (reported): {summary['reported_value']:.2f}; "
        f"last evaluation at step {final['step']:,}: mean {final['success_mean']:.2f}"
    )
    returns = final.get("return", {})
    header = ["task", "success", *(["return"] if returns else [])]
    rows = [
        [task, f"{success:.2f}", *([f"{returns[task]:,.0f}" if task in returns else ""] if returns else [])]
        for task, success in final["success"].items()
    ]
    return end_of_run_report(head, header, rows)
