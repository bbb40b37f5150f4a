"""Ctrl-C as a clean stop for the training loops: the first SIGINT asks the loop to stop (it then
checkpoints and writes its results), a second one aborts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["install_stop_handler"]


def install_stop_handler(request_stop: Callable[[], None], stopping: Callable[[], bool]) -> Callable[[], None]:
    """Handle SIGINT by ``request_stop()``, or by ``KeyboardInterrupt`` when ``stopping()`` is already
    true (a second Ctrl-C); returns the function that restores the previous handler. Outside the main
    thread (where Python cannot install handlers) nothing is installed and the restore is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigint(signum: int, frame: Any) -> None:
        if stopping():  # second Ctrl-C: give up on the clean stop
            raise KeyboardInterrupt
        request_stop()

    previous = signal.signal(signal.SIGINT, on_sigint)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore
