"""Ctrl-C, SIGTERM and SIGHUP as a clean stop for the training loops, and how a stopped run ends.

The first SIGINT (Ctrl-C), SIGTERM (``timeout``, Slurm, Kubernetes, ``docker stop``) or SIGHUP (the terminal or
the ssh session the run was started from closed) asks the loop to stop: it checkpoints, writes its results
(``"complete": false``) and returns; a second one aborts at once. The script then exits with the shell's status
for that signal (:data:`EXIT_STATUS`: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP) after saying at which step
the run stopped and how to resume it (:class:`RunInterrupted`, printed by :func:`mtrl.cli.run_main`). A run
started under ``nohup`` (SIGHUP ignored, so that it outlives its terminal) keeps ignoring SIGHUP
(:data:`KEEP_IGNORED`). The job backends (:mod:`mtrl.jobs`, :mod:`mtrl.ray_jobs`) read those statuses as
"stopped with a checkpoint: resume it" (:data:`RESUMABLE_EXITS`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "EXIT_STATUS",
    "HANGUP",
    "KEEP_IGNORED",
    "RESUMABLE_EXITS",
    "STOP_SIGNALS",
    "RunInterrupted",
    "install_stop_handler",
    "signal_name",
]

#: SIGHUP where the platform has it (not on Windows).
HANGUP: tuple[int, ...] = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()

#: The signals a training loop turns into a clean stop.
STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, *HANGUP)

#: Stop signals left ignored when the process started with them ignored: ``nohup`` ignores SIGHUP on purpose.
#: (SIGINT is taken over even when ignored: a shell starts background jobs with SIGINT ignored, and a driver's
#: stop must still reach them.)
KEEP_IGNORED: tuple[int, ...] = HANGUP

#: Exit status of a training script stopped by a signal after checkpointing: 128 + the signal's number.
EXIT_STATUS: dict[int, int] = {signum: 128 + int(signum) for signum in STOP_SIGNALS}

#: Exit statuses of a run that stopped cleanly before its end: its checkpoint continues it.
RESUMABLE_EXITS = frozenset(EXIT_STATUS.values())


def signal_name(signum: int) -> str:
    """``"SIGINT"`` for ``signal.SIGINT`` (the number as text for a signal Python does not name)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class RunInterrupted(Exception):
    """A training run stopped by a signal after saving its checkpoint: the script exits with
    :attr:`exit_status` and prints :attr:`lines` (where it stopped, what was saved, how to resume)."""

    def __init__(self, signum: int, step: int | str, saved: str, resume_command: str) -> None:
        self.signum, self.step, self.saved, self.resume_command = signum, step, saved, resume_command
        super().__init__(f"interrupted by {signal_name(signum)} at step {step}")

    @property
    def exit_status(self) -> int:
        """128 + the signal number (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP)."""
        return EXIT_STATUS.get(self.signum, 128 + self.signum)

    @property
    def lines(self) -> list[str]:
        """What the script prints last."""
        return [
            f"interrupted by {signal_name(self.signum)} at step {self.step}: saved {self.saved}; the run is not "
            "finished",
            f"resume with: {self.resume_command}",
        ]


def install_stop_handler(
    request_stop: Callable[[int], None], stopping: Callable[[], bool], signals: Sequence[int] = STOP_SIGNALS
) -> Callable[[], None]:
    """Handle ``signals`` (SIGINT, SIGTERM and SIGHUP) by ``request_stop(signum)``, or by ``KeyboardInterrupt`` when
    ``stopping()`` is already true (a second signal); returns the function that restores the previous
    handlers. A signal of :data:`KEEP_IGNORED` that is ignored (``nohup``) stays ignored. Outside the main thread
    (where Python cannot install handlers) nothing is installed and the restore is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_signal(signum: int, frame: Any) -> None:
        if stopping():  # a second signal: give up on the clean stop
            raise KeyboardInterrupt
        request_stop(signum)

    kept = {signum for signum in signals if signum in KEEP_IGNORED and signal.getsignal(signum) == signal.SIG_IGN}
    previous = {signum: signal.signal(signum, on_signal) for signum in signals if signum not in kept}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
