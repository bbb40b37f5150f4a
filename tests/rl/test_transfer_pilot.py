"""The pilot driver's library (agents.transfer) and script (scripts/bench_pilot.py): the single-task runs are shared
and their commands are what scripts/train_stl.py accepts, the screen applies the pre-stated rule to finished runs,
the ledger adds up the runs' seconds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from agents.stl_config import load_stl_config
from agents.transfer import (
    BENCHMARK_METHODS,
    BENCHMARK_SEEDS,
    SETTINGS,
    SOLVED,
    STL,
    confirmation,
    core_hours,
    ew_run_dir,
    load_setting,
    method_overrides,
    power_line,
    record_outcomes,
    screen,
    screen_markdown,
    stl_jobs,
    stl_run_dir,
)
from mtrl.balancers.registry import BALANCERS
from mtrl.jobs import JobOutcome, is_finished
from tests.helpers import ROOT, load_script, run_script

ROOT_CONFIGS = ROOT / "configs" / "bench"
EVALS = (10_000, 20_000, 30_000, 40_000)  # the last three enter the score


def test_single_task_runs_are_shared_and_are_train_stl_commands(tmp_path: Path) -> None:
    settings = [load_setting(name) for name in SETTINGS]
    jobs = stl_jobs(tmp_path, settings, [0, 1])
    tasks = {t for s in settings for t in s.tasks}
    assert len(jobs) == 2 * len(tasks) == 12  # mix4 and mix4_small share all four tasks, mix6 adds two
    assert len({j.run_dir for j in jobs}) == len(jobs)
    for job in jobs:
        resolved = load_stl_config(job.command[2], job.command[3:])  # the command as train_stl.py reads it
        (task,) = resolved.tasks
        assert job.run_dir == stl_run_dir(tmp_path, settings[0] if task in settings[0].tasks else settings[2],
                                          task, resolved.cfg.seed)  # fmt: skip
        assert resolved.cfg.steps == resolved.buffer_capacity == 100_000  # nothing evicted: the run is setting-free
        assert resolved.eval_episodes == 20 and resolved.cfg.eval_every == 10_000
        assert resolved.sac.hidden_sizes == (256, 256) and resolved.sac.batch_per_task == 128
        assert resolved.protocol.name == "metaworld-v3"


def _write_stl(run_dir: Path, task: str, success: list[float]) -> None:
    """A finished train_stl.py run's results.json, as agents/stl.py writes its history."""
    run_dir.mkdir(parents=True)
    history = {task: [{"step": s, "success": v, "return": 100.0 * v} for s, v in zip(EVALS, success, strict=True)]}
    (run_dir / "results.json").write_text(json.dumps({"complete": True, "history": history}))


def _write_ew(run_dir: Path, success: dict[str, list[float]]) -> None:
    """A finished train.py run's results.json, as agents/trainer.py writes its evaluations."""
    run_dir.mkdir(parents=True)
    evals = [
        {"step": step, "success": {t: v[k] for t, v in success.items()}, "return": {t: 0.0 for t in success}}
        for k, step in enumerate(EVALS)
    ]
    (run_dir / "results.json").write_text(json.dumps({"complete": True, "evals": evals}))


def test_screen_applies_the_pre_stated_rule(tmp_path: Path) -> None:
    setting = load_setting("mix4")
    seeds = [0, 1, 2]
    for seed in seeds:
        for task in setting.tasks:
            low = task == "handle-press-v3" and seed == 0  # one seed below SOLVED: the median still passes
            _write_stl(stl_run_dir(tmp_path, setting, task, seed), task, [0.0, 0.5, 0.9, 0.3 if low else 1.0])
        _write_ew(ew_run_dir(tmp_path, setting, seed), {t: [0.0, 0.5, 0.6, 0.7] for t in setting.tasks})
    (row,) = screen(tmp_path, [setting], seeds)
    assert row.complete and row.qualifies
    np.testing.assert_allclose(row.stl[1], [2.4 / 3] * 4)  # mean of the last three evaluations: 0.5, 0.9, 1.0
    np.testing.assert_allclose(row.ew[0], [0.6] * 4)
    np.testing.assert_allclose(row.stl_task_median, [2.4 / 3] * 4)
    assert row.gap == pytest.approx(2.4 / 3 - 0.6)
    table = screen_markdown([row], seeds)
    assert "| mix4 | 4 | 0.60 / 0.74 | 0.60 / 0.80 | 0.60 / 0.80 | 0.60 | 0.80 | +0.20 | yes | 0.00 |" in table
    assert "- mix4: σ = 0.000 over 3 seeds: 2 seeds (α = 0.05), 2 (α = 0.05/9)" in table  # every ew seed scored 0.6


