"""Resumable local jobs (mtrl.jobs), rliable statistics (mtrl.analysis) and the A/B harness's planning,
reading, report and acceptance rule (agents.learning_ab) on hand-written run directories."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from agents.learning_ab import SB3_SIDE, ABSettings, acceptance, collect, plan_jobs, plot, report
from mtrl.analysis import RunRecord, area_under_curve, curve_estimates, interval_estimates, task_scores, task_table
from mtrl.jobs import Job, has_checkpoint, is_finished, pending_jobs, run_jobs

pytest.importorskip("rliable")


# --- jobs ------------------------------------------------------------------------------------------
def _writer_job(run_dir: Path, complete: bool = True, code: int = 0) -> Job:
    """A real subprocess that writes ``results.json`` and records its argv (a stand-in training script)."""
    script = (
        "import json, pathlib, sys; d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True); "
        f"(d / 'results.json').write_text(json.dumps({{'complete': {complete}, 'argv': sys.argv[2:]}})); "
        f"sys.exit({code})"
    )
    return Job(run_dir.name, run_dir, (sys.executable, "-c", script, str(run_dir)), resume_args=("resume=true",))


def test_jobs_skip_finished_resume_checkpointed_and_report_failures(tmp_path: Path) -> None:
    done, started, fresh, broken = (tmp_path / n for n in ("done", "started", "fresh", "broken"))
    done.mkdir()
    (done / "results.json").write_text(json.dumps({"complete": True}))
    (started / "checkpoints").mkdir(parents=True)
    (started / "checkpoints" / "last.txt").write_text("step_000000010.pt\n")
    (started / "results.json").write_text(json.dumps({"complete": False}))  # Ctrl-C'd: not finished
    assert is_finished(done) and not is_finished(started) and has_checkpoint(started) and not has_checkpoint(fresh)
    jobs = [_writer_job(done), _writer_job(started), _writer_job(fresh), _writer_job(broken, code=3)]
    assert [j.run_dir for j in pending_jobs(jobs)] == [started, fresh, broken]
    log = io.StringIO()
    handed: list[str] = []  # on_outcome gets each outcome as its job ends, in the same order
    outcomes = run_jobs(jobs, parallel=2, stream=log, on_outcome=lambda o: handed.append(o.job.name))
    assert sorted(o.job.name for o in outcomes) == ["broken", "fresh", "started"]
    assert handed == [o.job.name for o in outcomes]
    assert json.loads((started / "results.json").read_text())["argv"] == ["resume=true"]
    assert json.loads((fresh / "results.json").read_text())["argv"] == []
    text = log.getvalue()
    assert "1 of 4 runs already finished: skipped" in text
    assert "broken: FAILED (exit 3; log" in text and "[3/3 done" in text
    assert (fresh / "job.log").read_text().startswith("$ ")
    assert [o.returncode for o in run_jobs(jobs, stream=io.StringIO())] == []  # all finished now


def test_ctrl_c_stops_the_driver_lets_running_jobs_save_and_starts_nothing_new(tmp_path: Path) -> None:
    """A real SIGINT to the driver's process group: the running job (a stand-in trainer) checkpoints and
    exits 0, the queued ones never start, and the driver says how to resume."""
    import os
    import signal
    import subprocess
    import time

    trainer = (
        "import pathlib, signal, sys, time; d = pathlib.Path(sys.argv[1]); "
        "stop = lambda *a: ((d / 'checkpoints').mkdir(exist_ok=True), (d / 'checkpoints' / 'last.txt').write_text('x'),"
        " sys.exit(0)); signal.signal(signal.SIGINT, stop); (d / 'started').write_text('1'); time.sleep(60)"
    )
    driver = (
        "import sys; from pathlib import Path; from mtrl.jobs import Job, run_jobs; "
        f"jobs = [Job(f'j{{i}}', Path({str(tmp_path)!r}) / f'j{{i}}', (sys.executable, '-c', {trainer!r}, "
        f"str(Path({str(tmp_path)!r}) / f'j{{i}}'))) for i in range(3)]\n"
        "try:\n    run_jobs(jobs, parallel=1)\n"
        "except KeyboardInterrupt as stop:\n    print('ended:', [o.job.name for o in stop.outcomes], file=sys.stderr)\n"
        "    raise\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1], start_new_session=True)  # fmt: skip
    deadline = time.time() + 60
    while not (tmp_path / "j0" / "started").exists() and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "JobsInterrupted" in err  # a KeyboardInterrupt holding the outcomes
    assert "interrupted: 1 running runs stopped and saved; 2 not started" in err
    assert "ended: ['j0']" in err  # the stopped job's outcome reaches the caller (bench_pilot.py's ledger)
    assert (tmp_path / "j0" / "checkpoints" / "last.txt").is_file()
    assert not (tmp_path / "j1").exists() and not (tmp_path / "j2").exists()


def test_a_local_job_reports_its_cpu_seconds_apart_from_its_wall_seconds(tmp_path: Path) -> None:
    """A real subprocess that computes for about 0.6 s of CPU and then sleeps 1 s: its outcome's CPU seconds count
    the work, not the sleep (the wall seconds count both); one killed by a signal gives Popen's negative code."""
    busy = "import time; end = time.process_time() + 0.6\nwhile time.process_time() < end:\n    pass\ntime.sleep(1.0)"
    job = Job("busy", tmp_path / "busy", (sys.executable, "-c", busy))
    killed = Job("killed", tmp_path / "killed", (sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 9)"))
    outcomes = {o.job.name: o for o in run_jobs([job, killed], parallel=1, stream=io.StringIO())}
    busy_out = outcomes["busy"]
    assert busy_out.returncode == 0 and busy_out.cpu_seconds is not None
    assert 0.6 <= busy_out.cpu_seconds < busy_out.seconds - 0.8  # the second of sleep is wall time only
    assert outcomes["killed"].returncode == -9 and outcomes["killed"].failed


def test_job_status_reads_where_each_run_stands_without_writing(tmp_path: Path) -> None:
    """Finished, running (a real lease held by this process), stopped with a checkpoint, started, not started; the
    last logged step skips a line still being written; the table counts them and writes nothing."""
    from mtrl.job_status import job_status, last_logged_step, status_table
    from mtrl.lease import RunLease

    names = ("done", "live", "stopped", "started", "never")
    jobs = {n: _writer_job(tmp_path / n) for n in names}
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "results.json").write_text(json.dumps({"complete": True}))
    (tmp_path / "stopped" / "checkpoints").mkdir(parents=True)
    (tmp_path / "stopped" / "checkpoints" / "last.txt").write_text("step_000000010.pt\n")
    (tmp_path / "stopped" / "results.json").write_text(json.dumps({"complete": False}))
    (tmp_path / "started").mkdir()
    lines = [{"hparams": {"a": 1}}, *({"step": s, "train/loss": 0.5} for s in (0, 1000, 2000))]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"step": 3000, "tra'  # a line being written
    (tmp_path / "stopped" / "metrics.jsonl").write_text(text)
    assert last_logged_step(tmp_path / "stopped") == 2000 and last_logged_step(tmp_path / "never") is None
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with RunLease(tmp_path / "live"):
        got = {n: job_status(j) for n, j in jobs.items()}
    assert {n: s.state for n, s in got.items()} == {
        "done": "finished", "live": "running", "stopped": "stopped", "started": "started", "never": "not started"
    }  # fmt: skip
    assert got["stopped"].step == 2000 and got["never"].step is None
    table = status_table(list(got.values()), {tmp_path / "stopped": 1.5}, root=tmp_path)
    assert "| stopped | stopped | 2,000 | 1.50 |" in table and "| never | not started |  | 0.00 |" in table
    assert table.endswith("5 runs: 1 finished, 1 running, 1 stopped, 1 started, 1 not started")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if p.parts[0] != "live"] == before  # job_status wrote nothing (the lease made live/)


