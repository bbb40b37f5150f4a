"""Aggregation of run directories: grouping, mean/std/CI over seeds, curves, and sweep planning."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtrl.analysis import find_runs, learning_curves, markdown_table, summarize

ROOT = Path(__file__).resolve().parents[1]


def _write_run(path: Path, balancer: str, seed: int, final: float, curve: list[float]) -> None:
    path.mkdir(parents=True)
    nested = balancer.startswith("vision:")  # the vision config nests the balancer as {name, hparams}
    name = balancer.removeprefix("vision:")
    cfg = {"balancer": {"name": name, "hparams": {}} if nested else name, "seed": seed}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "results.json").write_text(json.dumps({"eval": {"success_mean": {"final": final}}, "flag": True}))
    rows = [json.dumps({"step": 10 * (i + 1), "eval/success_mean": v}) for i, v in enumerate(curve)]
    (path / "metrics.jsonl").write_text("\n".join(rows) + "\n")


def test_summary_over_seeds(tmp_path: Path) -> None:
    for seed, final in enumerate([0.2, 0.4, 0.6]):
        _write_run(tmp_path / "ew" / f"seed{seed}", "ew", seed, final, [0.1, final])
    _write_run(tmp_path / "pcgrad" / "seed0", "vision:pcgrad", 0, 0.9, [0.5, 0.9])
    records = find_runs(tmp_path)
    assert sorted(r.group for r in records) == ["ew", "ew", "ew", "pcgrad"]
    summary = summarize(records, ["eval/success_mean/final"])
    ew = summary["ew"]["eval/success_mean/final"]
    assert ew.n == 3 and ew.mean == pytest.approx(0.4) and ew.std == pytest.approx(0.2)
    assert ew.ci == pytest.approx(4.302652729911275 * 0.2 / math.sqrt(3))  # t_{0.975, 2}
    assert math.isnan(summary["pcgrad"]["eval/success_mean/final"].ci)
    table = markdown_table(summary, ["eval/success_mean/final"])
    assert "| ew | 0.400 ± 0.200 (n=3) |" in table
    steps, mean, half = learning_curves(records, "eval/success_mean")["ew"]
    np.testing.assert_array_equal(steps, [10, 20])
    np.testing.assert_allclose(mean, [0.1, 0.4])
    assert half[0] == pytest.approx(0.0, abs=1e-12) and half[1] > 0.1


def test_one_loader_keeps_the_files_as_read_and_names_every_run_it_leaves_out(tmp_path: Path) -> None:
    """find_runs is the one loader of the statistics and the sweep report: a record holds results.json and
    config.yaml as read and the numeric results flattened; a caller's rule refuses runs with a note, as the
    loader's own rules do (crashed, unfinished)."""
    _write_run(tmp_path / "ew" / "seed0", "ew", 0, 0.5, [0.5])
    _write_run(tmp_path / "ew" / "seed1", "ew", 1, 0.7, [0.7])
    _write_run(tmp_path / "ew" / "seed2", "ew", 2, 0.1, [0.1])
    (tmp_path / "ew" / "seed2" / "results.json").write_text(json.dumps({"complete": False}))
    (tmp_path / "ew" / "seed3").mkdir()
    (tmp_path / "ew" / "seed3" / "config.yaml").write_text("balancer: ew\nseed: 3\n")  # crashed: no results.json
    skipped: list[str] = []
    records = find_runs(tmp_path, skipped=skipped, reject=lambda r: "too low" if r.seed == 0 else None)
    assert [(r.group, r.seed) for r in records] == [("ew", 1)]
    (run,) = records
    assert run.results == {"eval": {"success_mean": {"final": 0.7}}, "flag": True}  # as read
    assert run.config == {"balancer": "ew", "seed": 1}
    assert run.values == {"eval/success_mean/final": 0.7}  # numeric leaves only (no bool)
    assert skipped[0].startswith(f"{tmp_path / 'ew' / 'seed3'}: no results.json")
    assert skipped[1:] == ["too low", f'{tmp_path / "ew" / "seed2"}: unfinished ("complete": false); resume it to '
                           "include it"]  # fmt: skip
    # Without a skipped list the unfinished run is kept (and the rule still applies).
    assert [r.seed for r in find_runs(tmp_path, reject=lambda r: "too low" if r.seed == 0 else None)] == [1, 2]


