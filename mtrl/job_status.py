"""Where each run of a set of jobs (:class:`mtrl.jobs.Job`) stands, read from its run directory without writing
anything and without reading a single score: finished, running (a live process holds its lease), stopped with a
checkpoint (the next invocation resumes it), started without a checkpoint, or not started; with the last step
its ``metrics.jsonl`` logged.

A sweep or a pilot that spans several sittings is checked with it between them (``scripts/bench_pilot.py
--status``): the table says how far every run got, and nothing in it is a result, so looking at it cannot steer a
pre-registered comparison.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mtrl.jobs import Job, has_checkpoint, is_finished
from mtrl.lease import RunLease

__all__ = ["JobStatus", "State", "job_status", "last_logged_step", "status_table"]

State = Literal["finished", "running", "stopped", "started", "not started"]

#: How much of the end of ``metrics.jsonl`` is read for its last step (its lines are a few kB at most).
_TAIL_BYTES = 1 << 16


@dataclass(frozen=True)
class JobStatus:
    """One run's standing: its :data:`State` and the last step its ``metrics.jsonl`` logged (None: none yet)."""

    job: Job
    state: State
    step: int | None


def last_logged_step(run_dir: Path) -> int | None:
    """The ``step`` of the last complete line of ``run_dir/metrics.jsonl`` (read from its last 64 kB only), or None
    when there is no such file or line. A line being written (no newline yet) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    with path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
    for line in reversed(tail.split(b"\n")[:-1]):  # the piece after the last newline is not a whole line
        try:
            step = json.loads(line).get("step")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            continue  # the first, cut line of the tail
        if isinstance(step, int):
            return step
    return None


def job_status(job: Job) -> JobStatus:
    """Where ``job``'s run stands (see the module docstring); reads ``results.json``, ``lease.json``, the
    checkpoint files and the end of ``metrics.jsonl``, and writes nothing."""
    run_dir = Path(job.run_dir)
    step = last_logged_step(run_dir)
    state: State
    if is_finished(run_dir):
        state = "finished"
    elif run_dir.is_dir() and RunLease(run_dir).live_holder() is not None:
        state = "running"
    elif has_checkpoint(run_dir):
        state = "stopped"
    elif run_dir.is_dir():
        state = "started"
    else:
        state = "not started"
    return JobStatus(job, state, step)


def status_table(
    statuses: Sequence[JobStatus], hours: Mapping[Path, float] | None = None, root: Path | None = None
) -> str:
    """A markdown table of ``statuses`` (one row per run: its run directory relative to ``root``, or the job's name
    without one; state; last logged step; and the hours ``hours`` gives its run directory, when given), then one
    line counting the runs in each state."""
    head = "| run | state | last logged step |" + (" hours so far |" if hours is not None else "")
    rows = [head, "|---|---|---:|" + ("---:|" if hours is not None else "")]
    for s in statuses:
        step = "" if s.step is None else f"{s.step:,}"
        name = s.job.name if root is None else Path(s.job.run_dir).relative_to(root).as_posix()
        row = f"| {name} | {s.state} | {step} |"
        if hours is not None:
            row += f" {hours.get(Path(s.job.run_dir), 0.0):.2f} |"
        rows.append(row)
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    order: tuple[State, ...] = ("finished", "running", "stopped", "started", "not started")
    summary = ", ".join(f"{counts[k]} {k}" for k in order if k in counts)
    return "\n".join(rows) + f"\n\n{len(statuses)} runs: {summary or 'none'}"
