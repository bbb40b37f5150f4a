"""Run :class:`mtrl.jobs.Job` descriptions as Ray tasks on a cluster, with resources and retries.

The same jobs that :func:`mtrl.jobs.run_jobs` runs as local subprocesses run here as one Ray task
each (:func:`run_ray_jobs`): the task asks for ``num_cpus``/``num_gpus`` (fractions allowed, so
several small runs can share a GPU), runs the job's command as a child process on whichever node
Ray chose, with its output appended to ``<run_dir>/job.log``, and returns its exit status.

Fault tolerance. A run whose process exits non-zero (except 2, a configuration error, which would
fail the same way again), or whose Ray worker or node dies, is submitted again, up to ``retries`` more
times; :meth:`Job.argv <mtrl.jobs.Job.argv>` is evaluated on the
worker at the start of every attempt, so a retry continues from the run's last checkpoint. Run
directories must therefore live on storage that every node sees (the sweep's ``--root``). Retries
are driven by this driver, not by Ray's own ``max_retries``, so that each one is reported. A trainer stopped
by SIGTERM or SIGINT that did not come from this driver (a preempted node, a scheduler's time limit) checkpoints
and exits 143 or 130: its retry resumes it; stopped by this driver, it counts as stopped, not failed.

* The child process is started with ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux): it dies with the
  worker that started it, so a killed worker leaves no orphaned trainer writing into the run
  directory while its retry starts. It also gets SIGINT unblocked and at its default (a Ray worker
  blocks and ignores it), so that the trainer can be stopped cleanly.
* Every attempt gets ``MTRL_LEASE_WAIT`` (:attr:`RayOptions.lease_wait` seconds) in its environment:
  a retry whose earlier attempt still holds the run directory's single-writer lease waits for it
  instead of failing.
* The command runs in the driver's working directory, with the driver's interpreter where the job
  says so (the sweep's jobs start ``sys.executable``): every node needs the checkout and its
  virtual environment at the same paths, for example on the same shared storage as the runs.
* A finished run is skipped (:func:`mtrl.jobs.pending_jobs`), so a restarted driver continues where
  the last one stopped.

Ctrl-C on the driver: queued runs are cancelled, and the driver writes :data:`STOP_FILE` into the
directory of every running run; its task, which looks for the file every second, sends SIGINT to its
trainer, which saves a checkpoint and exits; the driver waits for them and raises
``KeyboardInterrupt``. (A file rather than a Ray call: a task blocked in ``ray.get``/``ray.wait`` lends
its CPUs and GPUs to other tasks, so a task polling the driver through Ray would let more runs start than
the resources allow.) A run that had started before the driver saw it is cancelled like a queued one:
Ray raises ``KeyboardInterrupt`` in its task, which stops its trainer the same way (SIGINT, then SIGKILL
after two minutes) before it ends, so no trainer is left running on its own. A
second Ctrl-C cancels the tasks by force: their workers are killed, the trainers with them (no
checkpoint; they resume from their previous one). If the driver process itself dies, Ray ends its
tasks the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from mtrl.interrupt import RESUMABLE_EXITS, install_stop_handler
from mtrl.jobs import (
    Job,
    JobOutcome,
    has_checkpoint,
    is_finished,
    progress_line,
    raise_interrupted,
    stopped_status,
    unfinished_jobs,
)

if TYPE_CHECKING:
    import ray

__all__ = ["RayOptions", "add_ray_arguments", "connect", "ray_options", "run_ray_jobs"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_POLL_S = 1.0  # how often a task looks for a stop request and the driver for started tasks
_STOP_GRACE_S = 120.0  # how long a cancelled task waits for its trainer's checkpoint before killing it
#: Exit statuses that are not retried: 2, a configuration error (the same command fails the same way).
#: A busy run directory (:data:`mtrl.rundir.EXIT_BUSY`) is retried: the lease frees when its holder ends.
_NOT_RETRIED = frozenset({2})
STOP_FILE = "job.stop"  # written into a running run's directory by a stopping driver
_NEEDS_RAY = "running on Ray needs Ray: pip install -e '.[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and how the jobs run on Ray.

    Attributes:
        address: the cluster to join (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``); None starts
            a local Ray instance on this machine.
        num_cpus: CPUs each run asks for (fractions allowed); its trainer gets ``OMP_NUM_THREADS`` =
            ``max(1, int(num_cpus))`` unless the job's ``env`` says otherwise.
        num_gpus: GPUs each run asks for: a fraction below 1 lets several runs share one GPU (Ray
            sets ``CUDA_VISIBLE_DEVICES``; memory is not partitioned), above 1 a whole number.
        retries: how many times a run that failed (non-zero exit, dead worker or node) is started
            again; each retry resumes from the run's checkpoint.
        lease_wait: seconds a retry waits for the run directory's lease (``MTRL_LEASE_WAIT``).
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    retries: int = 2
    lease_wait: float = 120.0

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError(f"--num-cpus {self.num_cpus} / --num-gpus {self.num_gpus}: give values >= 0")
        if self.num_cpus == 0 and self.num_gpus == 0:
            raise ValueError("--num-cpus 0 with --num-gpus 0 would start every run at once: give one of them > 0")
        if self.num_gpus > 1 and not float(self.num_gpus).is_integer():
            raise ValueError(f"--num-gpus {self.num_gpus}: above 1 a run takes whole GPUs (e.g. 2), below 1 a share")
        if self.retries < 0:
            raise ValueError(f"--retries {self.retries}: give 0 (no retry) or more")
        if self.lease_wait < 0:
            raise ValueError(f"lease_wait {self.lease_wait}: give seconds >= 0")


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--ray``, ``--ray-address``, ``--num-cpus``, ``--num-gpus`` and ``--retries`` to ``parser``."""
    group = parser.add_argument_group("Ray (pip install -e '.[ray]')")
    group.add_argument("--ray", action="store_true", help="run every run as a Ray task on a local Ray instance")
    group.add_argument(
        "--ray-address",
        default=None,
        help="run on the Ray cluster at this address ('auto': the cluster `ray start` set up on this node); "
        "run directories (--root) must be on storage every node sees",
    )
    group.add_argument("--num-cpus", type=float, default=None, help="CPUs per run on Ray (default 1)")
    group.add_argument("--num-gpus", type=float, default=None, help="GPUs per run on Ray, e.g. 0.25 (default 0)")
    group.add_argument(
        "--retries", type=int, default=None, help="on Ray: restarts of a failed run, from its checkpoint (default 2)"
    )