# --- rliable statistics ----------------------------------------------------------------------------
def test_interval_estimates_match_the_definitions_and_are_reproducible() -> None:
    rng = np.random.default_rng(0)
    scores = {"a": rng.random((6, 3)), "b": rng.random((6, 3)) + 1.0}
    names = ("iqm", "mean", "median", "optimality_gap")
    est = interval_estimates(scores, names, reps=50, seed=3)
    for group, m in scores.items():
        assert est[group]["iqm"].point == pytest.approx(stats.trim_mean(m.ravel(), 0.25))
        assert est[group]["mean"].point == pytest.approx(m.mean())
        assert est[group]["median"].point == pytest.approx(np.median(m.mean(axis=0)))  # of per-task means
        assert est[group]["optimality_gap"].point == pytest.approx(np.mean(1.0 - np.minimum(m, 1.0)))
        for x in est[group].values():
            assert x.low <= x.point <= x.high
    assert est == interval_estimates(scores, names, reps=50, seed=3)
    assert est["a"]["iqm"].high < est["b"]["iqm"].low  # a clear difference is resolved
    const = interval_estimates({"c": np.full((4, 2), 0.5)}, ("iqm",), reps=50)["c"]["iqm"]
    assert (const.low, const.point, const.high) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        interval_estimates({"a": np.array([[np.nan, 1.0]])})
    with pytest.raises(ValueError, match="valid choices: iqm, mean, median, optimality_gap"):
        interval_estimates(scores, ("max",))


