"""Saving and restoring the state of a multi-task vector env for ``--resume``.

* Toy suite: :meth:`envs.toy.ToyReachVecEnv.get_state` captures everything (RNGs, positions, step
  counters), so a resumed run continues *identically*, mid-episode included.
* Meta-World: each sub-env's ``CheckpointWrapper.get_checkpoint()`` (metaworld 3.1) serialises its
  task list (the 50 goals), the task-sampling RNG, ``sample_tasks_on_reset`` and the env/space RNGs;
  we add the current goal vector ``_last_rand_vec`` (needed for fixed goals, which the checkpoint does
  not record) and the running reward-normalisation statistics. For **sync** vector envs (the
  default) the episodes in progress are saved too (:mod:`envs.episode_state`: simulator state,
  edited model fields, env and wrapper attributes) with the latest observations, and
  :func:`load_env_state` continues them: a resumed run steps exactly as the uninterrupted one.
  Async workers cannot be reached by a function call, so async envs (and checkpoints without
  episodes) are reset instead: their interrupted episodes restart (:func:`continues_episodes`
  says which case applies).

The state is a dict of Python/numpy objects for ``torch.save`` (not JSON: numpy arrays), read back with
``weights_only=True`` (:mod:`mtrl.checkpoint_io`). Meta-World's checkpoint holds each goal as a ``Task`` whose
``data`` is pickled bytes that ``set_task`` unpickles; the state stores only each task's name and the sha256 of
those bytes, and :func:`restore_env_state` hands Meta-World the matching tasks of the envs it restores into, which
were built from the run's seed, so nothing pickled in a checkpoint file is ever unpickled. (A checkpoint of an
earlier release, which holds the bytes, is checked the same way: its bytes are hashed, not loaded.)
"""

from __future__ import annotations

import base64
import copy
import hashlib
from typing import Any

import numpy as np
from gymnasium.vector import SyncVectorEnv

from envs.episode_state import episode_state, load_episode_state
from envs.toy import ToyReachVecEnv
from envs.vector import MultiTaskVecEnv
from mtrl.checkpoint_io import UntrustedCheckpointError

__all__ = ["continues_episodes", "env_state", "load_env_state", "restore_env_state"]

_REWARD_NORM_ATTRS = ("_reward_mean", "_reward_var")


def _base_protocol(name: str) -> str:
    return name.split("[", 1)[0]


def env_state(envs: MultiTaskVecEnv, episodes: bool = True) -> dict[str, Any]:
    """The resumable state of ``envs`` (a toy or Meta-World :class:`~envs.vector.MultiTaskVecEnv`).

    ``episodes=False`` leaves out the Meta-World episodes in progress (evaluation envs, which
    :func:`restore_env_state` restores without them: every evaluation starts with a reset).
    """
    state: dict[str, Any] = {
        "benchmark": envs.benchmark,
        "protocol": envs.protocol.name,
        "task_names": list(envs.task_names),
        "action_space_rng": copy.deepcopy(envs.action_space.np_random.bit_generator.state),
    }
    base = envs.vec_env
    if isinstance(base, ToyReachVecEnv):
        state["toy"] = base.get_state()
        return state
    state["metaworld"] = [_with_task_digests(env_id, ckpt) for env_id, ckpt in envs.call("get_checkpoint")]
    state["rand_vecs"] = [np.array(v, copy=True) for v in envs.get_attr("_last_rand_vec")]
    if envs.protocol.reward_normalization == "exponential":
        state["reward_norm"] = {name: list(envs.get_attr(name)) for name in _REWARD_NORM_ATTRS}
    if episodes and isinstance(base, SyncVectorEnv) and envs.last_obs is not None:
        state["episodes"] = [episode_state(env) for env in base.envs]
        state["obs"] = np.array(envs.last_obs, copy=True)
    return state


def _task_digest(task: dict[str, Any]) -> str:
    """sha256 of a Meta-World task's pickled data: from a saved digest, or of the (base64) ``data`` that
    ``get_checkpoint`` and checkpoints of earlier releases hold — computed on the bytes, never unpickled."""
    if "sha256" in task:
        return str(task["sha256"])
    return hashlib.sha256(base64.b64decode(task["data"])).hexdigest()


