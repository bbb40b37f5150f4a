"""TensorBoard and JSON-lines writers, read back with tensorboard's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtrl.logger import JsonlWriter, Logger, TensorBoardWriter, flatten_hparams, truncate_jsonl


def test_scalars_images_and_jsonl_are_written(tmp_path: Path) -> None:
    logger = Logger([TensorBoardWriter(tmp_path), JsonlWriter(tmp_path / "metrics.jsonl")])
    logger.scalars({"train/loss": 1.5, "perf/sps": float("nan")}, step=3)
    logger.image("vis/panel", np.zeros((4, 5, 3), dtype=np.uint8), step=3)
    logger.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == [1.5]
    assert "perf/sps" not in acc.Tags()["scalars"]
    assert "vis/panel" in acc.Tags()["images"]
    assert logger.dropped_non_finite == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 3, "train/loss": 1.5}]


def test_flatten_hparams() -> None:
    assert flatten_hparams({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": "[1, 2]", "d": "None"}


def test_purge_step_hides_stale_events_of_an_interrupted_run(tmp_path: Path) -> None:
    """A resumed run reopens the directory with purge_step = checkpoint step + 1: TensorBoard's reader
    drops what the interrupted process logged after the checkpoint, keeps the rest, and sees the new values."""
    first = TensorBoardWriter(tmp_path)
    for step in range(1, 6):
        first.scalars({"train/loss": float(step)}, step)  # checkpoint at 3, crash after 5
    first.close()
    resumed = TensorBoardWriter(tmp_path, purge_step=4)
    for step in range(4, 7):
        resumed.scalars({"train/loss": 10.0 * step}, step)
    resumed.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)
    ]  # fmt: skip


def test_hparams_go_into_the_writers_own_event_file(tmp_path: Path) -> None:
    writer = TensorBoardWriter(tmp_path)
    writer.hparams({"balancer": "ew", "seed": 0}, {"hparam/success": float("nan")})
    writer.scalars({"hparam/success": 0.5}, 10)
    writer.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # add_hparams would have made a sub-run
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.PluginTagToContent("hparams")) == {"_hparams_/experiment", "_hparams_/session_start_info"}
    assert [e.value for e in acc.Scalars("hparam/success")] == [0.5]


def test_truncate_jsonl_keeps_rows_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"hparams": {"a": 1}}, {"step": 1, "x": 1.0}, {"step": 3, "x": 3.0}, {"step": 4, "x": 4.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "x"')  # last line cut by a crash
    truncate_jsonl(path, 3)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[1:3]
    truncate_jsonl(path, None)
    assert not path.exists()
    truncate_jsonl(path, 3)  # a missing file is fine
