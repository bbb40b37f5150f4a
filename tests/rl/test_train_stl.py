"""The single-task reference script: a real SB3 SAC on one Meta-World task, in train.py's layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[2]


def test_train_stl_logs_success_in_the_multi_task_layout(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts/train_stl.py"), "--tasks", "reach-v3", "--protocol", "mtrl-legacy",
           "--steps", "200", "--warmup", "100", "--eval-every", "100", "--eval-episodes", "1",
           "--logdir", str(tmp_path), "--run-name", "stl", "--device", "cpu"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    results = json.loads((tmp_path / "stl" / "results.json").read_text())
    assert results["tasks"] == ["reach-v3"] and results["protocol"] == "mtrl-legacy"
    assert set(results["reported"]) == {"best", "final"}
    acc = EventAccumulator(str(tmp_path / "stl"))
    acc.Reload()
    success = acc.Scalars("eval/success/reach-v3")
    assert [e.step for e in success] == [100, 200]
    assert all(0.0 <= e.value <= 1.0 for e in success)
    assert "eval/success_mean" in acc.Tags()["scalars"]
