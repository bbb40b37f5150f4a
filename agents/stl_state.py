"""``checkpoints/state.json`` of a single-task reference run (:mod:`agents.stl`): what its checkpoints hold.

The file records the step of each task's checkpoint on disk (``checkpoints/<task>/model.zip``), the evaluation
history and the steps whose task mean was logged, so that a resume skips finished tasks, reloads the one in
progress and neither loses nor repeats an evaluation. It is plain JSON (nothing in it is executed), written
atomically; the run-directory rule (:func:`mtrl.runstart.check_run_dir`) counts it as the run's checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.stl_metrics import EvalHistory
from mtrl.atomic import write_json

__all__ = ["STATE_FILE", "STATE_FORMAT", "SavedState", "read_state", "write_state"]

#: Version of ``checkpoints/state.json``.
STATE_FORMAT = 1
#: Its name under the run's ``checkpoints/``.
STATE_FILE = "state.json"


@dataclass(frozen=True)
class SavedState:
    """What ``state.json`` holds: the step of each task's checkpoint and the evaluation history."""

    #: ``{task: step}`` of the checkpoints on disk (0: the task has none).
    steps: dict[str, int]
    history: EvalHistory


def write_state(path: Path, saved_steps: Mapping[str, int], history: EvalHistory) -> None:
    """Write ``state.json`` at ``path`` atomically: ``saved_steps`` (what the checkpoints on disk hold) and
    ``history`` (with the steps whose mean was logged)."""
    state = {
        "format": STATE_FORMAT,
        "steps": dict(saved_steps),
        "history": history.by_task,
        "mean_logged": sorted(history.mean_logged),
    }
    write_json(path, state)


def read_state(path: Path, tasks: Sequence[str]) -> SavedState:
    """Read a :func:`write_state` file for the run's ``tasks``."""
    state = json.loads(Path(path).read_text())
    steps = {t: int(state["steps"][t]) for t in tasks}
    return SavedState(steps, EvalHistory(tasks, state["history"], state["mean_logged"]))