def test_curves_and_area_under_the_curve() -> None:
    rtp = np.stack([np.full((3, 2), v) for v in (0.0, 0.5, 1.0)], axis=-1)  # (runs, tasks, points)
    np.testing.assert_allclose(area_under_curve(rtp), 0.5)
    curve = curve_estimates({"g": rtp}, "mean", reps=50)["g"]
    assert [c.point for c in curve] == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="runs, tasks, points"):
        area_under_curve(rtp[:, :, 0])


def test_task_scores_and_table_from_run_records(tmp_path: Path) -> None:
    records = [
        RunRecord(tmp_path / f"{g}{s}", g, s, {f"summary/final/success/{t}": v + s / 10 for t, v in tasks.items()})
        for g, tasks in (("none", {"reach-v3": 0.5, "push-v3": 0.0}), ("one_hot", {"reach-v3": 0.2, "push-v3": 0.1}))
        for s in range(3)
    ]
    scores = task_scores(records)
    names, matrix = scores["none"]
    assert names == ["push-v3", "reach-v3"] and matrix.shape == (3, 2)
    np.testing.assert_allclose(matrix[:, 1], [0.5, 0.6, 0.7])
    table = task_table(scores, reps=50)
    assert "| none | 3 |" in table and "| reach-v3 | 0.60 | 0.30 |" in table
    bad = [*records, RunRecord(tmp_path / "x", "none", 9, {"summary/final/success/reach-v3": 1.0})]
    with pytest.raises(ValueError, match="reports tasks"):
        task_scores(bad)


# --- the A/B harness --------------------------------------------------------------------------------
def _settings(tmp_path: Path, **kw: object) -> ABSettings:
    base: dict[str, object] = {"tasks": ("reach-v3", "push-v3"), "seeds": (0, 1, 2), "steps": 20, "eval_every": 10,
                               "eval_episodes": 1, "root": tmp_path}  # fmt: skip
    return ABSettings(**{**base, **kw})  # type: ignore[arg-type]


def _fake_runs(s: ABSettings, side: str, level: float) -> None:
    for seed in s.seeds:
        for j, task in enumerate(s.tasks):
            run_dir = s.run_dir(side, task, seed)
            run_dir.mkdir(parents=True)
            points = [(step, level * step / s.steps + 0.01 * seed + 0.1 * j) for step in s.checkpoints]
            if side == SB3_SIDE:  # train_stl.py's layout: per-task histories
                hist = {task: [{"step": st, "success": v, "return": 1000 * v} for st, v in points]}
                results = {"complete": True, "history": hist}
            else:  # train.py's layout
                evals = [{"step": st, "success": {task: v}, "return": {task: 1000 * v}} for st, v in points]
                results = {"complete": True, "evals": evals}
            (run_dir / "results.json").write_text(json.dumps(results))


