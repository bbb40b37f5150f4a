"""The run directory of a vision run: what it holds, and how it is written, resumed and purged.

``<logdir>/<run_name>/`` holds ``config.yaml``, TensorBoard events + ``metrics.jsonl``, ``checkpoint.pt``
(model, optimizer, scheduler, balancer state, GradScaler, RNGs, evaluation history, training time) and, once
training completes, ``results.json``. Every function here is one step of that plumbing: the resume check
(:func:`resume_checkpoint`, with :data:`RESUME_MAY_CHANGE`), the purge of logs a resumed run rewrites
(:func:`open_logger`), atomic checkpoint writes (:func:`save_checkpoint`) and the results file
(:func:`write_results`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mtrl.config import MISSING, ConfigError, config_to_dict, load_config, save_config
from mtrl.config import config_differences as nested_differences
from mtrl.logger import JsonlWriter, Logger, TensorBoardWriter, truncate_jsonl
from mtrl.vision.config import VisionConfig

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "RESULTS",
    "RESUME_MAY_CHANGE",
    "Progress",
    "Stateful",
    "check_resume_config",
    "config_differences",
    "load_checkpoint",
    "make_run_dir",
    "open_logger",
    "resume_checkpoint",
    "save_checkpoint",
    "save_run_config",
    "write_results",
]

#: config keys (dotted) that may differ when a run is resumed: training length, where/how it runs and logs,
#: and the Δm baseline (only read when the results are written). Anything else changes the run.
RESUME_MAY_CHANGE: frozenset[str] = frozenset(
    {"optim.steps", "optim.epochs", "logdir", "run_name", "device", "resume", "progress", "threads",
     "data.workers", "log_every", "image_samples", "baseline"}
)  # fmt: skip

#: file names inside the run directory
CONFIG, METRICS, CHECKPOINT, RESULTS = "config.yaml", "metrics.jsonl", "checkpoint.pt", "results.json"


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


def make_run_dir(cfg: VisionConfig, default_name: str) -> Path:
    """``<logdir>/<run_name or default_name>``, created if needed."""
    run_dir = Path(cfg.logdir) / (cfg.run_name or default_name)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def config_differences(old: VisionConfig, new: VisionConfig, allowed: frozenset[str] = frozenset()) -> list[str]:
    """``["key: old -> new", ...]`` for every dotted config key that differs, except those in ``allowed``
    (a key only one side has shows ``None`` on the other)."""
    changed = nested_differences(config_to_dict(old), config_to_dict(new), allowed)
    return [f"{key}: {_shown(a)!r} -> {_shown(b)!r}" for key, a, b in changed]


def _shown(value: Any) -> Any:
    return None if value is MISSING else value


def check_resume_config(run_dir: Path, cfg: VisionConfig) -> None:
    """Refuse to continue a run whose saved ``config.yaml`` differs outside :data:`RESUME_MAY_CHANGE`.

    Raises:
        ConfigError: listing every changed key.
    """
    saved = run_dir / CONFIG
    if not saved.is_file():
        return
    old = load_config(VisionConfig, saved)
    changed = config_differences(old, cfg, RESUME_MAY_CHANGE)
    if changed:
        raise ConfigError(
            f"resume=true but the configuration differs from the one {str(run_dir)!r} was trained with: "
            f"{'; '.join(changed)}. Resume with the same settings (only {sorted(RESUME_MAY_CHANGE)} may "
            "change) or start a new run (another run_name)"
        )


def resume_checkpoint(run_dir: Path, cfg: VisionConfig) -> Path | None:
    """The checkpoint to continue from (``resume=true`` and one exists; its configuration checked by
    :func:`check_resume_config`), or None for a run that starts from scratch."""
    path = run_dir / CHECKPOINT
    if not (cfg.resume and path.is_file()):
        return None
    check_resume_config(run_dir, cfg)
    return path


def save_run_config(run_dir: Path, cfg: VisionConfig) -> None:
    """Write the run's configuration as ``config.yaml``."""
    save_config(cfg, run_dir / CONFIG)


def open_logger(run_dir: Path, resumed_step: int | None) -> Logger:
    """TensorBoard + ``metrics.jsonl`` logger of the run. A fresh run (``resumed_step=None``) starts with clean
    logs; a run resumed from a checkpoint at ``resumed_step`` drops what was logged after it (the logs of the
    interrupted run that the resumed one logs again; :mod:`mtrl.logger`)."""
    metrics_path = run_dir / METRICS
    truncate_jsonl(metrics_path, resumed_step)
    tensorboard = TensorBoardWriter(run_dir, purge_step=resumed_step + 1 if resumed_step is not None else 0)
    return Logger([tensorboard, JsonlWriter(metrics_path)])


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _restore_rng(rng: Mapping[str, Any]) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])


def save_checkpoint(path: Path, parts: Mapping[str, Stateful | None], progress: Progress) -> None:
    """Write ``parts`` (their ``state_dict``; ``None`` for an absent part), ``progress`` and the global RNGs
    (torch, CUDA, numpy, python) to ``path`` atomically (a temporary file renamed over it)."""
    state: dict[str, Any] = {"step": progress.step}
    state.update({key: part.state_dict() if part is not None else None for key, part in parts.items()})
    state.update({"evals": progress.evals, "train_time_s": progress.train_time_s, "rng": _rng_state()})
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, parts: Mapping[str, Stateful | None], device: torch.device) -> Progress:
    """Restore ``parts`` (those not ``None``, from a saved state that is not ``None``) and the global RNGs from
    a :func:`save_checkpoint` file; returns its progress."""
    state = torch.load(path, map_location=device, weights_only=False)
    for key, part in parts.items():
        if part is not None and state[key] is not None:
            part.load_state_dict(state[key])
    _restore_rng(state["rng"])
    return Progress(int(state["step"]), list(state["evals"]), float(state["train_time_s"]))


def write_results(run_dir: Path, results: Mapping[str, Any]) -> None:
    """Write the results record as ``results.json``."""
    (run_dir / RESULTS).write_text(json.dumps(results, indent=2))