def test_screen_refuses_an_unlearned_task_a_missing_seed_and_no_gap(tmp_path: Path) -> None:
    setting = load_setting("mix4")
    for seed in (0, 1):
        for task in setting.tasks:
            last = 0.5 if task == "reach-v3" else 1.0  # reach-v3 not learned alone
            _write_stl(stl_run_dir(tmp_path, setting, task, seed), task, [0.0, last, last, last])
        _write_ew(ew_run_dir(tmp_path, setting, seed), {t: [0.0, 0.1, 0.1, 0.1] for t in setting.tasks})
    (row,) = screen(tmp_path, [setting], [0, 1])
    assert row.complete and not row.qualifies and row.stl_task_median[0] == 0.5 < SOLVED
    (row,) = screen(tmp_path, [setting], [0, 1, 2])  # seed 2 never ran
    assert not row.complete and not row.qualifies and sorted(row.ew) == [0, 1]
    assert "not finished" in screen_markdown([row], [0, 1, 2])
    other = tmp_path / "equal"
    for seed in (0, 1):
        for task in setting.tasks:
            _write_stl(stl_run_dir(other, setting, task, seed), task, [0.0, 1.0, 1.0, 1.0])
        _write_ew(ew_run_dir(other, setting, seed), {t: [0.0, 1.0, 1.0, 1.0] for t in setting.tasks})
    (row,) = screen(other, [setting], [0, 1])
    assert row.gap == 0.0 and not row.qualifies  # ew not below: no gap


def test_confirmation_on_finished_fresh_seeds(tmp_path: Path) -> None:
    setting = load_setting("mix4")
    rng = np.random.default_rng(0)
    seeds = list(range(100, 110))
    for seed in seeds:
        for task in setting.tasks:
            _write_stl(stl_run_dir(tmp_path, setting, task, seed), task, list(0.9 + 0.05 * rng.random(4)))
        _write_ew(ew_run_dir(tmp_path, setting, seed), {t: list(0.4 + 0.05 * rng.random(4)) for t in setting.tasks})
    result, n_stl, n_ew = confirmation(tmp_path, setting, seeds, reps=100)
    assert (n_stl, n_ew) == (10, 10) and result.confirmed and result.improvement.point == 1.0
    with pytest.raises(ValueError, match="no finished ew runs"):
        confirmation(tmp_path, setting, [200], reps=300)


def test_power_line_uses_the_sd_of_ew_seeds() -> None:
    ew = {0: np.array([0.5, 0.7]), 1: np.array([0.7, 0.9]), 2: np.array([0.6, 0.8])}  # run scores 0.6, 0.8, 0.7
    # σ = 0.1: 2 (1.960 + 0.842)^2 = 15.7 -> 16 seeds; 2 (2.773 + 0.842)^2 = 26.1 -> 27 seeds
    assert power_line(ew) == "σ = 0.100 over 3 seeds: 16 seeds (α = 0.05), 27 (α = 0.05/9)"
    assert power_line({0: ew[0]}).startswith("–")


def test_ledger_adds_every_attempt(tmp_path: Path) -> None:
    setting = load_setting("mix4")
    (job,) = stl_jobs(tmp_path, [setting], [0])[:1]
    record_outcomes(tmp_path, [JobOutcome(job, 130, 1800.0, job.run_dir / "job.log")])
    record_outcomes(tmp_path, [JobOutcome(job, 0, 1800.0, job.run_dir / "job.log", cpu_seconds=1700.0)])  # resumed
    assert core_hours(tmp_path, [job.run_dir]) == pytest.approx(1.0)
    lines = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert "cpu_seconds" not in lines[0] and lines[1]["cpu_seconds"] == 1700.0  # where measured
    assert core_hours(tmp_path, [stl_run_dir(tmp_path, setting, "reach-v3", 1)]) == 0.0
    assert not is_finished(job.run_dir)


def test_script_dry_run_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script("bench_pilot")
    assert script.main(["--dry-run", "--settings", "mix4", "mix4_small", "--seeds", "0", "--root", str(tmp_path)]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 2 + 4  # two ew runs, four single-task runs shared by both settings
    assert f"logdir={tmp_path}/mix4_small/ew run_name=seed0" in commands[-1]  # after mix4's runs
    assert sum(f"{STL}/100000_every10000_x20/" in c for c in commands) == 4
    record_outcomes(tmp_path, [JobOutcome(stl_jobs(tmp_path, [load_setting("mix4")], [0])[0], 130, 900.0,
                                          tmp_path / "job.log")])  # fmt: skip
    assert script.main(["--status", "--settings", "mix4", "--seeds", "0", "--root", str(tmp_path)]) == 0
    status = capsys.readouterr().out
    assert "| mix4/ew/seed0 | not started |  | 0.00 |" in status  # run dirs, not ambiguous names
    assert f"| {STL}/100000_every10000_x20/reach-v3/seed0 | not started |  | 0.25 |" in status  # its ledger hours
    assert status.rstrip().endswith("5 runs: 5 not started")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--confirm", "--settings", "mix4", "--seeds", "0", "100", "--report-only"])
    assert exit_info.value.code == 2 and "fresh seeds; [0]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--settings", "mix5", "--report-only"])
    assert "no setting 'mix5'" in capsys.readouterr().err
    (tmp_path / "noeval.yaml").write_text((ROOT_CONFIGS / "mix4.yaml").read_text().replace("eval_episodes: 20\n", ""))
    with pytest.raises(SystemExit):
        script.main(["--settings", "noeval", "--presets", str(tmp_path), "--report-only"])
    assert "states its eval_episodes" in capsys.readouterr().err


