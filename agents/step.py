"""One vector step of multi-task SAC training: act, step every sub-env, store one transition per task, update.

The one copy of the step: :meth:`agents.trainer.Trainer.env_step` runs it in the training loop, and
``scripts/bench_train.py`` times its phases (``phase``), so the benchmark measures the loop the runs use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from envs import StepResult, step_transitions

if TYPE_CHECKING:
    from agents.sac import MultiTaskSAC
    from envs import MultiTaskVecEnv
    from mtrl.replay import MultiTaskReplayBuffer

__all__ = ["PHASES", "training_step"]

#: The phases of :func:`training_step`, in order, as its ``phase`` callback names them.
PHASES = ("act", "env", "replay", "update")


def training_step(
    agent: MultiTaskSAC,
    envs: MultiTaskVecEnv,
    buffer: MultiTaskReplayBuffer,
    obs: np.ndarray,
    *,
    action_TA: np.ndarray | None,
    updates: int,
    batch_per_task: int,
    sample_gen: torch.Generator,
    metrics: bool,
    phase: Callable[[str], None] | None = None,
) -> tuple[StepResult, dict[str, float]]:
    """One vector step from observations ``obs (T, O + T)``; returns the step (its ``obs`` are the observations to
    act on next; rewards, ends and success of the step for the caller's episode statistics) and the metrics of the
    last update (empty when it computed none).

    Args:
        action_TA: the actions to take (the warm-up's random ones, in the env's action space), or None for the
            policy's (``agent.act``).
        updates: agent updates after the step (0 during the warm-up), each on a stratified batch of
            ``batch_per_task`` transitions per task drawn with ``sample_gen``.
        metrics: the last update computes its metrics (a logging step).
        phase: called with each name of :data:`PHASES` as that phase ends (a benchmark's clock).
    """
    if action_TA is None:
        action_TA = agent.act(obs)
    if phase is not None:
        phase("act")
    res = step_transitions(envs, action_TA)  # res.next_obs: final_obs where an episode ended
    if phase is not None:
        phase("env")
    O = envs.obs_dim
    buffer.add(obs[:, :O], agent.to_policy_action(action_TA), res.reward, res.next_obs[:, :O], res.terminated)
    if phase is not None:
        phase("replay")
    last_metrics: dict[str, float] = {}
    for k in range(updates):
        out = agent.update(buffer.sample(batch_per_task, sample_gen), with_metrics=metrics and k == updates - 1)
        if out:
            last_metrics = out
    if phase is not None:
        phase("update")
    return res, last_metrics
