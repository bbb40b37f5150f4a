"""The Ray backend of the sweeps (mtrl.ray_jobs, scripts/sweep.py --ray-address) on a real local Ray
cluster that this module starts (this machine only, 2 CPUs): retries after a killed worker and after a failed
exit resume from the checkpoint, finished runs are skipped, a sweep whose worker was killed mid-run
ends with the same results.json files as an uninterrupted one, and Ctrl-C on the driver stops the running
run cleanly while no more runs start than the CPUs allow."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mtrl.jobs import Job
from mtrl.ray_jobs import RayOptions, ray_options, run_ray_jobs

ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]' (scripts/setup_env.sh installs it)")

ROOT = Path(__file__).resolve().parents[1]
# Toy runs of a few seconds that checkpoint every 50 of their 200 vector steps.
TOY = ["total_steps=200", "sac.warmup_steps=50", "sac.hidden_sizes=[32, 32]", "sac.batch_per_task=16",
       "eval_every=100", "eval_episodes=1", "checkpoint_every=50", "log_every=50", "progress=false"]  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A local Ray cluster with 2 CPUs, shut down after the module; yields its address. (Ray 2.60 on
    Linux replaces a loopback node address by the machine's own, so none is asked for.)"""
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()


def _stand_in(run_dir: Path, fail_first: bool = False, code: int = 0, first_code: int = 1) -> Job:
    """A real subprocess standing in for a trainer: records its argv and environment in results.json;
    ``fail_first``: the first attempt leaves a checkpoint and exits ``first_code``; ``code``: always exit with it."""
    script = (
        "import json, os, pathlib, sys; d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True); "
        f"first = {fail_first} and not (d / 'checkpoint.pt').exists(); (d / 'checkpoint.pt').write_text('x'); "
        f"code = {first_code} if first else {code}; sys.exit(code) if code else None; "
        "(d / 'results.json').write_text(json.dumps("
        "{'argv': sys.argv[2:], 'lease': os.environ['MTRL_LEASE_WAIT'], 'omp': os.environ['OMP_NUM_THREADS']}))"
    )
    return Job(run_dir.name, run_dir, (sys.executable, "-c", script, str(run_dir)), resume_args=("resume=true",))


def test_a_run_stopped_by_sigterm_with_its_checkpoint_is_retried_and_resumes(cluster: str, tmp_path: Path) -> None:
    """Exit 143 that the driver did not ask for (a preempted node's SIGTERM): the retry resumes the run."""
    log = io.StringIO()
    job = _stand_in(tmp_path / "pre", fail_first=True, first_code=143)
    [outcome] = run_ray_jobs([job], RayOptions(num_cpus=1, retries=1), stream=log)
    assert (outcome.returncode, outcome.attempts) == (0, 2) and not outcome.failed
    assert "pre: exit 143 on attempt 1 of 2: retrying (resumes from its checkpoint)" in log.getvalue()
    assert json.loads((tmp_path / "pre" / "results.json").read_text())["argv"] == ["resume=true"]


# Timing-dependent on a loaded 2-core machine: each failed once in about five runs of this module here (a Ray
# cancellation not delivered within 60 s; the driver's stop counted before a queued run was cancelled; an attempt
# that ended before the driver read its "started" report), so they run with the long checks (-m slow) until the
# races are found.
@pytest.mark.slow
def test_retries_resume_failed_runs_and_finished_runs_are_skipped(cluster: str, tmp_path: Path) -> None:
    done, flaky, broken = tmp_path / "done", tmp_path / "flaky", tmp_path / "broken"
    done.mkdir()
    (done / "results.json").write_text(json.dumps({"complete": True}))
    log = io.StringIO()
    jobs = [_stand_in(done), _stand_in(flaky, fail_first=True), _stand_in(broken, code=3)]
    outcomes = {o.job.name: o for o in run_ray_jobs(jobs, RayOptions(num_cpus=1, retries=1), stream=log)}
    text = log.getvalue()
    assert "1 of 3 runs already finished: skipped" in text and set(outcomes) == {"flaky", "broken"}
    # The flaky run failed once, after its checkpoint: the retry resumed from it and finished.
    assert (outcomes["flaky"].returncode, outcomes["flaky"].attempts) == (0, 2)
    assert "flaky: exit 1 on attempt 1 of 2: retrying (resumes from its checkpoint)" in text
    results = json.loads((flaky / "results.json").read_text())
    assert results == {"argv": ["resume=true"], "lease": "120", "omp": "1"}
    assert (flaky / "job.log").read_text().count("# ray attempt") == 2
    # The broken run exits 3 every time: one retry, then it is reported failed with its log.
    assert (outcomes["broken"].returncode, outcomes["broken"].attempts) == (3, 2)
    assert outcomes["broken"].error == "exit 3; exit 3"
    assert f"broken: FAILED after 2 attempts (exit 3; log {broken / 'job.log'})" in text
    assert re.search(r"\[0/2 done, \d running, 0 failed\] flaky: started on \S+ \(worker pid \d+, attempt 1\)", text)
    assert "[2/2 done, 0 running, 1 failed]" in text
    again = io.StringIO()  # a restarted driver: only the broken run is left
    assert [o.job.name for o in run_ray_jobs(jobs, RayOptions(retries=0), stream=again)] == ["broken"]
    assert "2 of 3 runs already finished: skipped" in again.getvalue()


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.05)


