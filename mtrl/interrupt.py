"""Ctrl-C and SIGTERM as a clean stop for the training loops, and how a stopped run ends.

The first SIGINT (Ctrl-C) or SIGTERM (``timeout``, Slurm, Kubernetes, ``docker stop``) asks the loop to stop:
it checkpoints, writes its results (``"complete": false``) and returns; a second one aborts at once. The
script then exits with the shell's status for that signal (:data:`EXIT_STATUS`: 130 for SIGINT, 143 for
SIGTERM) after saying at which step the run stopped and how to resume it (:class:`RunInterrupted`, printed by
:func:`mtrl.cli.run_main`). The job backends (:mod:`mtrl.jobs`, :mod:`mtrl.ray_jobs`) read those statuses as
"stopped with a checkpoint: resume it" (:data:`RESUMABLE_EXITS`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["EXIT_STATUS", "RESUMABLE_EXITS", "STOP_SIGNALS", "RunInterrupted", "install_stop_handler", "signal_name"]

#: The signals a training loop turns into a clean stop.
STOP_SIGNALS: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)

#: Exit status of a training script stopped by a signal after checkpointing: 128 + the signal's number.
EXIT_STATUS: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}

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
        """128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
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
    """Handle ``signals`` (SIGINT and SIGTERM) by ``request_stop(signum)``, or by ``KeyboardInterrupt`` when
    ``stopping()`` is already true (a second signal); returns the function that restores the previous
    handlers. Outside the main thread (where Python cannot install handlers) nothing is installed and the
    restore is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_signal(signum: int, frame: Any) -> None:
        if stopping():  # a second signal: give up on the clean stop
            raise KeyboardInterrupt
        request_stop(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in signals}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
