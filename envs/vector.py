"""The multi-task vector env type shared by every suite, and SAME_STEP transition bookkeeping.

Every builder (:func:`envs.metaworld.make_mt_envs`, :func:`envs.toy.make_toy_envs`) returns a
:class:`MultiTaskVecEnv`: a gymnasium vector env with one sub-env per task (env ``t`` = task ``t`` =
one-hot index ``t``) plus the task metadata a multi-task agent needs.

Autoreset (gymnasium 1.x, ``AutoresetMode.SAME_STEP``): when sub-env ``t`` ends an episode at a step,
the observation returned for it is already the first observation of the next episode; the last
observation of the finished episode is ``info["final_obs"][t]`` and the finished episode's info is
``info["final_info"]`` (its "success" and, through ``RecordEpisodeStatistics``, ``["episode"]["r"/"l"]``).
Measured with gymnasium 1.4 (sync and async vector envs both go through ``VectorEnv._add_info``):

* ``info["final_obs"]`` is an object array ``(T,)`` holding each finished env's observation and
  ``None`` elsewhere, with the mask ``info["_final_obs"]``;
* ``info["final_info"]`` is a dict of arrays ``(T,)`` with ``_key`` masks (nested dicts for
  ``"episode"``);
* ``info`` itself lacks the step's ``"success"`` of finished envs (their slot holds the *reset*
  info, which is empty for Meta-World).

:func:`step_transitions` turns this into replay-ready arrays. It also accepts a stacked numeric
``final_obs (T, D)`` and per-env lists of dicts for ``info``/``final_info`` (the layout of
``gymnasium.wrappers.vector.DictInfoToList``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from envs.protocols import Protocol

__all__ = ["MultiTaskVecEnv", "StepResult", "step_transitions"]


class MultiTaskVecEnv(VectorWrapper):
    """A vector env with one sub-env per task and its task metadata.

    ``step``/``reset`` are those of the wrapped env (observations ``(T, obs_dim_with_one_hot)`` when
    ``use_one_hot``, else ``(T, obs_dim)``; actions ``(T, action_dim)``). ``call``/``get_attr``/
    ``set_attr`` forward to the wrapped env, so ``metaworld.evaluation.evaluation`` accepts it.

    Attributes:
        task_names: task of each sub-env, in env-index order = one-hot order.
        protocol: the :class:`~envs.protocols.Protocol` the env was built for.
        benchmark: ``"MT10"``, ``"MT50"`` or ``"toy"``.
        seed: the constructor seed.
        use_one_hot: whether observations end with the task one-hot ``(T,)``.
    """

    def __init__(
        self,
        env: VectorEnv,
        *,
        task_names: Sequence[str],
        obs_dim: int,
        use_one_hot: bool,
        protocol: Protocol,
        benchmark: str,
        seed: int,
    ) -> None:
        super().__init__(env)
        if env.num_envs != len(task_names):
            raise ValueError(f"one sub-env per task expected: num_envs={env.num_envs}, {len(task_names)} task names")
        if env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"autoreset_mode must be AutoresetMode.SAME_STEP, got {env.metadata.get('autoreset_mode')!r}"
            )
        obs_space = env.single_observation_space
        act_space = env.single_action_space
        if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
            raise TypeError(f"Box observation and action spaces expected, got {obs_space} and {act_space}")
        expected = obs_dim + (len(task_names) if use_one_hot else 0)
        if obs_space.shape != (expected,):
            raise ValueError(f"observation shape {obs_space.shape} != ({expected},) (obs_dim={obs_dim}, one-hot)")
        self.task_names: tuple[str, ...] = tuple(task_names)
        self._obs_dim = obs_dim
        self.use_one_hot = use_one_hot
        self.protocol = protocol
        self.benchmark = benchmark
        self.seed = seed
        self._last_obs: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._last_obs = obs
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

    @property
    def last_obs(self) -> np.ndarray | None:
        """The observations returned by the latest ``reset``/``step`` (what the agent acts on next)."""
        return self._last_obs

    @last_obs.setter
    def last_obs(self, obs: np.ndarray) -> None:
        self._last_obs = obs

    @property
    def vec_env(self) -> VectorEnv:
        """The wrapped gymnasium vector env."""
        return self.env

    @property
    def num_tasks(self) -> int:
        """T, the number of tasks (= sub-envs)."""
        return len(self.task_names)

    @property
    def obs_dim(self) -> int:
        """Observation size without the one-hot (39 for Meta-World v3, 2 for the toy suite)."""
        return self._obs_dim

    @property
    def obs_dim_with_one_hot(self) -> int:
        """``obs_dim + T``: the observation size when the one-hot is appended."""
        return self._obs_dim + self.num_tasks

    @property
    def action_dim(self) -> int:
        """A, the action size of one sub-env."""
        shape = self.single_action_space.shape
        assert shape is not None
        return int(shape[0])

    def strip_one_hot(self, obs: np.ndarray) -> np.ndarray:
        """Observations ``(..., obs_dim[+T])`` → ``(..., obs_dim)`` (what a replay buffer stores)."""
        return obs[..., : self._obs_dim]

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method ``name`` of every sub-env (forwarded to the wrapped vector env)."""
        return self._forward("call", name, *args, **kwargs)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Attribute ``name`` of every sub-env (forwarded to the wrapped vector env)."""
        return self._forward("get_attr", name)

    def set_attr(self, name: str, values: Any) -> None:
        """Set attribute ``name`` of every sub-env (forwarded to the wrapped vector env)."""
        self._forward("set_attr", name, values)

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        target = getattr(self.env, method, None)
        if target is None:
            raise TypeError(f"{type(self.env).__name__} does not support {method}()")
        return target(*args, **kwargs)

    def __repr__(self) -> str:
        return f"MultiTaskVecEnv({self.benchmark}, protocol={self.protocol.name}, T={self.num_tasks}, seed={self.seed})"


class StepResult(NamedTuple):
    """One vector step split into what a replay buffer and a training loop need (T = num_envs).

    Attributes:
        next_obs: ``(T, D)`` the observation that followed the action: ``info["final_obs"]`` for
            envs whose episode ended at this step, else the returned observation. Store this.
        obs: ``(T, D)`` the observation to act on next (the reset observation where an episode ended).
        reward: ``(T,)`` float64.
        terminated: ``(T,)`` true terminations only (no bootstrap). Truncation at the time limit is
            *not* terminal: the critic bootstraps from ``next_obs``.
        truncated: ``(T,)`` time-limit truncations.
        done: ``(T,)`` ``terminated | truncated``: the episode ended (reset the agent's memory).
        success: ``(T,)`` bool, ``info["success"]`` at this step (``final_info`` for ended episodes).
        episode_return: ``(T,)`` float64 undiscounted return of the episode that ended, NaN where
            no episode ended (or the env records no episode statistics).
        episode_length: ``(T,)`` int64 length of the episode that ended, 0 where none ended.
        info: the raw info of the step (a dict of arrays, or a per-env list of dicts).
    """

    next_obs: np.ndarray
    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    done: np.ndarray
    success: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray
    info: Any


def step_transitions(envs: VectorEnv, actions: np.ndarray) -> StepResult:
    """Step a SAME_STEP-autoreset vector env and return the transitions of every sub-env.

    Args:
        envs: a vector env with ``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``.
        actions: ``(T, A)`` one action per sub-env.

    Returns:
        :class:`StepResult`; ``(obs_t, action_t, reward, next_obs, terminated)`` are the transitions.
    """
    mode = envs.metadata.get("autoreset_mode")
    if mode != AutoresetMode.SAME_STEP:
        raise ValueError(f"step_transitions needs autoreset_mode AutoresetMode.SAME_STEP, got {mode!r}")
    obs, reward, terminated, truncated, info = envs.step(actions)
    num_envs = envs.num_envs
    terminated = np.asarray(terminated, dtype=bool)
    truncated = np.asarray(truncated, dtype=bool)
    done = terminated | truncated
    obs = np.asarray(obs)

    if isinstance(info, Mapping):
        final_obs, final_info = info.get("final_obs"), info.get("final_info")
    else:  # per-env list of dicts (gymnasium.wrappers.vector.DictInfoToList)
        final_obs = [env_info.get("final_obs") for env_info in info]
        final_info = [env_info.get("final_info") for env_info in info]

    next_obs = obs.copy()
    if done.any():
        if final_obs is None:
            raise ValueError("an episode ended but info has no 'final_obs' (is the env SAME_STEP autoreset?)")
        for i in np.flatnonzero(done):
            next_obs[i] = _final_obs_row(final_obs, int(i))

    step_success, step_has = _column(info, ("success",), num_envs)
    final_success, final_has = _column(final_info, ("success",), num_envs)
    success = np.where(done, final_has & (final_success > 0), step_has & (step_success > 0))

    ep_return, _ = _column(final_info, ("episode", "r"), num_envs)
    ep_length, has_length = _column(final_info, ("episode", "l"), num_envs)
    episode_return = np.where(done, ep_return, np.nan)
    episode_length = np.where(done & has_length, np.nan_to_num(ep_length), 0).astype(np.int64)
    return StepResult(
        next_obs=next_obs,
        obs=obs,
        reward=np.asarray(reward, dtype=np.float64),
        terminated=terminated,
        truncated=truncated,
        done=done,
        success=success,
        episode_return=episode_return,
        episode_length=episode_length,
        info=info,
    )


def _final_obs_row(final_obs: Any, i: int) -> np.ndarray:
    """Final observation of sub-env ``i`` from an object array ``(T,)`` or a stacked array ``(T, D)``."""
    if isinstance(final_obs, Mapping):
        raise TypeError("dict observations are not supported: the multi-task suites use Box observations")
    row = final_obs[i]
    if row is None:
        raise ValueError(f"episode of sub-env {i} ended but info['final_obs'][{i}] is None")
    return np.asarray(row)


def _column(info: Any, keys: tuple[str, ...], num_envs: int) -> tuple[np.ndarray, np.ndarray]:
    """Values ``(T,)`` float64 (NaN where absent) and presence mask ``(T,)`` of a nested info key.

    ``info`` is either the vector form (a dict of ``(T,)`` arrays with ``_key`` masks, nested dicts
    for sub-dicts) or a per-env sequence of dicts / None.
    """
    values = np.full(num_envs, np.nan)
    present = np.zeros(num_envs, dtype=bool)
    if info is None:
        return values, present
    if isinstance(info, Mapping):
        node: Any = info
        for key in keys[:-1]:
            node = node.get(key)
            if not isinstance(node, Mapping):
                return values, present
        leaf = keys[-1]
        if leaf not in node:
            return values, present
        column = np.asarray(node[leaf])
        mask = np.asarray(node.get(f"_{leaf}", np.ones(num_envs, dtype=bool)), dtype=bool)
        values[mask] = column[mask].astype(np.float64)
        return values, mask.copy()
    for i, env_info in enumerate(info):
        node = env_info
        for key in keys:
            if not isinstance(node, Mapping) or key not in node:
                node = None
                break
            node = node[key]
        if node is not None:
            values[i] = float(node)
            present[i] = True
    return values, present
