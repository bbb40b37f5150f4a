"""Run many training runs as local parallel jobs, each in its own run directory, resumably.

A :class:`Job` is one training command (``scripts/train.py``, ``scripts/train_stl.py`` or
``scripts/train_vision.py``) that writes one run directory. :func:`pending_jobs` drops the jobs
whose run is finished and marks those that can be continued from a checkpoint; :func:`run_jobs`
runs the rest as ``jobs`` parallel subprocesses (each on one OpenMP thread unless told otherwise),
writes each job's output to ``<run_dir>/job.log`` and shows how many runs are done, running and
failed. Interrupting the driver loses at most the runs in flight since their last checkpoint:
started again, the same jobs skip what finished and resume what checkpointed.

A run is *finished* when its ``results.json`` exists and does not say ``"complete": false`` (the
RL trainers write that on Ctrl-C). It can be *resumed* when it left a checkpoint:
``checkpoints/last.txt`` (``scripts/train.py``), ``checkpoints/state.json`` (``scripts/train_stl.py``)
or ``checkpoint.pt`` (``scripts/train_vision.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

__all__ = ["Job", "JobOutcome", "has_checkpoint", "is_finished", "pending_jobs", "run_jobs"]

_CHECKPOINT_MARKERS = (Path("checkpoints") / "last.txt", Path("checkpoints") / "state.json", Path("checkpoint.pt"))


def is_finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` ran to its end (``results.json`` without ``"complete": false``)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("complete", True) is not False
    except (json.JSONDecodeError, AttributeError):
        return False  # a torn write: run it again (it resumes from its checkpoint)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint that its trainer's resume option can continue."""
    return any((Path(run_dir) / marker).is_file() for marker in _CHECKPOINT_MARKERS)


@dataclass(frozen=True)
class Job:
    """One training run.

    Attributes:
        name: short label for progress lines (e.g. ``"sb3/reach-v3/s0"``).
        run_dir: the directory the command writes.
        command: the full command of a fresh start.
        resume_args: appended to ``command`` when the run left a checkpoint (``["resume=true"]`` for
            ``train.py``, ``["--resume"]`` for ``train_stl.py``).
        env: extra environment variables (default: ``OMP_NUM_THREADS=1`` unless already set here).
    """

    name: str
    run_dir: Path
    command: tuple[str, ...]
    resume_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        """The command to run now: with ``resume_args`` if a checkpoint exists."""
        return [*self.command, *(self.resume_args if has_checkpoint(self.run_dir) else ())]


@dataclass(frozen=True)
class JobOutcome:
    """How one job ended: its return code, seconds and log file."""

    job: Job
    returncode: int
    seconds: float
    log: Path


def pending_jobs(jobs: Sequence[Job]) -> list[Job]:
    """The jobs whose run is not finished, in the given order."""
    return [job for job in jobs if not is_finished(job.run_dir)]


def _run_one(job: Job) -> JobOutcome:
    job.run_dir.mkdir(parents=True, exist_ok=True)
    log = job.run_dir / "job.log"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **job.env}
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ {' '.join(job.argv())}\n")
        out.flush()
        code = subprocess.run(job.argv(), stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
    return JobOutcome(job, code, time.perf_counter() - start, log)


def run_jobs(jobs: Sequence[Job], parallel: int = 1, stream: TextIO | None = None) -> list[JobOutcome]:
    """Run the unfinished ``jobs``, ``parallel`` at a time; returns their outcomes in finishing order.

    Prints one line per ended job (``[done/total, running, failed] name: ok in 3m12s``) to ``stream``
    (default stderr); a failed job's line names its log, and a job that exited cleanly without
    finishing its run (a trainer stopped by Ctrl-C saves a checkpoint and exits 0) says it will
    resume. Ctrl-C stops the driver: no new job starts, the running ones receive the same SIGINT (one
    process group), save their checkpoints and end, and ``KeyboardInterrupt`` is raised once they have.
    """
    out = stream if stream is not None else sys.stderr
    todo = pending_jobs(jobs)
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"{skipped} of {len(jobs)} runs already finished: skipped", file=out, flush=True)
    outcomes: list[JobOutcome] = []
    lock = threading.Lock()
    running = 0

    def start(job: Job) -> JobOutcome:
        nonlocal running
        with lock:
            running += 1
        try:
            return _run_one(job)
        finally:
            with lock:
                running -= 1

    def line(result: JobOutcome) -> str:
        failed = sum(o.returncode != 0 for o in outcomes)
        minutes, seconds = divmod(int(result.seconds), 60)
        if result.returncode != 0:
            status = f"FAILED (exit {result.returncode}; log {result.log})"
        elif is_finished(result.job.run_dir):
            status = "ok"
        else:
            status = "stopped before its end (checkpointed: it resumes when run again)"
        with lock:
            now_running = running
        return (
            f"[{len(outcomes)}/{len(todo)} done, {now_running} running, {failed} failed] "
            f"{result.job.name}: {status} in {minutes}m{seconds:02d}s"
        )

    pool = ThreadPoolExecutor(max_workers=max(1, parallel))
    futures = [pool.submit(start, job) for job in todo]
    try:
        for future in as_completed(futures):
            outcomes.append(future.result())
            print(line(outcomes[-1]), file=out, flush=True)
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)  # the running jobs got the SIGINT too: let them save
        ended = [f.result() for f in futures if f.done() and not f.cancelled() and f.result() not in outcomes]
        outcomes.extend(ended)
        print(
            f"interrupted: {len(ended)} running runs stopped and saved; {sum(f.cancelled() for f in futures)} "
            f"not started. Run the same command again to resume.",
            file=out,
            flush=True,
        )
        raise
    pool.shutdown(wait=True)
    return outcomes
