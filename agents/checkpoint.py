"""Checkpoints of a multi-task SAC run: everything needed to continue bit-for-bit on the CPU.

A checkpoint holds the agent (networks, temperatures, optimizers, balancer states), the RNG states
(torch CPU/CUDA, numpy's global and the run's own generators, python's ``random``), the
state of the training and evaluation envs (:func:`envs.env_state`: goals and RNGs, and for the
training envs on the toy suite and sync Meta-World the episodes in progress), the current
observations, the step counters and evaluation history, and optionally the replay buffer.
Checkpoints are ``checkpoints/step_<step>.pt`` with ``checkpoints/last.txt`` naming the latest; both
are written to a temporary name and renamed, so an interrupted save never leaves a broken checkpoint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl.checkpoint_io import CheckpointError, load_torch, numpy_global_state, set_numpy_global_state
from mtrl.rundir import save_torch, write_text

__all__ = ["capture_rng", "latest_checkpoint", "load_checkpoint", "restore_rng", "save_checkpoint"]


def capture_rng(np_rng: np.random.Generator, sample_gen: torch.Generator) -> dict[str, Any]:
    """Every random state the training loop draws from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_global": numpy_global_state(),
        "python": random.getstate(),
        "np_rng": np_rng.bit_generator.state,
        "sample_gen": sample_gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], np_rng: np.random.Generator, sample_gen: torch.Generator) -> None:
    """Inverse of :func:`capture_rng` (in place on the given generators)."""
    torch.set_rng_state(state["torch"])
    set_numpy_global_state(state["numpy_global"])
    random.setstate(state["python"])
    np_rng.bit_generator.state = state["np_rng"]
    sample_gen.set_state(state["sample_gen"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], ckpt_dir: str | Path, step: int, keep_last: int = 2) -> Path:
    """Write ``state`` to ``ckpt_dir/step_<step>.pt``, point ``last.txt`` at it and delete all but the
    ``keep_last`` newest step files (a checkpoint with a full MT10 replay buffer is ~340 MB)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = save_torch(state, ckpt_dir / f"step_{step:09d}.pt")  # a kill mid-write leaves no step file
    write_text(ckpt_dir / "last.txt", path.name)  # points at the new file only once it is complete
    for old in sorted(ckpt_dir.glob("step_*.pt"))[:-keep_last]:
        old.unlink()
    return path


def latest_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory, a ``checkpoints/`` folder or a ``.pt`` file to a checkpoint file."""
    p = Path(path)
    if p.is_file():
        return p
    for ckpt_dir in (p / "checkpoints", p):
        pointer = ckpt_dir / "last.txt"
        if pointer.is_file():
            return ckpt_dir / pointer.read_text().strip()
    raise FileNotFoundError(
        f"no checkpoint found at {str(p)!r}: expected a .pt file or a run directory with checkpoints/last.txt"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint (run directory or file) onto ``map_location``, as plain data only
    (:func:`mtrl.checkpoint_io.load_torch`: ``weights_only=True``, nothing in the file is executed).

    Raises:
        CheckpointError: the file is truncated or corrupt, or refused as untrusted (one line naming it).
    """
    file = latest_checkpoint(path)
    state = load_torch(file, map_location=map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint file {str(file)!r} holds a {type(state).__name__}, not a checkpoint dict")
    for key in ("env_state", "eval_env_state"):  # named if envs.checkpoint refuses the env state
        if isinstance(state.get(key), dict):
            state[key]["source"] = str(file)
    return state