def ray_options(args: argparse.Namespace) -> RayOptions | None:
    """The :class:`RayOptions` that :func:`add_ray_arguments`' flags ask for; None without ``--ray`` or
    ``--ray-address`` (local runs). Raises ValueError for a Ray-only flag without Ray or a bad value."""
    given = [flag for flag, value in (("--num-cpus", args.num_cpus), ("--num-gpus", args.num_gpus),
                                      ("--retries", args.retries)) if value is not None]  # fmt: skip
    if not (args.ray or args.ray_address):
        if given:
            verb = "apply" if len(given) > 1 else "applies"
            raise ValueError(f"{', '.join(given)} {verb} to Ray runs: add --ray (local Ray) or --ray-address ADDRESS")
        return None
    defaults = RayOptions()
    return RayOptions(
        address=args.ray_address,
        num_cpus=defaults.num_cpus if args.num_cpus is None else args.num_cpus,
        num_gpus=defaults.num_gpus if args.num_gpus is None else args.num_gpus,
        retries=defaults.retries if args.retries is None else args.retries,
    )


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address``, or start a local instance when None; nothing when this
    process is already connected."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(_NEEDS_RAY) from err
    if not ray.is_initialized():
        ray.init(address=address)


def _libc() -> Any:
    """The C library with ``prctl`` and ``signal`` ready to call; loaded in the parent, because
    ``dlopen`` in a child forked from a multi-threaded Ray worker could hang before ``exec``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    return libc


def _prepare_child(libc: Any, parent: int) -> None:
    """In the child, before exec: SIGKILL when the parent (the Ray worker) dies (tied to the thread
    that forked, which for a Ray task is the worker's main thread) — and at once if it died before
    ``prctl`` ran — and SIGINT and SIGTERM delivered and handled as usual: a Ray worker blocks and ignores
    SIGINT, and a child would inherit both, so the trainer would never see the driver's stop. Only
    async-signal-safe calls on objects made in the parent."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    libc.signal(signal.SIGINT, None)  # SIG_DFL; exec keeps an ignored signal ignored (C: any thread may fork)
    libc.signal(signal.SIGTERM, None)  # the trainer's other clean stop (mtrl.interrupt.STOP_SIGNALS)


class _Board:
    """Where tasks report that they started (a zero-CPU Ray actor the driver reads)."""

    def __init__(self) -> None:
        self._started: list[tuple[str, str, int]] = []

    def start(self, key: str, host: str, pid: int) -> None:
        """Record that attempt ``key`` started on ``host`` in worker ``pid``."""
        self._started.append((key, host, pid))

    def started(self, since: int) -> list[tuple[str, str, int]]:
        """The ``(key, host, pid)`` of the attempts started after the first ``since``."""
        return self._started[since:]


def _attempt(job: Job, cwd: str, key: str, attempt: int, board: Any) -> int:
    """One attempt at ``job`` on a Ray worker: run its command in ``cwd`` (the driver's working
    directory; resuming if the run left a checkpoint) with output appended to ``job.log``, send the
    trainer SIGINT once the driver writes :data:`STOP_FILE` into the run directory; returns the exit
    status.

    The task makes no blocking Ray call (``ray.get``/``ray.wait``): Ray lends a blocked task's CPUs and
    GPUs to other tasks, which would start more runs than the resources allow."""
    host, pid = socket.gethostname(), os.getpid()
    if not Path(cwd).is_dir():
        raise FileNotFoundError(
            f"the driver's working directory {cwd} does not exist on {host}: "
            "put the checkout at the same path on every node (shared storage)"
        )
    job.run_dir.mkdir(parents=True, exist_ok=True)
    stop_file = job.run_dir / STOP_FILE
    stop_file.unlink(missing_ok=True)  # left by an attempt that died
    board.start.remote(key, host, pid)  # not waited for (see above)
    argv = job.argv()
    env = {**os.environ, **job.env}
    try:
        with (job.run_dir / "job.log").open("a") as out:
            out.write(f"# ray attempt {attempt} on {host}, worker pid {pid}\n$ {' '.join(argv)}\n")
            out.flush()
            prepare = functools.partial(_prepare_child, _libc(), pid)
            child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True, preexec_fn=prepare)  # fmt: skip
            out.write(f"# child pid {child.pid}\n")
            out.flush()
            stopped = False
            try:
                while True:
                    try:
                        return child.wait(timeout=_POLL_S)
                    except subprocess.TimeoutExpired:
                        if not stopped and stop_file.exists():
                            stopped = True  # the trainer saves a checkpoint and exits 130
                            with contextlib.suppress(ProcessLookupError):
                                child.send_signal(signal.SIGINT)
            except BaseException:  # the task was cancelled (Ray raises KeyboardInterrupt in it) or failed
                _stop_child(child)  # never leave the trainer running (and holding its run directory) alone
                raise
    finally:
        stop_file.unlink(missing_ok=True)


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGINT the trainer (it saves a checkpoint and exits 130), SIGKILL it if it is not gone in
    :data:`_STOP_GRACE_S` seconds."""
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@dataclass
class _Run:
    """The driver's record of one job: its attempts so far and when its first attempt started."""

    job: Job
    attempt: int = 0
    started: float | None = None
    reasons: list[str] = field(default_factory=list)


