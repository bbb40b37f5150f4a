"""scripts/vision_table.py and mtrl.vision.table: its runs are mtrl.jobs jobs (resumed only when a checkpoint exists)
and its table is mtrl.analysis's mean ± std over seeds of each run's results.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mtrl.vision import table as vision_table

ROOT = Path(__file__).resolve().parents[2]


def _results(single_task: str | None, seed: int) -> dict[str, object]:
    """The keys of a results.json that the table reads (values depending on the seed)."""
    selected = {"seg/miou": 0.1 + 0.1 * seed, "depth/abs_err": 2.0 + seed, "normal/within_11.25": 0.2}
    out: dict[str, object] = {"single_task": single_task, "selected": selected, "train_time_s": 10.0 + seed}
    if single_task is None:
        out["delta_m"] = {"metric_weighted": 5.0 + 2 * seed, "task_weighted": 3.0}
    return out


def test_the_table_is_the_mean_and_std_over_seeds_of_each_method(tmp_path: Path) -> None:
    for seed in (0, 1):
        for name, task in ((f"ew_s{seed}", None), (f"stl_seg_s{seed}", "seg")):
            (tmp_path / name).mkdir()
            (tmp_path / name / "results.json").write_text(json.dumps(_results(task, seed)))
    lines = vision_table.table(tmp_path, ["ew", "pcgrad"], [0, 1]).splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[2:]}
    assert set(rows) == {"STL seg", "ew"}  # methods and references without runs are left out
    header = lines[0].split(" | ")
    ew = dict(zip(header, rows["ew"], strict=True))
    std = float(np.std([5.0, 7.0], ddof=1))
    assert ew["seeds"] == "2" and ew["Δm% metric-w. ↓"] == f"6.00 ± {std:.2f} (n=2)"
    assert ew["seg/miou"] == f"15.00 ± {float(np.std([10.0, 20.0], ddof=1)):.2f} (n=2)"  # in %
    assert ew["depth/abs_err"].startswith("2.500 ± ")
    assert dict(zip(header, rows["STL seg"], strict=True))["Δm% task-w. ↓"] == "0.00 ± 0.00 (n=2)"  # the reference


def test_runs_are_jobs_that_resume_only_from_a_checkpoint(tmp_path: Path) -> None:
    preset = str(ROOT / "configs" / "vision" / "synthetic.yaml")
    job = vision_table.table_job(preset, tmp_path, "ew_s0", 0, ["optim.steps=2"])
    assert job.run_dir == tmp_path / "ew_s0" and "resume=true" not in job.argv()  # a fresh start
    assert job.resume_args == ("resume=true",)
