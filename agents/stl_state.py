"""The single-task reference's state file (:mod:`agents.stl`): what its checkpoints hold.

``checkpoints/state.pt`` records the step of each task's checkpoint on disk (``checkpoints/<task>/model.zip``),
the evaluation history and the steps whose task mean was logged, so that a resume skips finished tasks, reloads
the one in progress and neither loses nor repeats an evaluation. It is the trainers' one checkpoint envelope
(:func:`mtrl.checkpoint_io.save_envelope`: written atomically, read as plain data, a file of another trainer
refused in one line) around this content; the run-directory rule (:func:`mtrl.runstart.check_run_dir`) counts it
as the run's checkpoint. The plain-JSON ``checkpoints/state.json`` of earlier releases (same content) is still
read when a run has no ``state.pt``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.stl_metrics import EvalHistory
from mtrl.checkpoint_io import CheckpointError, load_envelope, save_envelope
from mtrl.runstart import TrainerKind

__all__ = ["LEGACY_STATE_FILE", "STATE_FILE", "STATE_FORMAT", "SavedState", "read_state", "write_state"]

#: Version of the state's content (inside the envelope; the key ``format`` of the older ``state.json``).
STATE_FORMAT = 1
#: Its name under the run's ``checkpoints/``, and that of earlier releases.
STATE_FILE, LEGACY_STATE_FILE = "state.pt", "state.json"


@dataclass(frozen=True)
class SavedState:
    """What the state file holds: the step of each task's checkpoint and the evaluation history."""

    #: ``{task: step}`` of the checkpoints on disk (0: the task has none).
    steps: dict[str, int]
    history: EvalHistory


def write_state(ckpt_dir: Path, kind: TrainerKind, saved_steps: Mapping[str, int], history: EvalHistory) -> Path:
    """Write ``ckpt_dir/state.pt`` atomically in ``kind``'s envelope: ``saved_steps`` (what the checkpoints on
    disk hold) and ``history`` (with the steps whose mean was logged). Returns its path."""
    state = {
        "format": STATE_FORMAT,
        "steps": dict(saved_steps),
        "history": history.by_task,
        "mean_logged": sorted(history.mean_logged),
    }
    return save_envelope(Path(ckpt_dir) / STATE_FILE, kind, state, step=min(saved_steps.values(), default=0))


def read_state(ckpt_dir: Path, tasks: Sequence[str], kind: TrainerKind) -> SavedState:
    """Read the run's state for its ``tasks``: ``state.pt`` (:func:`write_state`; through
    :func:`mtrl.checkpoint_io.load_envelope`), or the ``state.json`` of an earlier release where there is none.

    Raises:
        CheckpointError: ``state.pt`` is truncated or corrupt, untrusted, or another trainer's; ``state.json`` is
            not valid JSON (a write cut short); or either lacks a part or one of ``tasks`` (one line each).
    """
    path = Path(ckpt_dir) / STATE_FILE
    if path.is_file():
        state = load_envelope(path, kind)
    else:
        path = Path(ckpt_dir) / LEGACY_STATE_FILE
        try:
            state = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(
                f"{path} is not valid JSON ({err}): the write was cut short; delete the run directory, or "
                f"start a new run (another logdir= or run_name=)"
            ) from None
    try:
        steps = {t: int(state["steps"][t]) for t in tasks}
        return SavedState(steps, EvalHistory(tasks, state["history"], state["mean_logged"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path} does not describe this run's tasks {list(tasks)} (missing or malformed: {err}); resume it "
            f"with the tasks it was started with, or start a new run (another logdir= or run_name=)"
        ) from None
