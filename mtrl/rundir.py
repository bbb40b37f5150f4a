"""The run directory: one writer at a time, atomic files, resume checks and logs cut back to a checkpoint.

Every trainer (``agents.trainer.Trainer``, ``agents.stl.STLRun``, ``mtrl.vision.trainer.VisionTrainer``)
writes one run directory through the modules re-exported here, one job each:

* :mod:`mtrl.lease` — the single-writer lease: :class:`~mtrl.lease.RunLease` (host, pid, heartbeat,
  expiry in ``lease.json``), :class:`~mtrl.lease.RunDirBusy` (another live process holds the directory,
  exit status :data:`~mtrl.lease.EXIT_BUSY`) and :func:`~mtrl.lease.recheck`.
* :mod:`mtrl.leased_run` — :class:`~mtrl.leased_run.LeasedRun`, the one lease lifecycle of the trainers.
* :mod:`mtrl.resume` — :func:`~mtrl.resume.check_resume` (what a resume may change) and
  :func:`~mtrl.resume.open_logs` (logs opened fresh or cut back to the checkpoint).
* :mod:`mtrl.atomic` — :func:`atomic_write`, :func:`write_json`, :func:`write_text`, :func:`save_torch`,
  :func:`remove_stale_temporaries` (a kill mid-write leaves the previous file intact).

None of them imports this module, and :mod:`mtrl.config` imports none of them (it saves ``config.yaml``
through :mod:`mtrl.atomic`), so there is no import cycle through the run directory.
"""

from __future__ import annotations

from mtrl.atomic import atomic_write, remove_stale_temporaries, save_torch, write_json, write_text
from mtrl.lease import EXIT_BUSY, LEASE_FILE, LeaseHolder, RunDirBusy, RunLease, recheck
from mtrl.leased_run import LeasedRun
from mtrl.resume import check_resume, open_logs

__all__ = [
    "EXIT_BUSY",
    "LEASE_FILE",
    "LeaseHolder",
    "LeasedRun",
    "RunDirBusy",
    "RunLease",
    "atomic_write",
    "check_resume",
    "open_logs",
    "recheck",
    "remove_stale_temporaries",
    "save_torch",
    "write_json",
    "write_text",
]