def test_ab_plan_reads_both_layouts_and_applies_the_acceptance_rule(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    jobs = plan_jobs(s)
    assert len(jobs) == 12 and [j.name for j in jobs[:2]] == ["mtrl/reach-v3/s0", "sb3/reach-v3/s0"]
    ours, ref = jobs[0].command, jobs[1].command
    assert "env.benchmark=MT1" in ours and "env.tasks=[reach-v3]" in ours and "total_steps=20" in ours
    assert ref[ref.index("--tasks") + 1] == "reach-v3" and ref[ref.index("--preset") + 1] == str(s.preset)
    assert jobs[0].resume_args == ("resume=true",) and jobs[1].resume_args == ("--resume",)
    assert len(plan_jobs(s, ["ours"])) == 6
    with pytest.raises(ValueError, match="multiple of eval_every"):
        _settings(tmp_path, steps=25)

    _fake_runs(s, SB3_SIDE, 0.5)
    _fake_runs(s, "mtrl", 0.5)  # the same scores: every check passes
    data = collect(s)
    assert data.scores["mtrl"]["success"].shape == (3, 2, 2) and not data.missing
    np.testing.assert_allclose(data.scores["mtrl"]["return"], 1000 * data.scores[SB3_SIDE]["success"])
    assert all(passed for _, passed, _ in acceptance(data, reps=50))
    text = report(data, reps=50)
    assert "| mtrl | IQM |" in text and "| reach-v3 | sb3 |" in text and "- PASS success final" in text
    assert plot(data, tmp_path / "ab.png", reps=50).stat().st_size > 10_000

    worse = _settings(tmp_path, ours="worse")
    _fake_runs(worse, "worse", 0.1)  # clearly below the reference
    checks = {name: passed for name, passed, _ in acceptance(collect(worse), reps=50)}
    assert checks == {"success final": False, "success AUC": False, "return final": False, "return AUC": False}
    (worse.run_dir("worse", "push-v3", 2) / "results.json").unlink()
    partial = collect(worse)
    assert "worse" not in partial.scores and partial.missing == [worse.run_dir("worse", "push-v3", 2)]
    assert "1 runs not finished" in report(partial, reps=50)


def test_sweep_varies_a_config_key_into_its_own_run_directories(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from sweep import parse_vary, sweep_jobs

    vary = parse_vary(["sac.task_input=one_hot,none"])
    jobs = sweep_jobs(tmp_path, "scripts/train.py", "configs/toy_sac.yaml", ["ew"], [0, 1], [], vary)
    assert [j.name for j in jobs] == ["ew/task_input=one_hot/seed0", "ew/task_input=one_hot/seed1",
                                      "ew/task_input=none/seed0", "ew/task_input=none/seed1"]  # fmt: skip
    assert "sac.task_input=none" in jobs[2].command and jobs[2].run_dir == tmp_path / "ew/task_input=none/seed0"
    with pytest.raises(ValueError, match="expected KEY=V1,V2"):
        parse_vary(["sac.task_input"])
    assert yaml.safe_load("[a, b]") == ["a", "b"]  # the override parser reads lists the same way


def test_compare_tasks_lines_up_a_multi_task_run_with_the_single_task_reference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers import load_script

    s = _settings(tmp_path, seeds=(0,))
    _fake_runs(s, SB3_SIDE, 0.5)
    mt = tmp_path / "mt"
    mt.mkdir()
    evals = [{"step": st, "success": {"reach-v3": 0.2 * k, "push-v3": 0.1 * k},
              "return": {"reach-v3": 1.0, "push-v3": 2.0}} for k, st in enumerate((10, 20), start=1)]  # fmt: skip
    (mt / "results.json").write_text(json.dumps({"complete": False, "evals": evals}))
    stl = s.run_dir(SB3_SIDE, "reach-v3", 0)
    png = tmp_path / "cmp.png"
    assert load_script("compare_tasks").main([str(mt), str(stl), "--labels", "MT", "STL", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| reach-v3 | MT | 0.20 | 0.40 |" in out and "| reach-v3 | STL | 0.25 | 0.50 |" in out
    assert "| mean | MT | 0.20 | 0.40 |" in out and png.stat().st_size > 5_000  # shared task only: reach-v3
