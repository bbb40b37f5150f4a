"""The models of a single-task reference run (:mod:`agents.stl`): one stable-baselines3 SAC per task, built new
or reloaded from its checkpoint, and saved atomically.

A task's checkpoint is ``checkpoints/<task>/model.zip`` (SB3's ``save``) and ``checkpoints/<task>/replay.pkl``
(its replay buffer, unless ``checkpoint_replay`` is off). They are read back without unpickling anything
(:func:`agents.sb3.load_sb3_sac`, :func:`agents.sb3.load_sb3_replay`); SB3 models are reached only through
:mod:`agents.sb3`'s adapter functions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from agents.stl_config import ResolvedSTLConfig
from mtrl.atomic import atomic_write

__all__ = ["MODEL_FILE", "REPLAY_FILE", "build_task_model", "save_task_model"]

#: A task's files under ``checkpoints/<task>/``.
MODEL_FILE, REPLAY_FILE = "model.zip", "replay.pkl"


def build_task_model(
    task: str, settings: ResolvedSTLConfig, device: str, folder: Path, steps_done: int, notes: list[str]
) -> tuple[Any, bool]:
    """``(model, reloaded)``: ``task``'s SB3 SAC on its env (:func:`agents.sb3.make_task_env`), reloaded from
    ``folder`` (its checkpoint folder) when it has trained ``steps_done > 0`` steps and saved a model there, else
    new.

    A reloaded model gets its replay buffer back when one was saved (else a note in ``notes``: its buffer
    restarts empty); its interrupted episode restarts from a reset. The model's SB3 logger is silenced (the run
    reads its values; it writes nothing)."""
    from agents.sb3 import load_sb3_replay, load_sb3_sac, make_sb3_sac, make_task_env, restart_episode, silence_logger

    cfg = settings.cfg
    env = make_task_env(task, settings.protocol, cfg.seed)
    path = folder / MODEL_FILE
    reloaded = steps_done > 0 and path.is_file()
    if reloaded:
        # SB3's own SAC.load and load_replay_buffer unpickle the files: read them as plain data instead.
        model = load_sb3_sac(
            path, env, settings.sac, seed=cfg.seed, device=device, buffer_size=settings.buffer_capacity
        )
        restart_episode(model)  # the interrupted episode restarts from a reset (train.py continues it)
        replay = folder / REPLAY_FILE
        if replay.is_file():
            load_sb3_replay(model, replay)
        else:
            notes.append(f"{task}: resumed without a saved replay buffer: its buffer restarts empty")
        print(f"{task}: resumed at step {model.num_timesteps}", file=sys.stderr)
    else:
        model = make_sb3_sac(env, settings.sac, seed=cfg.seed, device=device, buffer_size=settings.buffer_capacity)
    silence_logger(model)  # we read its values, it writes nothing
    return model, reloaded


def save_task_model(model: Any, folder: Path, replay: bool) -> None:
    """SB3 ``save`` of ``model`` (and of its replay buffer when ``replay``) into ``folder``, each written under a
    temporary name and renamed (:func:`mtrl.atomic.atomic_write`)."""
    atomic_write(folder / MODEL_FILE, model.save)
    if replay:
        atomic_write(folder / REPLAY_FILE, model.save_replay_buffer)
