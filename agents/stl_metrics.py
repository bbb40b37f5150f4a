"""The numbers a single-task reference run (:mod:`agents.stl`) records: evaluations and training losses per task.

Its tasks are trained one after the other within a round, so a step's numbers arrive task by task; the task
means (what the multi-task runs log) exist once every task has reached that step:

* :class:`EvalHistory` — each task's evaluations (``{step, success, return}``), their mean over tasks at a step
  once every task has one, and the multi-task runs' ``evals`` built from them;
* :class:`TrainLossMeans` — a task's ``train/*`` row from its SB3 model's latest update (:func:`train_row`),
  and their means over tasks once every task has logged that step;
* :func:`results_record` — ``results.json``: the multi-task runs' keys plus ``steps_per_task`` and the history.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agents.report import summarize
from envs.protocols import Protocol

__all__ = ["EvalHistory", "TrainLossMeans", "results_record", "train_row"]

#: The ``train/*`` values of one task's update, as the multi-task runs name them.
TRAIN_KEYS = ("critic_loss", "actor_loss", "alpha", "alpha_loss")
#: Those whose mean over tasks is logged too (``train/<key>``).
MEAN_KEYS = ("critic_loss", "actor_loss", "alpha_loss")


class EvalHistory:
    """Each task's evaluations, and their task means at the steps every task was evaluated.

    Args:
        tasks: the run's tasks, in order.
        by_task: a saved history (``{task: [{step, success, return}, ...]}``; default: empty).
        mean_logged: the steps whose mean has been logged already (a resumed run does not log them again).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        by_task: Mapping[str, Iterable[dict[str, float]]] | None = None,
        mean_logged: Iterable[int] = (),
    ) -> None:
        self.tasks = list(tasks)
        self.by_task: dict[str, list[dict[str, float]]] = {
            t: list(by_task[t]) if by_task is not None else [] for t in self.tasks
        }
        self.mean_logged: set[int] = set(mean_logged)

    def add(self, task: str, step: int, success: float, ret: float) -> None:
        """Record an evaluation of ``task`` at ``step``."""
        self.by_task[task].append({"step": step, "success": success, "return": ret})

    def mean_at(self, step: int) -> float | None:
        """Mean success over tasks at ``step`` once every task has been evaluated there (else None)."""
        values = [next((h["success"] for h in self.by_task[t] if h["step"] == step), None) for t in self.tasks]
        return None if any(v is None for v in values) else float(np.mean(values))  # type: ignore[arg-type]

    def mean_to_log(self, step: int) -> float | None:
        """The mean at ``step`` if it exists and was not logged yet (it counts as logged from now on)."""
        mean = self.mean_at(step)
        if mean is None or step in self.mean_logged:
            return None
        self.mean_logged.add(step)
        return mean

    def latest_mean(self) -> str:
        """The last logged mean, formatted for the progress bar (``"-"`` before the first)."""
        steps = sorted(self.mean_logged)
        return f"{self.mean_at(steps[-1]):.2f}" if steps else "-"

    def evals(self) -> list[dict[str, Any]]:
        """The multi-task runs' ``evals``: ``{step, success_mean, success: {task: rate}}`` for every step at which
        all tasks were evaluated, in step order."""
        out: list[dict[str, Any]] = []
        for step in sorted({int(h["step"]) for hs in self.by_task.values() for h in hs}):
            mean = self.mean_at(step)
            if mean is not None:
                success = {t: next(h["success"] for h in self.by_task[t] if h["step"] == step) for t in self.tasks}
                out.append({"step": step, "success_mean": mean, "success": success})
        return out


def train_row(values: Mapping[str, Any]) -> dict[str, float] | None:
    """A task's ``train/*`` row from its SB3 model's last logged values (None while it is still warming up:
    no update yet). The critic loss is ½ the sum of the two critics' mean squared TD errors (the multi-task
    agent's definition), ``alpha_loss`` is ``−log α (log π + target entropy)``."""
    if "train/critic_loss" not in values:
        return None
    return {
        "critic_loss": float(values["train/critic_loss"]),
        "actor_loss": float(values["train/actor_loss"]),
        "alpha": float(values["train/ent_coef"]),
        "alpha_loss": float(values.get("train/ent_coef_loss", math.nan)),
    }


class TrainLossMeans:
    """Collects the tasks' ``train/*`` rows of each step and gives their means over tasks once all have one."""

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = num_tasks
        self.pending: dict[int, dict[str, dict[str, float]]] = {}

    def add(self, task: str, step: int, row: Mapping[str, float]) -> dict[str, float] | None:
        """Record ``task``'s ``row`` at ``step``; returns ``{"train/<key>": mean}`` once every task has one."""
        pending = self.pending.setdefault(step, {})
        pending[task] = dict(row)
        if len(pending) < self.num_tasks:
            return None
        del self.pending[step]
        return {f"train/{k}": float(np.mean([r[k] for r in pending.values()])) for k in MEAN_KEYS}


def results_record(
    run_dir: Path,
    record: Mapping[str, Any],
    protocol: Protocol,
    benchmark: str | None,
    seed: int,
    steps: Mapping[str, int],
    total_steps: int,
    history: EvalHistory,
) -> dict[str, Any]:
    """``results.json`` of a single-task reference run: the multi-task runs' keys (``summary`` from
    :func:`agents.report.summarize`, ``evals``), ``steps`` the least of ``steps_per_task`` (each capped at
    ``total_steps``), and the per-task ``history``; ``record`` is the run's ``config.yaml``."""
    evals = history.evals()
    done = {t: min(s, total_steps) for t, s in steps.items()}
    return {
        "run_dir": str(run_dir),
        "method": "stl_sb3_sac",
        "protocol": protocol.name,
        "protocol_details": record["protocol_details"],
        "benchmark": benchmark,
        "tasks": list(steps),
        "critic_balancer": "stl",
        "actor_balancer": "stl",
        "seed": seed,
        "steps": min(done.values()),
        "steps_per_task": done,
        "complete": all(s >= total_steps for s in done.values()),
        "summary": summarize(evals, protocol),
        "evals": evals,
        "history": history.by_task,
    }
