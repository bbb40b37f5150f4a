"""The run skeleton: how every trainer starts its run directory and how it writes its results there.

The three trainers (``agents.trainer.Trainer``, ``mtrl.vision.trainer.VisionTrainer``, ``agents.stl.STLRun``)
keep their own models, loops and checkpoint contents; what they share about the run directory is here, once:

* :func:`start_run` — the start-up sequence, in this order: the run-directory rule and the trainer's own resume
  check, the single-writer lease, both checks again under the lease (:func:`mtrl.runstart.claim_run_dir`), then,
  with the lease given back if any of it fails: the trainer's build step (envs, models), the restore from what
  the check found (a resume only), ``config.yaml``, and the logs (TensorBoard + ``metrics.jsonl``,
  :func:`mtrl.rundir.open_logs`) with the trainer's custom-scalars layout. Nothing is written before the rule
  and the checks pass;
* :func:`restore_newest` — a resume from the newest intact checkpoint (:func:`mtrl.recovery.load_newest_intact`),
  the notes about skipped files printed on stderr and kept for the run notes;
* :func:`write_results` — ``results.json``, written atomically (:func:`mtrl.atomic.write_json`) by the process
  that still holds the lease.

The end-of-run report's table is :mod:`mtrl.report`; the scripts' exit statuses are :mod:`mtrl.cli`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mtrl.atomic import write_json
from mtrl.config import save_config
from mtrl.logger import Layout, Logger
from mtrl.recovery import load_newest_intact
from mtrl.rundir import LeasedRun, open_logs
from mtrl.runstart import TrainerKind, claim_run_dir

__all__ = ["CONFIG_FILE", "RESULTS_FILE", "report_notes", "restore_newest", "start_run", "write_results"]

F = TypeVar("F")
S = TypeVar("S")

#: The run's resolved configuration, written at every start (fresh or resumed).
CONFIG_FILE = "config.yaml"
#: The run's results, written when it ends (or stops, for the trainers that record partial results).
RESULTS_FILE = "results.json"


def start_run(
    run: LeasedRun,
    run_dir: Path,
    kind: TrainerKind,
    resume: bool,
    *,
    check: Callable[[], F],
    restore: Callable[[F], int],
    config: Any,
    layout: Callable[[], Layout],
    build: Callable[[], None] | None = None,
    opened: Callable[[Logger], None] | None = None,
    cut_logs: bool = True,
) -> Logger:
    """Start ``run`` (a trainer of ``kind``) in ``run_dir``; returns its logger. A resume when ``resume``.

    Args:
        run: the trainer; it holds the lease as ``run.lease`` from here on (:class:`~mtrl.rundir.LeasedRun`).
        check: the trainer's own resume check (reads only): compares the saved ``config.yaml`` with this run's
            and returns what a resume continues from (e.g. its checkpoints, newest first). Run before the lease
            and again under it, after the run-directory rule (:func:`mtrl.runstart.claim_run_dir`).
        restore: continue from what ``check`` returned (called for a resume only, once the lease is held and
            ``build`` has run); returns the step the logs continue after.
        config: the resolved configuration (a config dataclass or a mapping), written as ``config.yaml``.
        layout: the custom-scalars layout of the TensorBoard event file (:func:`mtrl.logger.custom_scalars_layout`),
            asked for after ``build`` (the task names may come from the envs it builds).
        build: what the trainer builds only once it holds the directory (envs, models), before ``restore``.
        opened: what the trainer writes first into the new logs (hparams, run notes).
        cut_logs: a resume drops what was logged after the restored step (False: it appends; runs whose parts
            stop at different steps).

    Raises:
        ConfigError: the run-directory rule or ``check`` refused (one line); a busy directory is
            :class:`~mtrl.rundir.RunDirBusy`. Whatever ``build``, ``restore``, ``opened`` or the writes raise is
            raised with the lease given back.
    """
    found = claim_run_dir(run, run_dir, kind, resume, check)
    with run._released_on_error():
        if build is not None:
            build()
        # claim_run_dir has made sure that a resume has something to continue from (else it raised)
        resumed_at = restore(found) if resume else None
        save_config(config, Path(run_dir) / CONFIG_FILE)
        logger = open_logs(Path(run_dir), resumed_at, cut=cut_logs, layout=layout())
        if opened is not None:
            opened(logger)
        return logger


def report_notes(new: Iterable[str], notes: list[str]) -> None:
    """Print each of ``new`` as a ``note:`` line on stderr and keep it in ``notes`` (the run notes)."""
    for note in new:
        print(f"note: {note}", file=sys.stderr)
        notes.append(note)


def restore_newest(candidates: Sequence[Path], load: Callable[[Path], S], notes: list[str]) -> tuple[Path, S]:
    """``(path, load(path))`` for the newest of ``candidates`` (newest first) that loads
    (:func:`mtrl.recovery.load_newest_intact`); a newer one skipped as unreadable is named in a note
    (:func:`report_notes`).

    Raises:
        CheckpointError: none loads, or one is refused as untrusted (one line).
    """
    path, state, skipped = load_newest_intact(candidates, load)
    report_notes(skipped, notes)
    return path, state


def write_results(run: LeasedRun, run_dir: Path, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as ``run_dir/results.json``, atomically, if ``run`` still holds the run directory
    (:meth:`~mtrl.rundir.RunLease.check` raises :class:`~mtrl.rundir.RunDirBusy` otherwise: nothing is written).
    Returns the file's path."""
    run.lease.check()
    return write_json(Path(run_dir) / RESULTS_FILE, results)
