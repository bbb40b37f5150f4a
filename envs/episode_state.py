"""The episode in progress of one Meta-World sub-env, captured and restored exactly (sync envs only).

A resumed run should continue the interrupted episodes, not restart them: otherwise it is not the
run it would have been (each resume throws away up to one episode per task and shifts every later
episode boundary). :class:`~metaworld.wrappers.CheckpointWrapper` only covers the goals and RNGs, so
:func:`episode_state` adds, for one sub-env ``env`` (its outermost wrapper):

* the MuJoCo integration state (``mj_getState(..., mjSTATE_INTEGRATION)``: time, ``qpos``, ``qvel``,
  actuator activations, mocap poses, controls, applied forces and the solver's warm start — all
  ``mj_step`` needs to be deterministic);
* the model fields Meta-World edits when it resets a task (``body_pos``/``body_quat``, ``site_pos``/
  ``site_quat``, ``geom_pos``/``geom_quat``, ``geom_rgba``: object and target placements);
* every other attribute of the unwrapped env (path length, ``_prev_obs``, ``_target_pos``,
  ``obj_init_pos``, reward-shaping constants, ...) as a deep copy, except the simulator, renderer
  and spaces. Attributes that are *views* into the simulator's arrays (Meta-World stores
  ``init_left_pad = data.body("leftpad").xpos``, a live view, and its reward reads it) are recorded
  as (array, offset, shape, strides) and re-attached as views of the new simulator, so the reward
  keeps Meta-World's live-view behaviour;
* the plain-data attributes of every wrapper (``TimeLimit._elapsed_steps``,
  ``RecordEpisodeStatistics`` returns, lengths and queues, reward-normalisation statistics).

Measured: a sync MT10/MT50 vector env (both protocols) stepped 37 random actions into an episode,
captured, rebuilt from its seed and restored, gives bit-identical observations, rewards and
truncations to the uninterrupted env for the next 100 steps, across an autoreset
(``tests/rl/test_envs.py``). Async workers cannot be reached by a function call, so
:mod:`envs.checkpoint` falls back to resetting them.

The state is plain data for ``torch.save``: numpy arrays and scalars, and two kinds of object that
:func:`mtrl.checkpoint_io.safe_globals` allows when a checkpoint is read back with ``weights_only=True`` —
gymnasium ``Box`` spaces (``sawyer_observation_space``, ``_random_reset_space``) and the ``deque`` queues of
``RecordEpisodeStatistics`` (read back as lists, made queues of the live wrapper's length again on restore).
Anything else in a file is refused, not unpickled.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["episode_state", "load_episode_state"]

#: what ``mj_step`` needs to continue deterministically
_MJ_STATE = "mjSTATE_INTEGRATION"
#: model fields Meta-World's ``reset_model``/``_set_pos_site`` write (object and goal placements)
_MODEL_FIELDS = ("body_pos", "body_quat", "site_pos", "site_quat", "geom_pos", "geom_quat", "geom_rgba")
#: attributes of the unwrapped env that are not episode state: the simulator and its renderer, the
#: RNGs (restored by Meta-World's own checkpoint), the constant spaces, and the episode length the
#: env was built with (``max_path_length``, like ``TimeLimit._max_episode_steps``, is configuration).
#: ``sawyer_observation_space`` is NOT skipped: it is a ``cached_property`` whose bounds (which clip
#: every observation) depend on the goal observability when it was first read, so it is state.
_ENV_SKIP = frozenset({
    "model", "data", "mujoco_renderer", "np_random", "_np_random", "action_space", "observation_space",
    "_action_space", "_observation_space", "goal_space", "hand_space", "spec", "max_path_length",
})  # fmt: skip
#: wrapper attributes that are structure, not state (``tasks``: the goal list, in Meta-World's checkpoint;
#: ``episode_start_time``: a ``perf_counter`` reading, meaningless in another process)
_WRAPPER_SKIP = frozenset({
    "env", "_action_space", "_observation_space", "_metadata", "_cached_spec", "_saved_kwargs", "tasks",
    "episode_start_time", "_max_episode_steps",
})  # fmt: skip
_PLAIN = (bool, int, float, str, type(None), np.ndarray, np.generic, list, tuple, dict, deque)


def _arrays(obj: Any) -> dict[str, np.ndarray]:
    """The non-empty numpy-array attributes of a ``MjModel``/``MjData`` (views of its buffers)."""
    out: dict[str, np.ndarray] = {}
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # some bindings raise for fields a model does not have
            continue
        if isinstance(value, np.ndarray) and value.size:
            out[name] = value
    return out


def _view_of(value: Any, arrays: dict[tuple[str, str], np.ndarray]) -> tuple[Any, ...] | None:
    """``((owner, field), byte offset, shape, strides, dtype)`` if ``value`` views one of ``arrays``."""
    if not isinstance(value, np.ndarray) or value.base is None:
        return None
    for key, array in arrays.items():
        if np.shares_memory(value, array):
            offset = value.__array_interface__["data"][0] - array.__array_interface__["data"][0]
            return key, offset, value.shape, value.strides, value.dtype.str
    return None


def _wrappers(env: gym.Env) -> list[gym.Wrapper]:
    chain = []
    while isinstance(env, gym.Wrapper):
        chain.append(env)
        env = env.env
    return chain


def episode_state(env: gym.Env) -> dict[str, Any]:
    """The episode in progress of Meta-World sub-env ``env`` (see the module docstring)."""
    import mujoco

    base = env.unwrapped
    model, data = base.model, base.data  # type: ignore[attr-defined]
    spec = getattr(mujoco.mjtState, _MJ_STATE)
    physics = np.empty(mujoco.mj_stateSize(model, spec))
    mujoco.mj_getState(model, data, physics, spec)
    sim_arrays = {("data", k): v for k, v in _arrays(data).items()}
    sim_arrays.update({("model", k): v for k, v in _arrays(model).items()})
    attrs: dict[str, Any] = {}
    views: dict[str, tuple[Any, ...]] = {}
    for name, value in vars(base).items():
        if name in _ENV_SKIP:
            continue
        view = _view_of(value, sim_arrays)
        if view is not None:
            views[name] = view
        else:
            attrs[name] = value
    wrappers = [
        {k: v for k, v in vars(w).items() if k not in _WRAPPER_SKIP and isinstance(v, _PLAIN)} for w in _wrappers(env)
    ]
    return {
        "physics": physics,
        "model": {field: getattr(model, field).copy() for field in _MODEL_FIELDS},
        # one deepcopy of everything: aliasing between attributes survives (and torch.save keeps it)
        **copy.deepcopy({"attrs": attrs, "wrappers": wrappers}),
        "views": views,
    }


def load_episode_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Restore :func:`episode_state` into ``env`` (the same task's sub-env, built for the same benchmark)."""
    import mujoco

    base = env.unwrapped
    model, data = base.model, base.data  # type: ignore[attr-defined]
    chain = _wrappers(env)
    if len(chain) != len(state["wrappers"]):
        raise ValueError(f"episode state has {len(state['wrappers'])} wrappers, this env {len(chain)}")
    restored = copy.deepcopy({"attrs": state["attrs"], "wrappers": state["wrappers"]})
    for name, value in restored["attrs"].items():
        setattr(base, name, value)
    for name, ((owner, field), offset, shape, strides, dtype) in state["views"].items():
        buffer = getattr(data if owner == "data" else model, field)
        setattr(base, name, np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset, strides=strides))
    for field, value in state["model"].items():
        getattr(model, field)[...] = value
    for wrapper, values in zip(chain, restored["wrappers"], strict=True):
        for name, value in values.items():
            current = getattr(wrapper, name, None)
            if isinstance(current, deque):  # a queue comes back from a checkpoint as a list of its items
                value = deque(value, maxlen=current.maxlen)
            setattr(wrapper, name, value)
    spec = getattr(mujoco.mjtState, _MJ_STATE)
    mujoco.mj_setState(model, data, state["physics"], spec)
    mujoco.mj_forward(model, data)  # positions, contacts, sensors from the restored state ...
    mujoco.mj_setState(model, data, state["physics"], spec)  # ... but keep the saved warm start
