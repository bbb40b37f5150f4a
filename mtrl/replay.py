"""A multi-task replay buffer with stratified (task-balanced) sampling.

One ring buffer per task, stored as tensors ``(T, C, ·)`` with ``C = capacity_total // T`` rows per
task. A vectorised multi-task env with one sub-env per task yields exactly one transition per task
per vector step, so every task always holds the same number of transitions and one write pointer
serves all of them. Observations are stored **without** the task one-hot: the task is the first
index, and the agent re-appends the one-hot when its networks want it.

:meth:`MultiTaskReplayBuffer.sample` draws the same number ``n`` of transitions from every task and
returns them grouped by task, ``(T, n, ·)``: the layout the batched per-task heads
(:class:`mtrl.nn.BatchedLinear`) and the engine's task-partitioned strategy need, and what removes
the random per-task counts of a uniform buffer (facebookresearch/mtrl ``replay_buffer.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["Batch", "MultiTaskReplayBuffer"]


class Batch(NamedTuple):
    """A stratified batch, rows grouped by task (``n`` rows per task).

    ``obs (T, n, O)``, ``action (T, n, A)``, ``reward (T, n)``, ``next_obs (T, n, O)``,
    ``terminated (T, n)`` (1.0 where the episode truly ended; time-limit truncations are 0 so that
    they bootstrap). ``O`` excludes the task one-hot.
    """

    obs: Tensor
    action: Tensor
    reward: Tensor
    next_obs: Tensor
    terminated: Tensor


def _as_tensor(x: Any, shape: tuple[int, ...], name: str, device: torch.device) -> Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32).to(device)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (one row per task, one-hot removed); got {tuple(t.shape)}")
    return t


class MultiTaskReplayBuffer:
    """Per-task ring buffers with equal-count sampling.

    Args:
        num_tasks: ``T``, the number of tasks (= sub-envs of the vector env).
        obs_dim: ``O``, observation size **without** the task one-hot.
        action_dim: ``A``.
        capacity_total: total number of transitions kept (mtrl ``config/replay_buffer/mtrl.yaml``:
            1,000,000); each task keeps ``capacity_total // T``.
        device: where the tensors live (samples are returned there).
    """

    def __init__(
        self, num_tasks: int, obs_dim: int, action_dim: int, capacity_total: int, device: str | torch.device = "cpu"
    ) -> None:
        for name, value in (("num_tasks", num_tasks), ("obs_dim", obs_dim), ("action_dim", action_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(capacity_total, int) or capacity_total < num_tasks:
            raise ValueError(
                f"capacity_total must be an int >= num_tasks ({num_tasks}) so every task keeps at least one "
                f"transition; got {capacity_total!r}"
            )
        self.num_tasks = num_tasks
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.capacity_per_task = capacity_total // num_tasks
        self.device = torch.device(device)
        T, C = num_tasks, self.capacity_per_task
        self.obs_TCO = torch.zeros(T, C, obs_dim, device=self.device)
        self.action_TCA = torch.zeros(T, C, action_dim, device=self.device)
        self.reward_TC = torch.zeros(T, C, device=self.device)
        self.next_obs_TCO = torch.zeros(T, C, obs_dim, device=self.device)
        self.terminated_TC = torch.zeros(T, C, device=self.device)
        self.pos = 0  # next row to write (same for every task)
        self.size = 0  # rows filled per task

    def __len__(self) -> int:
        """Total number of stored transitions (all tasks)."""
        return self.size * self.num_tasks

    def add(self, obs_T: Any, action_T: Any, reward_T: Any, next_obs_T: Any, terminated_T: Any) -> None:
        """Store one transition per task: ``obs (T, O)``, ``action (T, A)``, ``reward (T,)``,
        ``next_obs (T, O)`` (the true final observation at an episode end), ``terminated (T,)``."""
        T, O, A = self.num_tasks, self.obs_dim, self.action_dim
        i = self.pos
        self.obs_TCO[:, i] = _as_tensor(obs_T, (T, O), "obs", self.device)
        self.action_TCA[:, i] = _as_tensor(action_T, (T, A), "action", self.device)
        self.reward_TC[:, i] = _as_tensor(reward_T, (T,), "reward", self.device)
        self.next_obs_TCO[:, i] = _as_tensor(next_obs_T, (T, O), "next_obs", self.device)
        self.terminated_TC[:, i] = _as_tensor(terminated_T, (T,), "terminated", self.device)
        self.pos = (i + 1) % self.capacity_per_task
        self.size = min(self.size + 1, self.capacity_per_task)

    def sample(self, n_per_task: int, generator: torch.Generator | None = None) -> Batch:
        """Draw ``n_per_task`` transitions uniformly (with replacement) from each task's buffer.

        The indices are drawn on ``generator``'s device (CPU by default) so that a CPU generator
        makes sampling reproducible whatever the buffer's device. Returns a :class:`Batch` of
        ``(T, n, ·)`` tensors on the buffer's device.
        """
        if not isinstance(n_per_task, int) or n_per_task < 1:
            raise ValueError(f"n_per_task must be a positive int, got {n_per_task!r}")
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer; add transitions first (warm-up steps)")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        idx_TN = torch.randint(0, self.size, (self.num_tasks, n_per_task), generator=generator, device=gen_device).to(
            self.device
        )
        rows_T1 = torch.arange(self.num_tasks, device=self.device)[:, None]
        return Batch(
            obs=self.obs_TCO[rows_T1, idx_TN],
            action=self.action_TCA[rows_T1, idx_TN],
            reward=self.reward_TC[rows_T1, idx_TN],
            next_obs=self.next_obs_TCO[rows_T1, idx_TN],
            terminated=self.terminated_TC[rows_T1, idx_TN],
        )

    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer and its pointers (for optional inclusion in checkpoints).

        The tensors are copies: ``torch.save`` of a slice would write the whole preallocated storage."""
        s = self.size
        return {
            "num_tasks": self.num_tasks,
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "capacity_per_task": self.capacity_per_task,
            "pos": self.pos,
            "size": s,
            "obs": self.obs_TCO[:, :s].to("cpu", copy=True),
            "action": self.action_TCA[:, :s].to("cpu", copy=True),
            "reward": self.reward_TC[:, :s].to("cpu", copy=True),
            "next_obs": self.next_obs_TCO[:, :s].to("cpu", copy=True),
            "terminated": self.terminated_TC[:, :s].to("cpu", copy=True),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the buffer's shapes must match."""
        for key in ("num_tasks", "obs_dim", "action_dim", "capacity_per_task"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"replay state has {key}={state[key]!r} but this buffer has {key}={getattr(self, key)!r}"
                )
        s = int(state["size"])
        self.obs_TCO[:, :s] = state["obs"].to(self.device)
        self.action_TCA[:, :s] = state["action"].to(self.device)
        self.reward_TC[:, :s] = state["reward"].to(self.device)
        self.next_obs_TCO[:, :s] = state["next_obs"].to(self.device)
        self.terminated_TC[:, :s] = state["terminated"].to(self.device)
        self.pos, self.size = int(state["pos"]), s
