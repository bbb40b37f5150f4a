"""Checkpoints of a multi-task SAC run: everything needed to continue bit-for-bit on the CPU.

A checkpoint holds the agent (networks, temperatures, optimizers, balancer states), the RNG states
(torch CPU/CUDA, numpy's global and the run's own generators, python's ``random``), the
state of the training and evaluation envs (:func:`envs.env_state`: goals and RNGs, and for the
training envs on the toy suite and sync Meta-World the episodes in progress), the current
observations, the step counters and evaluation history, and optionally the replay buffer.
Checkpoints are ``checkpoints/step_<step>.pt`` (the envelope of :func:`mtrl.checkpoint_io.save_envelope`, kind
``"rl"``) with ``checkpoints/last.txt`` naming the latest; both are written to a temporary name and renamed, so an
interrupted save never leaves a broken checkpoint, and a save that fails (a full disk) leaves the previous one as it
was. The two newest step files are kept: a resume whose newest checkpoint is unreadable continues from the older
one (the lookup, :func:`mtrl.recovery.checkpoint_candidates`). The RNG states are :func:`mtrl.rng.capture_rng`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtrl import recovery
from mtrl.checkpoint_io import load_envelope, save_envelope
from mtrl.recovery import step_file_name
from mtrl.rundir import write_text
from mtrl.runstart import RL

__all__ = [
    "checkpoint_candidates",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]


def save_checkpoint(state: dict[str, Any], ckpt_dir: str | Path, step: int, keep_last: int = 2) -> Path:
    """Write ``state`` to ``ckpt_dir/step_<step>.pt``, point ``last.txt`` at it and delete all but the
    ``keep_last`` newest step files (a checkpoint with a full MT10 replay buffer is ~340 MB)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = save_envelope(ckpt_dir / step_file_name(step), RL, state, step)  # a kill mid-write leaves no step file
    write_text(ckpt_dir / recovery.POINTER, path.name)  # points at the new file only once it is complete
    for old in sorted(ckpt_dir.glob("step_*.pt"))[:-keep_last]:
        old.unlink()
    return path


def checkpoint_candidates(path: str | Path) -> tuple[list[Path], list[str]]:
    """The multi-task trainer's checkpoints in a run directory, ``checkpoints/`` folder or ``.pt`` file, newest
    first, and notes on the lookup: :func:`mtrl.recovery.checkpoint_candidates` for kind ``"rl"``."""
    return recovery.checkpoint_candidates(path, RL)


def latest_checkpoint(path: str | Path) -> Path:
    """The newest checkpoint file of a run directory, ``checkpoints/`` folder or ``.pt`` file:
    :func:`mtrl.recovery.latest_checkpoint` for kind ``"rl"`` (``last.txt``'s, else the highest
    ``step_<n>.pt``).

    Raises:
        FileNotFoundError: no checkpoint there (the message names what was looked for).
    """
    return recovery.latest_checkpoint(path, RL)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (run directory or file) onto ``map_location``, as plain data only
    (:func:`mtrl.checkpoint_io.load_envelope`: ``weights_only=True``, nothing in the file is executed; the
    un-enveloped step files of earlier releases load too).

    Raises:
        CheckpointError: the file is truncated or corrupt, refused as untrusted, or written by another trainer
            (one line naming it).
    """
    file = latest_checkpoint(path)
    state = load_envelope(file, RL, map_location=map_location)
    for key in ("env_state", "eval_env_state"):  # named if envs.checkpoint refuses the env state
        if isinstance(state.get(key), dict):
            state[key]["source"] = str(file)
    return state
