"""The run directory of a vision run: what it holds, and how it is written, resumed and purged.

``<logdir>/<run_name>/`` holds ``config.yaml``, TensorBoard events + ``metrics.jsonl``, ``checkpoint.pt``
(model, optimizer, scheduler, balancer state, GradScaler, RNGs, evaluation history, training time, in the
envelope of :func:`mtrl.checkpoint_io.save_envelope`, kind ``"vision"``), the one before it as
``checkpoint.prev.pt`` (a resume falls back to it when ``checkpoint.pt`` is unreadable) and, once training
completes, ``results.json``. Every function here is one step of that plumbing: the resume check
(:func:`resume_checkpoint`, with ``VisionConfig.RESUME_MAY_CHANGE``) and checkpoint writes and reads
(:func:`save_checkpoint`, :func:`load_checkpoint`). What every trainer's run directory shares — the start-up
sequence, the single-writer lease, atomic files, the results file — is :mod:`mtrl.skeleton` and :mod:`mtrl.rundir`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from mtrl import recovery
from mtrl.checkpoint_io import CheckpointError, load_envelope, save_envelope
from mtrl.config import config_to_dict, load_config
from mtrl.rng import capture_rng, restore_rng
from mtrl.rundir import check_resume
from mtrl.runstart import VISION
from mtrl.vision.config import VisionConfig

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "PREVIOUS_CHECKPOINT",
    "RESULTS",
    "Progress",
    "Stateful",
    "check_resume_config",
    "checkpoint_candidates",
    "load_checkpoint",
    "resume_checkpoint",
    "run_dir_of",
    "save_checkpoint",
]

#: file names inside the run directory
CONFIG, METRICS, CHECKPOINT, RESULTS = "config.yaml", "metrics.jsonl", "checkpoint.pt", "results.json"
#: the checkpoint before ``checkpoint.pt`` (what a resume falls back to when ``checkpoint.pt`` is unreadable)
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"


class Stateful(Protocol):
    """Anything checkpointed through ``state_dict``/``load_state_dict`` (modules, optimizers, balancers, …)."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> Any: ...


@dataclass(frozen=True)
class Progress:
    """The training progress a checkpoint restores besides the state of its :class:`Stateful` parts."""

    step: int
    evals: list[dict[str, Any]]
    #: wall time of the training so far, summed over resumes
    train_time_s: float


def run_dir_of(cfg: VisionConfig, default_name: str) -> Path:
    """``<logdir>/<run_name or default_name>`` (created when the trainer takes its lease)."""
    return Path(cfg.logdir) / (cfg.run_name or default_name)


def check_resume_config(run_dir: Path, cfg: VisionConfig) -> None:
    """Refuse to continue a run whose saved ``config.yaml`` differs outside ``VisionConfig.RESUME_MAY_CHANGE``
    (:func:`mtrl.rundir.check_resume`; both sides read through :class:`VisionConfig`, so keys added since the
    run was saved compare at their defaults).

    Raises:
        ConfigError: listing every changed key.
    """
    saved = run_dir / CONFIG
    if saved.is_file():
        old = config_to_dict(load_config(VisionConfig, saved))
        check_resume(old, config_to_dict(cfg), VisionConfig.RESUME_MAY_CHANGE, "resume=true", saved)


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """The run's checkpoints, newest first: ``checkpoint.pt``, then ``checkpoint.prev.pt`` (the one before it,
    kept by :func:`save_checkpoint` so that a resume whose newest checkpoint is unreadable has one to fall back
    to, :func:`mtrl.recovery.load_newest_intact`): :func:`mtrl.recovery.checkpoint_candidates` for kind
    ``"vision"``."""
    candidates, _ = recovery.checkpoint_candidates(run_dir, VISION)
    return candidates


def resume_checkpoint(run_dir: Path, cfg: VisionConfig) -> list[Path]:
    """The checkpoints a ``resume=true`` may continue from, newest first (:func:`checkpoint_candidates`; the
    configuration checked by :func:`check_resume_config`), or ``[]`` for a fresh start. Whether a resume has a
    checkpoint and a fresh start overwrites none is the run-directory rule's (:func:`mtrl.runstart.check_run_dir`).
    Reads only."""
    if not cfg.resume:
        return []
    check_resume_config(run_dir, cfg)
    return checkpoint_candidates(run_dir)


def save_checkpoint(path: Path, parts: Mapping[str, Stateful | None], progress: Progress) -> None:
    """Write ``parts`` (their ``state_dict``; ``None`` for an absent part), ``progress`` and the global RNGs
    (:func:`mtrl.rng.capture_rng`: torch, CUDA, numpy, python) to ``path`` atomically, in the envelope of kind
    ``"vision"`` (:func:`mtrl.checkpoint_io.save_envelope`); the checkpoint it replaces becomes
    ``checkpoint.prev.pt`` beside it. A write that fails leaves both as they were."""
    state: dict[str, Any] = {"step": progress.step}
    state.update({key: part.state_dict() if part is not None else None for key, part in parts.items()})
    state.update({"evals": progress.evals, "train_time_s": progress.train_time_s, "rng": capture_rng()})
    save_envelope(path, VISION, state, progress.step, previous=path.with_name(PREVIOUS_CHECKPOINT))


def load_checkpoint(path: Path, parts: Mapping[str, Stateful | None], device: torch.device) -> Progress:
    """Restore ``parts`` (those not ``None``, from a saved state that is not ``None``) and the global RNGs from
    a :func:`save_checkpoint` file (or an un-enveloped ``checkpoint.pt`` of an earlier release); returns its
    progress. The file is read as plain data only (:func:`mtrl.checkpoint_io.load_envelope`: ``weights_only=True``,
    nothing in it is executed).

    Raises:
        CheckpointError: the file is truncated or corrupt, refused as untrusted, or written by another trainer
            (one line naming it).
    """
    state = load_envelope(path, VISION, map_location=device)
    missing = sorted(
        {"step", "evals", "train_time_s", "rng", *(k for k, p in parts.items() if p is not None)} - set(state)
    )
    if missing:
        raise CheckpointError(
            f"checkpoint file {path} has no {', '.join(missing)}: it is not a complete vision checkpoint of this "
            "run; resume from another checkpoint or start a fresh run"
        )
    for key, part in parts.items():
        if part is not None and state[key] is not None:
            part.load_state_dict(state[key])
    restore_rng(state["rng"])
    return Progress(int(state["step"]), list(state["evals"]), float(state["train_time_s"]))
