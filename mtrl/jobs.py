"""Run many training runs as local parallel jobs, each in its own run directory, resumably.

A :class:`Job` is one training command (``scripts/train.py``, ``scripts/train_stl.py`` or
``scripts/train_vision.py``) that writes one run directory. :func:`pending_jobs` drops the jobs
whose run is finished and marks those that can be continued from a checkpoint; :func:`run_jobs`
runs the rest as ``jobs`` parallel subprocesses (each on one OpenMP thread unless told otherwise),
writes each job's output to ``<run_dir>/job.log`` and shows how many runs are done, running and
failed. Interrupting the driver loses at most the runs in flight since their last checkpoint:
started again, the same jobs skip what finished and resume what checkpointed. The same jobs run
on a Ray cluster with :func:`mtrl.ray_jobs.run_ray_jobs` (resources per run, retries).

A run is *finished* when its ``results.json`` exists and does not say ``"complete": false`` (the
RL trainers write that on Ctrl-C). It can be *resumed* when it left a checkpoint of its trainer
(:func:`mtrl.runstart.has_checkpoint`: ``checkpoints/last.txt`` or ``step_*.pt`` of ``scripts/train.py``,
``checkpoints/state.pt`` (``state.json``) of ``scripts/train_stl.py``, ``checkpoint.pt`` or ``checkpoint.prev.pt`` of
``scripts/train_vision.py``). A trainer stopped by SIGINT, SIGTERM or SIGHUP checkpoints and exits with status
130, 143 or 129 (:data:`mtrl.interrupt.RESUMABLE_EXITS`): such a job is *stopped*, not failed, and the next
invocation of the same jobs resumes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

from mtrl import runstart
from mtrl.config import ConfigError
from mtrl.interrupt import RESUMABLE_EXITS

__all__ = [
    "Job",
    "JobOutcome",
    "JobsInterrupted",
    "check_jobs",
    "has_checkpoint",
    "is_finished",
    "pending_jobs",
    "progress_line",
    "raise_interrupted",
    "run_jobs",
    "stopped_status",
    "unfinished_jobs",
]


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
    return runstart.has_checkpoint(Path(run_dir))


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
    """How one job ended: its return code, wall-clock seconds and log file; run locally (:func:`run_jobs`) also
    the CPU seconds its process used; with the Ray backend (:mod:`mtrl.ray_jobs`) how many attempts it took and why
    the failed ones failed."""

    job: Job
    returncode: int
    seconds: float
    log: Path
    attempts: int = 1
    error: str = ""
    #: User + system CPU seconds of the job's process (and of the processes it waited for), from the kernel's
    #: accounting at its exit (``os.wait4``); None where not measured (the Ray backend). On a machine with more
    #: runnable jobs than cores, or a paused job, ``seconds`` overstates the core time and this does not.
    cpu_seconds: float | None = None

    @property
    def stopped(self) -> bool:
        """The trainer was stopped by SIGINT/SIGTERM after checkpointing (exit 130/143): it resumes when the same
        jobs run again."""
        return self.returncode in RESUMABLE_EXITS

    @property
    def failed(self) -> bool:
        """The job failed (a non-zero exit other than a checkpointed stop)."""
        return self.returncode != 0 and not self.stopped


def pending_jobs(jobs: Sequence[Job]) -> list[Job]:
    """The jobs whose run is not finished, in the given order."""
    return [job for job in jobs if not is_finished(job.run_dir)]


def check_jobs(jobs: Sequence[Job], check: Callable[[Job], object]) -> None:
    """Call ``check`` on every job before any starts (e.g. load each job's configuration), so that a bad value
    stops the whole sweep with nothing launched; the first :class:`~mtrl.config.ConfigError` (or ``ValueError``)
    is raised again as a ``ConfigError`` naming the job."""
    for job in jobs:
        try:
            check(job)
        except ValueError as err:  # ConfigError is a ValueError
            raise ConfigError(f"run {job.name}: {err}") from err


def unfinished_jobs(jobs: Sequence[Job], out: TextIO) -> list[Job]:
    """:func:`pending_jobs`, saying on ``out`` how many runs were skipped as finished (both backends)."""
    todo = pending_jobs(jobs)
    skipped = len(jobs) - len(todo)
    if skipped:
        print(f"{skipped} of {len(jobs)} runs already finished: skipped", file=out, flush=True)
    return todo


def progress_line(done: int, total: int, running: int, failed: int, name: str, status: str) -> str:
    """One progress line of a job driver: ``[3/10 done, 2 running, 0 failed] ew/seed0: ok in 3m12s``."""
    return f"[{done}/{total} done, {running} running, {failed} failed] {name}: {status}"


class _Runner:
    """Starts jobs as child processes in their own sessions and forwards a stop to the running ones.

    The children do not share the driver's process group, so a terminal Ctrl-C reaches only the
    driver; :meth:`stop` (the driver's SIGINT handler) first marks the runner stopped, so that no
    job starts any more, then sends SIGINT to every running child (a trainer then saves and exits).
    """

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._children: set[subprocess.Popen[bytes]] = set()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._children)

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            children = list(self._children)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)

    def run(self, job: Job) -> JobOutcome | None:
        """Run ``job`` to its end; None if the runner was stopped before it started."""
        log = job.run_dir / "job.log"
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **job.env}
        start = time.perf_counter()
        with self._lock:  # checked under the lock: stop() either sees this child or nothing is started
            if self.stopped.is_set():
                return None
            job.run_dir.mkdir(parents=True, exist_ok=True)
            out = log.open("a")
            out.write(f"$ {' '.join(job.argv())}\n")
            out.flush()
            child = subprocess.Popen(job.argv(), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self._children.add(child)
        try:
            code, cpu = _wait_with_cpu(child)
        finally:
            out.close()
            with self._lock:
                self._children.discard(child)
        return JobOutcome(job, code, time.perf_counter() - start, log, cpu_seconds=cpu)


def _wait_with_cpu(child: subprocess.Popen[bytes]) -> tuple[int, float | None]:
    """Wait for ``child`` to exit: ``(returncode, cpu_seconds)``, the return code as ``Popen`` gives it (negative:
    killed by that signal) and its user + system CPU seconds from ``os.wait4`` (None where the platform has no
    ``wait4``, or where another caller reaped the child first: then ``Popen`` has its code)."""
    if hasattr(os, "wait4"):
        try:
            _, status, usage = os.wait4(child.pid, 0)
        except ChildProcessError:
            return child.wait(), None
        child.returncode = os.waitstatus_to_exitcode(status)
        return child.returncode, usage.ru_utime + usage.ru_stime
    return child.wait(), None


def run_jobs(
    jobs: Sequence[Job],
    parallel: int = 1,
    stream: TextIO | None = None,
    on_outcome: Callable[[JobOutcome], None] | None = None,
) -> list[JobOutcome]:
    """Run the unfinished ``jobs``, ``parallel`` at a time; returns their outcomes in finishing order, and hands
    each to ``on_outcome`` as soon as its job ends (so a caller's record survives a driver that dies later).

    Prints one line per ended job (``[done/total, running, failed] name: ok in 3m12s``) to ``stream``
    (default stderr); a failed job's line names its log, and a job that ended without finishing its
    run and without failing (a trainer stopped by SIGINT or SIGTERM saves a checkpoint and exits 130 or
    143) says it will resume. Ctrl-C (SIGINT to the driver, which handles it when called from the main thread) stops
    the driver: no new job starts, the running ones get a SIGINT, save their checkpoints and end, and
    then :class:`JobsInterrupted` (a ``KeyboardInterrupt`` holding the outcomes) is raised.
    """
    out = stream if stream is not None else sys.stderr
    todo = unfinished_jobs(jobs, out)
    outcomes: list[JobOutcome] = []
    runner = _Runner()

    def line(result: JobOutcome) -> str:
        failed = sum(o.failed for o in outcomes)
        minutes, seconds = divmod(int(result.seconds), 60)
        if result.failed:
            status = f"FAILED (exit {result.returncode}; log {result.log})"
        elif is_finished(result.job.run_dir):
            status = "ok"
        else:
            status = stopped_status(result.returncode)
        return progress_line(
            len(outcomes), len(todo), runner.running, failed, result.job.name, f"{status} in {minutes}m{seconds:02d}s"
        )

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: runner.stop())
    try:
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [pool.submit(runner.run, job) for job in todo]
            for future in as_completed(futures):
                result = future.result()
                if result is not None:
                    outcomes.append(result)
                    print(line(result), file=out, flush=True)
                    if on_outcome is not None:
                        on_outcome(result)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if runner.stopped.is_set():
        raise_interrupted(outcomes, len(todo), out)
    return outcomes


def stopped_status(returncode: int) -> str:
    """The progress status of a run that ended before its end without failing (both backends)."""
    how = f" (exit {returncode})" if returncode in RESUMABLE_EXITS else ""
    return f"stopped before its end{how} (checkpointed: it resumes when run again)"


class JobsInterrupted(KeyboardInterrupt):
    """The driver was stopped (Ctrl-C) — a ``KeyboardInterrupt`` that carries the :class:`JobOutcome` of every job
    that ended before the stop or because of it (:attr:`outcomes`), so that a caller can still account for them
    (``scripts/bench_pilot.py`` adds their seconds to its ledger)."""

    def __init__(self, outcomes: Sequence[JobOutcome]) -> None:
        super().__init__(f"stopped after {len(outcomes)} ended job(s)")
        self.outcomes = list(outcomes)


def raise_interrupted(outcomes: Sequence[JobOutcome], started_or_queued: int, out: TextIO) -> NoReturn:
    """After a stop (Ctrl-C): say how many running runs stopped and saved and how many never started, then
    raise :class:`JobsInterrupted` with ``outcomes`` (both backends, :func:`run_jobs` and
    :func:`mtrl.ray_jobs.run_ray_jobs`)."""
    stopped = [o for o in outcomes if not is_finished(o.job.run_dir)]
    print(
        f"interrupted: {len(stopped)} running runs stopped and saved; {started_or_queued - len(outcomes)} not "
        f"started. Run the same command again to resume.",
        file=out,
        flush=True,
    )
    raise JobsInterrupted(outcomes)
