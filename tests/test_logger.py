"""TensorBoard and JSON-lines writers, read back with tensorboard's own reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtrl.logger import JsonlWriter, Logger, TensorBoardWriter, flatten_hparams


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