def _results(root: Path) -> dict[str, dict[str, Any]]:
    """Every run's results.json under ``root`` by run name, without ``run_dir`` (the only path or
    timing field: the two sweeps live under different roots)."""
    out = {}
    for path in sorted(root.glob("*/seed*/results.json")):
        results = json.loads(path.read_text())
        assert results.pop("run_dir") == str(path.parent)
        out[str(path.parent.relative_to(root))] = results
    return out


def test_a_sweep_whose_worker_is_killed_mid_run_ends_as_an_uninterrupted_one(cluster: str, tmp_path: Path) -> None:
    """Two toy runs through scripts/sweep.py: locally without interruption, then on the Ray cluster with
    the worker hosting one run SIGKILLed after the run's first checkpoint. The trainer dies with its
    worker, the retry resumes from the checkpoint, and every results.json matches the uninterrupted one."""
    sweep = [sys.executable, "scripts/sweep.py", "scripts/train.py", "configs/toy_sac.yaml", "--balancers", "ew",
             "--seeds", "0", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    local = tmp_path / "local"
    subprocess.run([*sweep, "--root", str(local), "--jobs", "2", *TOY], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip

    on_ray = tmp_path / "ray"
    driver = subprocess.Popen([*sweep, "--root", str(on_ray), "--ray-address", cluster, "--num-cpus", "1", *TOY],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        victim = on_ray / "ew" / "seed0"
        _wait_for(lambda: (victim / "checkpoints" / "last.txt").is_file(), 90, "first checkpoint")
        assert not (victim / "results.json").exists(), "the run ended before the kill: make TOY longer"
        header = (victim / "job.log").read_text()
        worker = int(re.search(r"worker pid (\d+)", header).group(1))  # type: ignore[union-attr]
        child = int(re.search(r"# child pid (\d+)", header).group(1))  # type: ignore[union-attr]
        os.kill(worker, signal.SIGKILL)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, err[-2000:]
    assert "ew/seed0: worker died on attempt 1 of 3: retrying (resumes from its checkpoint)" in err
    assert "[2/2 done, 0 running, 0 failed]" in err
    state = Path(f"/proc/{child}/stat")
    assert not state.exists() or state.read_text().split(") ")[1][0] in "ZX", "the trainer outlived its worker"
    log = (victim / "job.log").read_text()
    assert "# ray attempt 2" in log and log.split("# ray attempt 2")[1].splitlines()[1].endswith("resume=true")
    assert _results(on_ray) == _results(local) and len(_results(local)) == 2
    # A restarted driver finds nothing left to do.
    again = subprocess.run([*sweep, "--root", str(on_ray), "--ray-address", cluster, *TOY], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    assert "every run of the sweep has results.json already" in again.stdout


def test_ray_flags_are_checked() -> None:
    import argparse

    from mtrl.ray_jobs import add_ray_arguments
    from tests.helpers import load_script

    parser = argparse.ArgumentParser()
    add_ray_arguments(parser)
    assert ray_options(parser.parse_args([])) is None
    with pytest.raises(ValueError, match="--num-gpus applies to Ray runs: add --ray"):
        ray_options(parser.parse_args(["--num-gpus", "0.5"]))
    opts = ray_options(parser.parse_args(["--ray-address", "auto", "--num-gpus", "0.25", "--retries", "0"]))
    assert opts == RayOptions(address="auto", num_cpus=1.0, num_gpus=0.25, retries=0)
    for bad, message in ((["--num-gpus", "1.5"], "whole GPUs"), (["--num-cpus", "0"], "every run at once"),
                         (["--retries", "-1"], "give 0")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            ray_options(parser.parse_args(["--ray", *bad]))
    sweep = load_script("sweep")
    with pytest.raises(SystemExit):
        sweep.main(
            ["scripts/train.py", "configs/toy_sac.yaml", "--balancers", "ew", "--root", "x", "--ray", "--jobs", "2"]
        )


# Timing-dependent on a loaded 2-core machine: each failed once in about five runs of this module here (a Ray
# cancellation not delivered within 60 s; the driver's stop counted before a queued run was cancelled; an attempt
# that ended before the driver read its "started" report), so they run with the long checks (-m slow) until the
# races are found.
@pytest.mark.slow
def test_ctrl_c_on_the_driver_lets_the_running_run_save_and_cancels_the_queued_ones(
    cluster: str, tmp_path: Path
) -> None:
    """A real SIGINT to a driver connected to the cluster: the running stand-in trainer (each run asks
    for both CPUs, so one runs at a time) gets SIGINT through its task, checkpoints and exits 0; the
    queued runs never start; the driver says how to resume and ends with KeyboardInterrupt."""
    trainer = (
        "import pathlib, signal, sys, time; d = pathlib.Path(sys.argv[1]); "
        "stop = lambda *a: ((d / 'checkpoints').mkdir(exist_ok=True), (d / 'checkpoints' / 'last.txt').write_text('x'),"
        " sys.exit(0)); signal.signal(signal.SIGINT, stop); (d / 'started').write_text('1'); time.sleep(60)"
    )
    driver = (
        "import sys; from pathlib import Path; from mtrl.jobs import Job; from mtrl.ray_jobs import RayOptions, "
        f"run_ray_jobs; root = Path({str(tmp_path)!r}); jobs = [Job(f'j{{i}}', root / f'j{{i}}', (sys.executable, "
        f"'-c', {trainer!r}, str(root / f'j{{i}}'))) for i in range(3)]; "
        f"run_ray_jobs(jobs, RayOptions(address={cluster!r}, num_cpus=2))"
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)  # fmt: skip
    try:
        started = [tmp_path / f"j{i}" / "started" for i in range(3)]
        _wait_for(lambda: any(p.exists() for p in started), 60, "started run")
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "JobsInterrupted" in err  # mtrl.jobs' KeyboardInterrupt
    assert "interrupted: 1 running runs stopped and saved; 2 not started" in err
    assert "stopped before its end" in err
    assert sum((tmp_path / f"j{i}" / "checkpoints" / "last.txt").is_file() for i in range(3)) == 1
    assert sum(p.exists() for p in started) == 1


def test_a_configuration_error_is_not_retried(cluster: str, tmp_path: Path) -> None:
    log = io.StringIO()
    outcomes = run_ray_jobs([_stand_in(tmp_path / "bad", code=2)], RayOptions(retries=2), stream=log)
    assert [(o.returncode, o.attempts) for o in outcomes] == [(2, 1)]
    assert "exit 2 (a configuration error: not retried)" in log.getvalue()


# Timing-dependent on a loaded 2-core machine: each failed once in about five runs of this module here (a Ray
# cancellation not delivered within 60 s; the driver's stop counted before a queued run was cancelled; an attempt
# that ended before the driver read its "started" report), so they run with the long checks (-m slow) until the
# races are found.
@pytest.mark.slow
def test_a_task_cancelled_after_it_started_stops_its_trainer(cluster: str, tmp_path: Path) -> None:
    """Ray raises KeyboardInterrupt in a cancelled running task: the task must stop its child, which would
    otherwise go on running (in its own session, its worker alive) and keep the run directory."""
    from mtrl.ray_jobs import _attempt, _Board

    run_dir = tmp_path / "slow"
    job = Job("slow", run_dir, (sys.executable, "-c", "import time; time.sleep(120)"))
    board = ray.remote(num_cpus=0)(_Board).remote()
    ref = ray.remote(_attempt).options(num_cpus=1, max_retries=0).remote(job, os.getcwd(), "0.1", 1, board)
    deadline = time.time() + 60
    while "# child pid" not in ((run_dir / "job.log").read_text() if (run_dir / "job.log").exists() else ""):
        assert time.time() < deadline
        time.sleep(0.1)
    child = int(re.findall(r"# child pid (\d+)", (run_dir / "job.log").read_text())[0])
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=60)
    for _ in range(100):  # SIGINT ends the stand-in at once (a trainer would checkpoint first)
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the child {child} of the cancelled task is still running")
