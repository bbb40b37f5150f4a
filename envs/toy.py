"""A pure-numpy multi-task reaching suite with conflicting tasks, for fast learning tests.

T point masses in the plane; sub-env ``t`` must bring its point to goal ``g_t``, placed at distance
``goal_distance`` from the origin in direction ``2πt/T``. Observations hold the position only (the
goal is *not* visible), plus the task one-hot, so the tasks are told apart only by the one-hot (or
per-task heads) and their gradients on a shared trunk conflict: from the same state, task ``t`` wants
to move towards ``g_t`` and task ``t'`` towards ``g_t'`` (opposite directions when T = 2).

Dynamics, reward and success of one sub-env (positions ``p ∈ [-1, 1]²``, actions ``a ∈ [-1, 1]²``)::

    p₀ ~ U([-start_noise, start_noise]²)
    p_{k+1} = clip(p_k + step_size · clip(a_k, -1, 1), -1, 1)
    r_k = -‖p_{k+1} - g_t‖₂            success_k = ‖p_{k+1} - g_t‖₂ < success_radius

The defaults (goal 0.6 away, steps of 0.1, 40-step episodes) make an optimal episode reach the goal in
6-7 steps, so the tasks are easy to learn, while a zero policy never succeeds. Episodes truncate
(never terminate, as in Meta-World) at ``max_episode_steps`` unless ``terminate_on_success``.

The vector env follows the Meta-World vector interface exactly: one sub-env per task,
``AutoresetMode.SAME_STEP`` with ``info["final_obs"]`` (object array) and ``info["final_info"]``
(``"success"``, ``"episode": {"r", "l"}``), ``info["success"]`` as float 0/1. It is seeded only through
the constructor (``reset(seed=s)`` re-seeds, as in gymnasium) and :meth:`ToyReachVecEnv.get_state` /
:meth:`ToyReachVecEnv.set_state` capture everything (RNG, positions, step counters, returns), so a
resumed run continues identically, mid-episode included.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.protocols import TOY_PROTOCOL
from envs.vector import MultiTaskVecEnv

__all__ = ["ToyReachVecEnv", "make_toy_envs"]


class ToyReachVecEnv(VectorEnv):
    """T point-mass reaching tasks in one vector env (sub-env ``t`` = task ``t``); see the module docstring.

    Observations ``(T, 2 [+ T])`` float32: position, then the one-hot if ``use_one_hot``.
    Actions ``(T, 2)`` in ``[-1, 1]`` (clipped). Rewards ``(T,)`` float64.
    """

    def __init__(
        self,
        num_tasks: int = 4,
        seed: int = 0,
        max_episode_steps: int = 40,
        *,
        use_one_hot: bool = True,
        goal_distance: float = 0.6,
        step_size: float = 0.1,
        success_radius: float = 0.1,
        start_noise: float = 0.1,
        terminate_on_success: bool = False,
    ) -> None:
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
        if not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
        for name, value in [("goal_distance", goal_distance), ("step_size", step_size)]:
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if success_radius <= 0.0 or start_noise < 0.0:
            raise ValueError(f"need success_radius > 0 and start_noise >= 0, got {success_radius}, {start_noise}")
        self.num_envs = num_tasks
        self.max_episode_steps = max_episode_steps
        self.use_one_hot = use_one_hot
        self.step_size = step_size
        self.success_radius = success_radius
        self.start_noise = start_noise
        self.terminate_on_success = terminate_on_success
        angles_T = 2.0 * np.pi * np.arange(num_tasks) / num_tasks
        self.goals_T2 = goal_distance * np.stack([np.cos(angles_T), np.sin(angles_T)], axis=1)
        self._one_hot_TT = np.eye(num_tasks, dtype=np.float32)

        obs_dim = 2 + (num_tasks if use_one_hot else 0)
        low = np.concatenate([-np.ones(2), np.zeros(obs_dim - 2)]).astype(np.float32)
        self.single_observation_space = spaces.Box(low, np.ones(obs_dim, dtype=np.float32), dtype=np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_tasks)
        self.action_space = batch_space(self.single_action_space, num_tasks)
        self.action_space.seed(seed)
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

        self._rng = np.random.default_rng(seed)
        self._pos_T2 = np.zeros((num_tasks, 2))
        self._steps_T = np.zeros(num_tasks, dtype=np.int64)
        self._returns_T = np.zeros(num_tasks)
        self._started = False

    # --- gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start a new episode in every sub-env; ``seed`` (optional) re-seeds the env's RNG."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        all_T = np.ones(self.num_envs, dtype=bool)
        self._reset_envs(all_T)
        self._started = True
        return self.current_obs(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Move every point by ``step_size · clip(action)``; autoreset finished sub-envs (SAME_STEP)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions_T2 = np.asarray(actions, dtype=np.float64)
        if actions_T2.shape != (self.num_envs, 2):
            raise ValueError(f"actions must have shape (T, 2) = ({self.num_envs}, 2), got {actions_T2.shape}")
        self._pos_T2 = np.clip(self._pos_T2 + self.step_size * np.clip(actions_T2, -1.0, 1.0), -1.0, 1.0)
        self._steps_T += 1
        distance_T = np.linalg.norm(self._pos_T2 - self.goals_T2, axis=1)
        reward_T = -distance_T
        success_T = (distance_T < self.success_radius).astype(np.float64)
        self._returns_T += reward_T
        terminated_T = success_T.astype(bool) if self.terminate_on_success else np.zeros(self.num_envs, dtype=bool)
        truncated_T = self._steps_T >= self.max_episode_steps
        done_T = terminated_T | truncated_T

        obs = self.current_obs()
        running_T = ~done_T
        info: dict[str, Any] = {
            "success": np.where(running_T, success_T, 0.0),
            "_success": running_T.copy(),
            "distance": np.where(running_T, distance_T, 0.0),
            "_distance": running_T.copy(),
        }
        if done_T.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done_T):
                final_obs[i] = obs[i].copy()
            info["final_obs"], info["_final_obs"] = final_obs, done_T.copy()
            info["final_info"] = {
                "success": np.where(done_T, success_T, 0.0),
                "_success": done_T.copy(),
                "distance": np.where(done_T, distance_T, 0.0),
                "_distance": done_T.copy(),
                "episode": {
                    "r": np.where(done_T, self._returns_T, 0.0),
                    "_r": done_T.copy(),
                    "l": np.where(done_T, self._steps_T, 0),
                    "_l": done_T.copy(),
                },
                "_episode": done_T.copy(),
            }
            info["_final_info"] = done_T.copy()
            self._reset_envs(done_T)
            obs = self.current_obs()
        return obs, reward_T, terminated_T, truncated_T, info

    # --- state -------------------------------------------------------------------------------
    def current_obs(self) -> np.ndarray:
        """Observations ``(T, 2 [+ T])`` float32 of the current positions."""
        pos = self._pos_T2.astype(np.float32)
        return np.concatenate([pos, self._one_hot_TT], axis=1) if self.use_one_hot else pos

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue identically: RNGs, positions, step counters, episode returns."""
        return {
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            "action_space_rng": copy.deepcopy(self.action_space.np_random.bit_generator.state),
            "pos": self._pos_T2.copy(),
            "steps": self._steps_T.copy(),
            "returns": self._returns_T.copy(),
            "started": self._started,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state` (of an env with the same number of tasks)."""
        pos = np.asarray(state["pos"], dtype=np.float64)
        if pos.shape != (self.num_envs, 2):
            raise ValueError(f"state is for {pos.shape[0]} tasks, this env has {self.num_envs}")
        self._rng.bit_generator.state = copy.deepcopy(state["rng"])
        self.action_space.np_random.bit_generator.state = copy.deepcopy(state["action_space_rng"])
        self._pos_T2 = pos.copy()
        self._steps_T = np.asarray(state["steps"], dtype=np.int64).copy()
        self._returns_T = np.asarray(state["returns"], dtype=np.float64).copy()
        self._started = bool(state["started"])

    def _reset_envs(self, mask_T: np.ndarray) -> None:
        n = int(mask_T.sum())
        self._pos_T2[mask_T] = self._rng.uniform(-self.start_noise, self.start_noise, size=(n, 2))
        self._steps_T[mask_T] = 0
        self._returns_T[mask_T] = 0.0


def make_toy_envs(
    num_tasks: int = 4,
    seed: int = 0,
    max_episode_steps: int = 40,
    *,
    use_one_hot: bool = True,
    goal_distance: float = 0.6,
    step_size: float = 0.1,
    success_radius: float = 0.1,
    start_noise: float = 0.1,
    terminate_on_success: bool = False,
) -> MultiTaskVecEnv:
    """The toy reaching suite as a :class:`~envs.vector.MultiTaskVecEnv` (task names ``"reach-0"``…).

    Same interface as :func:`envs.metaworld.make_mt_envs`; ``protocol`` is
    :data:`envs.protocols.TOY_PROTOCOL` with this episode length. Arguments: see :class:`ToyReachVecEnv`.
    """
    env = ToyReachVecEnv(
        num_tasks,
        seed,
        max_episode_steps,
        use_one_hot=use_one_hot,
        goal_distance=goal_distance,
        step_size=step_size,
        success_radius=success_radius,
        start_noise=start_noise,
        terminate_on_success=terminate_on_success,
    )
    return MultiTaskVecEnv(
        env,
        task_names=[f"reach-{t}" for t in range(num_tasks)],
        obs_dim=2,
        use_one_hot=use_one_hot,
        protocol=dataclasses.replace(TOY_PROTOCOL, max_episode_steps=max_episode_steps),
        benchmark="toy",
        seed=seed,
    )
