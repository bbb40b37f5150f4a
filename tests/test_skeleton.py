"""The run skeleton (``mtrl.skeleton``): the start-up sequence's order, what a failing start leaves behind,
``results.json``; and the end-of-run report's table (``mtrl.report``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtrl.config import ConfigError
from mtrl.logger import Layout, Logger, PerTaskChart, custom_scalars_layout
from mtrl.report import end_of_run_report, task_table
from mtrl.rundir import LEASE_FILE, LeasedRun
from mtrl.runstart import RL, VISION
from mtrl.skeleton import start_run, write_results

LAYOUT = custom_scalars_layout((PerTaskChart("eval", "evaluation success", "eval/success/{task}"),), ["a", "b"])


class Run(LeasedRun):
    """A run that records the order of the skeleton's calls and what it saw of the run directory."""

    def __init__(self, run_dir: Path, resume: bool, fail_in: str = "") -> None:
        self.run_dir, self.fail_in = run_dir, fail_in
        self.calls: list[tuple[str, bool, bool]] = []
        self.logger = start_run(
            self, run_dir, RL, resume,
            check=self.check, build=self.build, restore=self.restore, config={"seed": 1},
            layout=self.layout, opened=self.opened,
        )  # fmt: skip

    def _step(self, name: str) -> None:
        self.calls.append((name, (self.run_dir / LEASE_FILE).is_file(), (self.run_dir / "config.yaml").is_file()))
        if name == self.fail_in:
            raise ConfigError(f"{name} failed")

    def check(self) -> list[str]:
        self._step("check")
        return ["found"]

    def build(self) -> None:
        self._step("build")

    def restore(self, found: list[str]) -> int:
        assert found == ["found"]
        self._step("restore")
        return 7

    def layout(self) -> Layout:
        self._step("layout")
        return LAYOUT

    def opened(self, logger: Logger) -> None:
        self._step("opened")


def test_a_fresh_start_checks_before_and_under_the_lease_then_builds_saves_the_config_and_opens_the_logs(
    tmp_path: Path,
) -> None:
    run = Run(tmp_path / "run", resume=False)
    # (step, lease held, config.yaml written): the check runs before the lease and again under it; no restore.
    assert run.calls == [
        ("check", False, False),
        ("check", True, False),
        ("build", True, False),
        ("layout", True, True),
        ("opened", True, True),
    ]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["trainer"] == "rl"
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
    run.logger.close()
    run.close()
    assert not (tmp_path / "run" / LEASE_FILE).exists()


def test_a_resume_restores_after_the_build_and_cuts_the_logs_at_the_restored_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = Run(run_dir, resume=False)
    first.logger.scalars({"x": 1.0}, 5)
    first.logger.scalars({"x": 2.0}, 9)  # after the step the resume restores (7): dropped
    first.logger.close()
    first.close()
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.txt").write_text("step_7.pt")
    resumed = Run(run_dir, resume=True)
    assert [name for name, _, _ in resumed.calls] == ["check", "check", "build", "restore", "layout", "opened"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [5]
    resumed.logger.close()
    resumed.close()


@pytest.mark.parametrize("fail_in", ["build", "restore"])
def test_a_start_that_fails_after_the_lease_gives_it_back_and_writes_no_config(fail_in: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    if fail_in == "restore":
        Run(run_dir, resume=False).close()
        (run_dir / "config.yaml").unlink()
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.txt").write_text("step_7.pt")
    with pytest.raises(ConfigError, match=f"{fail_in} failed"):
        Run(run_dir, resume=fail_in == "restore", fail_in=fail_in)
    assert not (run_dir / LEASE_FILE).exists() and not (run_dir / "config.yaml").exists()


def test_another_trainers_directory_is_refused_before_anything_runs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"trainer": VISION.name}))
    with pytest.raises(ConfigError, match=r"written by scripts/train_vision\.py"):
        Run(run_dir, resume=False)
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]


def test_results_are_written_as_json_by_the_lease_holder(tmp_path: Path) -> None:
    run = Run(tmp_path / "run", resume=False)
    path = write_results(run, run.run_dir, {"steps": 3, "summary": {"x": [1, 2]}})
    assert path == tmp_path / "run" / "results.json"
    assert json.loads(path.read_text()) == {"steps": 3, "summary": {"x": [1, 2]}}
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp.json")] == []  # no temporary left
    run.logger.close()
    run.close()


def test_the_report_table_aligns_text_left_and_numbers_right() -> None:
    lines = task_table(["task", "success", "return"], [["reach-v3", "1.00", "4,512"], ["push", "0.25", "7"]])
    assert lines == [
        "  task      success  return",
        "  reach-v3     1.00   4,512",
        "  push         0.25       7",
    ]
    report = end_of_run_report(["run: r"], ["task", "x"], [["a", "1"]], tail=["done"])
    assert report.splitlines() == ["run: r", "  task  x", "  a     1", "done"]
    assert end_of_run_report(["run: r"], ["task", "x"], []) == "run: r"