def _with_task_digests(env_id: str, ckpt: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A sub-env's Meta-World checkpoint with each task's pickled data replaced by its digest."""
    tasks = [{"env_name": task["env_name"], "sha256": _task_digest(task)} for task in ckpt["tasks"]]
    return env_id, {**ckpt, "tasks": tasks}


def _verified_tasks(
    saved: list[tuple[str, dict[str, Any]]], live: list[tuple[str, dict[str, Any]]], source: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The saved Meta-World checkpoints with their tasks taken from ``live`` (the checkpoints of envs just built
    from the run's seed), matched by name and digest in the saved order; ``source`` names the checkpoint file in
    the error (:func:`agents.checkpoint.load_checkpoint` records it in the state as ``"source"``).

    Meta-World's ``load_checkpoint`` unpickles each task's data (``set_task``), so the data it gets must be what
    the installed Meta-World built from the run's seed, never bytes read from a checkpoint file.

    Raises:
        UntrustedCheckpointError: a saved task is not one of the tasks rebuilt from the seed (tampered task data,
            another seed or another Meta-World/numpy version).
    """
    rebuilt = {
        env_id: {(task["env_name"], _task_digest(task)): task for task in ckpt["tasks"]} for env_id, ckpt in live
    }
    out = []
    for env_id, ckpt in saved:
        known = rebuilt.get(env_id, {})
        tasks = []
        for task in ckpt["tasks"]:
            match = known.get((task["env_name"], _task_digest(task)))
            if match is None:
                where = f" in {source!r}" if source else ""
                raise UntrustedCheckpointError(
                    f"refusing the env state{where}: a Meta-World task of {task['env_name']!r} is not one of the "
                    "tasks this run's seed builds (task data is never unpickled from a checkpoint); the checkpoint "
                    "was altered, or written with another seed or Meta-World version"
                )
            tasks.append(match)
        out.append((env_id, {**ckpt, "tasks": tasks}))
    return out


def continues_episodes(envs: MultiTaskVecEnv, state: dict[str, Any]) -> bool:
    """Whether :func:`load_env_state` continues the saved episodes in progress (else it resets)."""
    return isinstance(envs.vec_env, ToyReachVecEnv) or ("episodes" in state and isinstance(envs.vec_env, SyncVectorEnv))


def load_env_state(envs: MultiTaskVecEnv, state: dict[str, Any]) -> np.ndarray:
    """Restore :func:`env_state` into ``envs`` and return the observations ``(T, D)`` to act on next.

    ``envs`` must be built for the same benchmark, protocol and tasks, and for Meta-World from the same
    seed: the saved goal sets are matched against the tasks that seed builds (the goal being used and the
    RNGs come from ``state``). Toy envs and sync Meta-World envs continue mid-episode; otherwise (async
    envs, a state without episodes) the Meta-World envs are reset (see the module docstring) and the
    caller should also reset its agent's per-episode memory.

    Raises:
        UntrustedCheckpointError: a saved Meta-World task is not one of the tasks ``envs`` were built with.
    """
    restore_env_state(envs, state)
    base = envs.vec_env
    if isinstance(base, ToyReachVecEnv):
        return base.current_obs()
    if continues_episodes(envs, state):
        assert isinstance(base, SyncVectorEnv)
        if len(state["episodes"]) != len(base.envs):
            raise ValueError(f"env state holds {len(state['episodes'])} episodes, these envs have {len(base.envs)}")
        for env, episode in zip(base.envs, state["episodes"], strict=True):
            load_episode_state(env, episode)
        obs = np.array(state["obs"], copy=True)
        envs.last_obs = obs
        return obs
    obs, _ = envs.reset()
    return np.asarray(obs)


def restore_env_state(envs: MultiTaskVecEnv, state: dict[str, Any]) -> None:
    """:func:`load_env_state` without the final Meta-World reset.

    For evaluation envs, which :func:`envs.evaluate` resets itself: the goal sampler stays where it
    was when the state was taken, so the next evaluation draws the same goals as it would have in an
    uninterrupted run (a reset here would consume one draw per sub-env).
    """
    # The protocol must match up to an overridden episode length ("metaworld-v3[max_episode_steps=100]"
    # holds the same goals, RNGs and reward statistics as "metaworld-v3").
    for key, have, want in [
        ("benchmark", envs.benchmark, state.get("benchmark")),
        ("protocol", _base_protocol(envs.protocol.name), _base_protocol(str(state.get("protocol")))),
    ]:
        if want != have:
            raise ValueError(f"env state is for {key} {state.get(key)!r}, these envs are {have!r}")
    if list(state["task_names"]) != list(envs.task_names):
        raise ValueError(f"env state tasks {state['task_names']} differ from these envs' {list(envs.task_names)}")
    envs.action_space.np_random.bit_generator.state = copy.deepcopy(state["action_space_rng"])
    base = envs.vec_env
    if isinstance(base, ToyReachVecEnv):
        base.set_state(state["toy"])
        return
    live = list(envs.call("get_checkpoint"))
    envs.call("load_checkpoint", _verified_tasks(state["metaworld"], live, state.get("source")))
    envs.set_attr("_last_rand_vec", [np.array(v, copy=True) for v in state["rand_vecs"]])
    for name, values in state.get("reward_norm", {}).items():
        envs.set_attr(name, list(values))
