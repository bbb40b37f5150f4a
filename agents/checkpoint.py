"""Checkpoints of a multi-task SAC run: everything needed to continue bit-for-bit on the CPU.

A checkpoint holds the agent (networks, temperatures, optimizers, balancer states), the RNG states
(torch CPU/CUDA, numpy's global and the run's own generators, python's ``random``), the
state of the training and evaluation envs (:func:`envs.env_state`: goals and RNGs, and for the
training envs on the toy suite and sync Meta-World the episodes in progress), the current
observations, the step counters and evaluation history, and optionally the replay buffer.
Checkpoints are ``checkpoints/step_<step>.pt`` with ``checkpoints/last.txt`` naming the latest; both
are written to a temporary name and renamed, so an interrupted save never leaves a broken checkpoint, and a
save that fails (a full disk) leaves the previous one as it was. The two newest step files are kept: a resume
whose newest checkpoint is unreadable continues from the older one (:func:`checkpoint_candidates`).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl.checkpoint_io import CheckpointError, load_torch, numpy_global_state, set_numpy_global_state
from mtrl.rundir import save_torch, write_text

__all__ = [
    "capture_rng",
    "checkpoint_candidates",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]


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


_STEP_FILE = re.compile(r"step_(\d+)\.pt")


def checkpoint_candidates(path: str | Path) -> tuple[list[Path], list[str]]:
    """The checkpoints of a run directory or ``checkpoints/`` folder, newest first, and notes on the lookup.

    Newest first: the file ``last.txt`` names, then every ``step_<n>.pt`` by decreasing ``n`` (a resume uses
    the first that loads, :func:`mtrl.recovery.load_newest_intact`). Where ``last.txt`` is missing or names a
    file that is gone, the highest ``step_<n>.pt`` comes first and a note says so. A ``.pt`` file is its own
    only candidate."""
    p = Path(path)
    if p.is_file():
        return [p], []
    for folder in (p / "checkpoints", p):
        numbered = ((_STEP_FILE.fullmatch(f.name), f) for f in folder.glob("step_*.pt"))
        steps = [f for _, f in sorted(((int(m.group(1)), f) for m, f in numbered if m), reverse=True)]
        pointer = folder / "last.txt"
        named = folder / pointer.read_text().strip() if pointer.is_file() else None
        if named is not None and named.is_file():
            return [named, *(f for f in steps if f != named)], []
        if steps:
            why = f"names {named.name}, which is missing" if named is not None else "is missing"
            return steps, [f"{pointer} {why}: using the highest step file, {steps[0].name}"]
    return [], []


def latest_checkpoint(path: str | Path) -> Path:
    """Resolve a run directory, a ``checkpoints/`` folder or a ``.pt`` file to its newest checkpoint file (the
    first of :func:`checkpoint_candidates`: ``last.txt``'s, else the highest ``step_<n>.pt``).

    Raises:
        FileNotFoundError: no checkpoint there (the message names what was looked for).
    """
    candidates, _ = checkpoint_candidates(path)
    if not candidates:
        raise FileNotFoundError(
            f"no checkpoint in {str(path)!r} (looked for checkpoints/last.txt and checkpoints/step_*.pt)"
        )
    return candidates[0]


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