def _for_ray(job: Job, options: RayOptions) -> Job:
    """``job`` with an absolute run directory (tasks run elsewhere) and the environment of its
    attempts: ``OMP_NUM_THREADS`` from ``num_cpus`` and ``MTRL_LEASE_WAIT``, unless ``job.env`` sets them."""
    threads = str(max(1, int(options.num_cpus)))
    env = {"OMP_NUM_THREADS": threads, "MTRL_LEASE_WAIT": f"{options.lease_wait:g}", **job.env}
    return replace(job, run_dir=job.run_dir.absolute(), env=env)


def run_ray_jobs(
    jobs: Sequence[Job],
    options: RayOptions | None = None,
    stream: TextIO | None = None,
    on_outcome: Callable[[JobOutcome], None] | None = None,
) -> list[JobOutcome]:
    """Run the unfinished ``jobs`` as Ray tasks (connecting with :func:`connect` if needed); returns
    their outcomes in finishing order and hands each to ``on_outcome`` as its run ends, like
    :func:`mtrl.jobs.run_jobs`.

    Prints to ``stream`` (default stderr) a line per started attempt (host, worker pid, run directory),
    per retry (why) and per ended run, each led by ``[done/total done, running, failed]``. A run that
    still fails after ``options.retries`` retries is an outcome with its last exit status (-1 when its
    worker or node died) and the reasons in ``error``. Ctrl-C: see the module docstring.
    """
    try:
        import ray
    except ImportError as err:
        raise ImportError(_NEEDS_RAY) from err

    opts = options if options is not None else RayOptions()
    out = stream if stream is not None else sys.stderr
    todo = unfinished_jobs(jobs, out)
    if not todo:
        return []
    connect(opts.address)
    board: Any = ray.remote(num_cpus=0)(_Board).remote()  # Any: mypy types its methods without .remote
    task = ray.remote(_attempt).options(num_cpus=opts.num_cpus, num_gpus=opts.num_gpus, max_retries=0)
    runs = [_Run(_for_ray(job, opts)) for job in todo]
    cwd = os.getcwd()
    pending: dict[ray.ObjectRef[Any], tuple[int, str]] = {}  # task → (run index, attempt key)
    keys: set[str] = set()  # the attempts in ``pending``
    running: set[str] = set()  # the attempts seen started
    seen = 0  # how many starts the board reported so far
    told: set[str] = set()  # running attempts asked to stop (their STOP_FILE written)
    cancelled: set[str] = set()  # queued attempts cancelled by a stop
    outcomes: list[JobOutcome] = []
    stop = threading.Event()

    def submit(i: int) -> None:
        runs[i].attempt += 1
        key = f"{i}.{runs[i].attempt}"
        pending[task.remote(runs[i].job, cwd, key, runs[i].attempt, board)] = (i, key)
        keys.add(key)

    def say(name: str, text: str) -> None:
        failed = sum(o.failed for o in outcomes)
        print(progress_line(len(outcomes), len(todo), len(running), failed, name, text), file=out, flush=True)

    def finish(i: int, code: int) -> None:
        run = runs[i]
        seconds = time.monotonic() - run.started if run.started is not None else 0.0
        log = run.job.run_dir / "job.log"
        outcome = JobOutcome(run.job, code, seconds, log, attempts=run.attempt, error="; ".join(run.reasons))
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
        minutes, secs = divmod(int(seconds), 60)
        if code != 0 and code not in RESUMABLE_EXITS:
            tries = f"{run.attempt} attempt{'s' if run.attempt != 1 else ''}"
            status = f"FAILED after {tries} ({run.reasons[-1]}; log {log})"
        elif is_finished(run.job.run_dir):
            status = f"ok ({run.job.run_dir})"
        else:
            status = f"{stopped_status(code)} ({run.job.run_dir})"
        say(run.job.name, f"{status} in {minutes}m{secs:02d}s")

    def ended(ref: ray.ObjectRef[Any]) -> None:
        i, key = pending.pop(ref)
        keys.discard(key)
        running.discard(key)
        run = runs[i]
        if key in told:  # the task removes it, unless it ended just before the driver wrote it
            (run.job.run_dir / STOP_FILE).unlink(missing_ok=True)
        try:
            result: int = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return  # cancelled by a stop before it ran
        except ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None) or err  # an exception raised in the task itself
            kind = {"WorkerCrashedError": "worker died", "NodeDiedError": "node died"}.get(type(cause).__name__)
            run.reasons.append(kind or f"{type(cause).__name__}: {(str(cause).splitlines() or [''])[0]}")
            code = -1
        else:
            code = result
            if code != 0:
                run.reasons.append(f"exit {code}")
        if code in RESUMABLE_EXITS and stop.is_set():  # stopped by the driver, with a checkpoint: not a failure
            finish(i, code)
            return
        if code == 0 or stop.is_set() or run.attempt > opts.retries or code in _NOT_RETRIED:
            if code in _NOT_RETRIED:
                run.reasons[-1] += " (a configuration error: not retried)"
            finish(i, code)
            return
        resume = "resumes from its checkpoint" if has_checkpoint(run.job.run_dir) else "starts afresh: no checkpoint"
        say(run.job.name, f"{run.reasons[-1]} on attempt {run.attempt} of {opts.retries + 1}: retrying ({resume})")
        submit(i)

    def poll_started() -> None:
        nonlocal seen
        started = ray.get(board.started.remote(seen))
        seen += len(started)
        for key, host, pid in started:
            if key not in keys:
                continue  # already ended
            running.add(key)
            i = int(key.split(".")[0])
            if runs[i].started is None:
                runs[i].started = time.monotonic()
            say(
                runs[i].job.name,
                f"started on {host} (worker pid {pid}, attempt {runs[i].attempt}) in {runs[i].job.run_dir}",
            )

    def request_stop(signum: int) -> None:
        stop.set()

    def tell_stop() -> None:
        """Cancel the queued attempts and ask the running ones to stop (a queued attempt that turns
        out to have started is asked once its start is seen)."""
        for ref, (i, key) in pending.items():
            if key in running and key not in told:
                told.add(key)
                (runs[i].job.run_dir / STOP_FILE).touch()
            elif key not in running and key not in cancelled:
                cancelled.add(key)
                # A queued task is dropped; one that started before the driver saw it gets KeyboardInterrupt
                # from Ray and stops its trainer (SIGINT: it checkpoints) before it ends (_attempt).
                ray.cancel(ref)

    for i in range(len(runs)):
        submit(i)
    restore = install_stop_handler(request_stop, stop.is_set)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_POLL_S)
            poll_started()
            if stop.is_set():
                tell_stop()
            for ref in ready:
                ended(ref)
    except KeyboardInterrupt:  # a second Ctrl-C: kill the workers, and with them the trainers
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        restore()
        ray.kill(board)
    if stop.is_set():
        raise_interrupted(outcomes, len(todo), out)
    return outcomes
