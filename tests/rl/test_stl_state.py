"""The single-task reference's state file (``agents.stl_state``): the checkpoint envelope, the ``state.json`` of
earlier releases still read, another trainer's file refused, and the run-directory rule counting both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.stl_metrics import EvalHistory
from agents.stl_state import LEGACY_STATE_FILE, STATE_FILE, read_state, write_state
from mtrl.checkpoint_io import CheckpointError, load_envelope, save_envelope
from mtrl.runstart import RL, STL, STL_FLAGS, check_run_dir, has_checkpoint

TASKS = ["reach-v3", "push-v3"]


def _history() -> EvalHistory:
    history = EvalHistory(TASKS)
    history.add("reach-v3", 100, 1.0, 512.5)
    history.add("push-v3", 100, 0.5, 20.25)
    assert history.mean_to_log(100) == 0.75
    history.add("reach-v3", 200, 0.0, 3.0)  # push-v3 not evaluated at 200 yet: no mean
    return history


def test_the_state_round_trips_through_the_envelope(tmp_path: Path) -> None:
    path = write_state(tmp_path, STL, {"reach-v3": 200, "push-v3": 100}, _history())
    assert path == tmp_path / STATE_FILE
    saved = read_state(tmp_path, TASKS, STL)
    assert saved.steps == {"reach-v3": 200, "push-v3": 100}
    assert saved.history.by_task == _history().by_task and saved.history.mean_logged == {100}
    assert saved.history.evals() == [{"step": 100, "success_mean": 0.75, "success": {"reach-v3": 1.0, "push-v3": 0.5}}]
    assert read_state(tmp_path, TASKS, STL_FLAGS).steps == saved.steps  # the deprecated --flag form: same trainer
    assert load_envelope(path, STL)["format"] == 1


def test_an_earlier_releases_state_json_is_still_read(tmp_path: Path) -> None:
    history = _history()
    legacy = {"format": 1, "steps": {"reach-v3": 200, "push-v3": 100}, "history": history.by_task, "mean_logged": [100]}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / LEGACY_STATE_FILE).write_text(json.dumps(legacy, indent=2))
    assert has_checkpoint(tmp_path, STL)
    check_run_dir(tmp_path, STL, resume=True)  # a resume finds it
    saved = read_state(tmp_path / "checkpoints", TASKS, STL)
    assert saved.steps == legacy["steps"] and saved.history.by_task == history.by_task
    # the next save writes the envelope, which is read from then on
    write_state(tmp_path / "checkpoints", STL, {"reach-v3": 300, "push-v3": 300}, saved.history)
    assert read_state(tmp_path / "checkpoints", TASKS, STL).steps == {"reach-v3": 300, "push-v3": 300}


def test_another_trainers_file_or_a_damaged_one_is_refused_in_one_line(tmp_path: Path) -> None:
    save_envelope(tmp_path / STATE_FILE, RL, {"steps": {}}, step=0)
    with pytest.raises(CheckpointError) as err:
        read_state(tmp_path, TASKS, STL)
    assert "scripts/train.py" in str(err.value) and "\n" not in str(err.value)
    write_state(tmp_path, STL, {"reach-v3": 1, "push-v3": 1}, EvalHistory(TASKS))
    (tmp_path / STATE_FILE).write_bytes((tmp_path / STATE_FILE).read_bytes()[:40])
    with pytest.raises(CheckpointError, match=STATE_FILE):
        read_state(tmp_path, TASKS, STL)


def test_a_torn_or_foreign_state_json_is_refused_in_one_line(tmp_path: Path) -> None:
    legacy = {"format": 1, "steps": {"reach-v3": 200, "push-v3": 100}, "history": {}, "mean_logged": []}
    text = json.dumps(legacy)
    (tmp_path / LEGACY_STATE_FILE).write_text(text[: len(text) // 2])  # a write cut short
    with pytest.raises(CheckpointError, match="not valid JSON") as err:
        read_state(tmp_path, TASKS, STL)
    assert "\n" not in str(err.value)
    (tmp_path / LEGACY_STATE_FILE).write_text(json.dumps({**legacy, "steps": {"reach-v3": 200}}))  # other tasks
    with pytest.raises(CheckpointError, match="push-v3") as err:
        read_state(tmp_path, TASKS, STL)
    assert "\n" not in str(err.value)