def test_benchmark_runs_every_method_with_its_published_hparams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--benchmark: one train.py run per method and fresh seed beside the confirmation's ew runs, sgsu last, and the
    hyper-parameters of each run are the class's ``metaworld_hparams`` (CAGrad c = 0.9, FAMO gamma = 0.01), read
    back through the script's own config check."""
    script = load_script("bench_pilot")
    assert script.main(["--benchmark", "--settings", "mix4", "--root", str(tmp_path), "--dry-run"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == len(BENCHMARK_METHODS) * len(BENCHMARK_SEEDS) == 45
    methods = [re.search(r" balancer=(\w+) ", c).group(1) for c in commands]  # type: ignore[union-attr]
    assert list(dict.fromkeys(methods)) == list(BENCHMARK_METHODS) and methods[-1] == "sgsu"
    assert "ew" not in methods  # the confirmation's ew runs are reused
    for command, method in zip(commands, methods, strict=True):
        assert f"logdir={tmp_path}/mix4/{method} " in command
        assert command.endswith(" ".join(method_overrides(method)) if BALANCERS[method].metaworld_hparams else "false")
    assert method_overrides("cagrad") == ["balancer_hparams={c: 0.9}"]
    assert method_overrides("famo") == ["balancer_hparams={gamma: 0.01}"]
    assert method_overrides("imtl") == []
    for argv, message in (
        (["--benchmark", "--settings", "mix4", "mix4_small"], "--benchmark takes one setting"),
        (["--benchmark", "--settings", "mix4", "--seeds", "2", "100"], "--benchmark needs fresh seeds; [2]"),
        (["--benchmark", "--settings", "mix4", "--methods", "ew", "nope"], "unknown balancer 'nope'"),
        (["--benchmark", "--confirm", "--settings", "mix4"], "separate steps"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            script.main([*argv, "--root", str(tmp_path), "--dry-run"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_script_runs_a_tiny_pilot_and_screens_the_real_results(tmp_path: Path) -> None:
    """bench_pilot.py end to end on a 2-task preset of 30 steps (3 evaluations of one episode): the ew run through
    scripts/train.py and the two single-task runs through scripts/train_stl.py finish, the screen reads their real
    results.json files, the ledger has their seconds, and a second call skips them all (~2-3 min here)."""
    presets = tmp_path / "presets"
    presets.mkdir()
    text = (ROOT_CONFIGS / "mix4.yaml").read_text()
    text = text.replace(
        "tasks: [reach-v3, drawer-close-v3, window-close-v3, handle-press-v3]", "tasks: [reach-v3, drawer-close-v3]"
    )
    for key, value in (("total_steps", 30), ("eval_every", 10), ("eval_episodes", 1), ("checkpoint_every", 10),
                       ("warmup_steps", 20), ("batch_per_task", 8), ("log_every", 10)):  # fmt: skip
        text = re.sub(rf"^(\s*{key}): .*$", rf"\g<1>: {value}", text, flags=re.M)
    (presets / "tiny.yaml").write_text(text)
    root = tmp_path / "runs"
    proc = run_script("bench_pilot", "--settings", "tiny", "--presets", str(presets), "--seeds", "0",
                      "--root", str(root), "--jobs", "2", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    setting = load_setting("tiny", presets)
    assert is_finished(ew_run_dir(root, setting, 0))
    assert all(is_finished(stl_run_dir(root, setting, t, 0)) for t in setting.tasks)
    (row,) = screen(root, [setting], [0])
    assert row.complete and sorted(row.ew) == sorted(row.stl) == [0] and row.ew[0].shape == (2,)
    assert row.core_hours > 0 and "| tiny | 2 |" in proc.stdout
    again = run_script("bench_pilot", "--settings", "tiny", "--presets", str(presets), "--seeds", "0",
                       "--root", str(root), timeout=300)  # fmt: skip
    assert again.returncode == 0 and "3 of 3 runs already finished: skipped" in again.stderr
