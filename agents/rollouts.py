"""Per-task statistics of the training episodes (the rollouts of the stochastic policy, warm-up included), logged
as each episode ends: ``rollout/return/<task>`` (the undiscounted return) and ``rollout/success/<task>`` (1 when
``info["success"]`` was set at any step of the episode, Meta-World's rule for a successful episode).

These cost nothing (the training loop steps the envs anyway) and give a curve point per task every episode
(every 500 steps on Meta-World), where evaluations come every ``eval_every`` steps; they are not the protocol's
evaluation (a deterministic policy on fresh episodes), which stays ``eval/*``. The episode in progress is part of a
checkpoint (:meth:`RolloutStats.state_dict`), so a resumed run logs the same values as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from envs import StepResult

__all__ = ["RolloutStats"]


class RolloutStats:
    """The running return and success of the episode in progress of each of the ``T`` envs.

    Shapes: ``return_T (T,)`` float64, ``success_T (T,)`` bool.
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        self.task_names = list(task_names)
        self.return_T = np.zeros(len(self.task_names), dtype=np.float64)
        self.success_T = np.zeros(len(self.task_names), dtype=bool)

    def record(self, res: StepResult) -> dict[str, float]:
        """Add one vector step; returns the scalars of the episodes that ended at it (``{}`` when none did)."""
        self.return_T += res.reward
        self.success_T |= res.success
        ended = np.flatnonzero(res.done)
        out: dict[str, float] = {}
        for t in ended:
            task = self.task_names[t]
            out[f"rollout/return/{task}"] = float(self.return_T[t])
            out[f"rollout/success/{task}"] = float(self.success_T[t])
        self.return_T[ended] = 0.0
        self.success_T[ended] = False
        return out

    def state_dict(self) -> dict[str, Any]:
        """The episodes in progress (plain arrays: checkpoint-safe)."""
        return {"return": self.return_T.copy(), "success": self.success_T.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the episodes of :meth:`state_dict`; ``ValueError`` for another number of tasks."""
        ret, success = np.asarray(state["return"], dtype=np.float64), np.asarray(state["success"], dtype=bool)
        if ret.shape != self.return_T.shape or success.shape != self.success_T.shape:
            raise ValueError(f"rollout state for {ret.shape[0]} tasks, this run has {len(self.task_names)}")
        self.return_T, self.success_T = ret.copy(), success.copy()