def test_aggregate_script_prints_table_and_plots(tmp_path: Path) -> None:
    for seed in range(2):
        _write_run(tmp_path / "ew" / f"seed{seed}", "ew", seed, 0.5 + seed / 10, [0.1, 0.5])
    png = tmp_path / "curves.png"
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/aggregate.py"), str(tmp_path), "--metrics", "--curve",
         "eval/success_mean", "--plot", str(png)],
        capture_output=True, text=True, check=True,
    )
    assert "| run | eval/success_mean/final |" in out.stdout  # every result key: "flag" is a bool, "seed" config
    assert "| ew | 0.550 ± 0.071 (n=2) |" in out.stdout
    assert png.stat().st_size > 1000


def test_sweep_skips_finished_runs_and_resumes_started_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from sweep import run_commands

    _write_run(tmp_path / "ew" / "seed0", "ew", 0, 0.5, [0.5])
    (tmp_path / "ew" / "seed1").mkdir(parents=True)
    (tmp_path / "ew" / "seed1" / "config.yaml").write_text("seed: 1\n")
    (tmp_path / "ew" / "seed1" / "checkpoints").mkdir()
    (tmp_path / "ew" / "seed1" / "checkpoints" / "last.txt").write_text("step_000000010.pt\n")
    # seed2 crashed before its first checkpoint: config.yaml only, so it starts again (no resume=true).
    (tmp_path / "ew" / "seed2").mkdir(parents=True)
    (tmp_path / "ew" / "seed2" / "config.yaml").write_text("seed: 2\n")
    cmds = run_commands(tmp_path, "scripts/train.py", "configs/toy_sac.yaml", ["ew"], [0, 1, 2], ["total_steps=5"])
    assert len(cmds) == 2
    assert cmds[0][-1] == "resume=true" and "seed=1" in cmds[0]
    assert "resume=true" not in cmds[1] and cmds[1][-1] == "total_steps=5"
    assert f"logdir={tmp_path / 'ew'}" in cmds[1] and "run_name=seed2" in cmds[1]
    vision = run_commands(tmp_path, "scripts/train_vision.py", "configs/vision/synthetic.yaml", ["pcgrad"], [0], [])
    assert "balancer.name=pcgrad" in vision[0] and "resume=true" not in vision[0]
    (tmp_path / "pcgrad" / "seed0").mkdir(parents=True)
    (tmp_path / "pcgrad" / "seed0" / "checkpoint.pt").write_bytes(b"")
    vision = run_commands(tmp_path, "scripts/train_vision.py", "configs/vision/synthetic.yaml", ["pcgrad"], [0], [])
    assert vision[0][-1] == "resume=true"


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_runs(tmp_path / "nope")


def test_real_sweep_then_aggregate_on_the_toy_suite(tmp_path: Path) -> None:
    """Two balancers through scripts/sweep.py (real toy training runs), then scripts/aggregate.py."""
    sweep = [sys.executable, str(ROOT / "scripts/sweep.py"), "scripts/train.py", "configs/toy_sac.yaml",
             "--balancers", "ew", "pcgrad", "--seeds", "0", "--root", str(tmp_path),
             "total_steps=40", "sac.warmup_steps=20", "eval_every=20", "eval_episodes=1", "progress=false"]  # fmt: skip
    subprocess.run(sweep, cwd=ROOT, check=True, capture_output=True, text=True)
    records = find_runs(tmp_path)
    assert sorted(r.group for r in records) == ["ew", "pcgrad"]
    assert all(r.results["steps"] == 40 and 0.0 <= r.values["summary/reported/final"] <= 1.0 for r in records)
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/aggregate.py"), str(tmp_path), "--metrics", "summary/reported/final"],
        check=True, capture_output=True, text=True,
    )
    assert "| ew |" in out.stdout and "| pcgrad |" in out.stdout
    report = subprocess.run([sys.executable, str(ROOT / "scripts/aggregate.py"), str(tmp_path), "--reps", "200"],
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    assert "Protocol `toy`: headline = the `final` evaluation" in report and "| ew | 1 |" in report
    rows = report[report.index("| | ew | pcgrad |") :].split("\n\n")[0].splitlines()[2:]
    tasks = [f"reach-{i}" for i in range(4)]
    assert [r.split(" | ")[0].strip("| ") for r in rows] == ["final success (reported)", *tasks]
    # A finished sweep is not run again.
    again = subprocess.run(sweep, cwd=ROOT, check=True, capture_output=True, text=True)
    assert "every run of the sweep has results.json already" in again.stdout
