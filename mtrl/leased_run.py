"""The one lease lifecycle of the three trainers: :class:`LeasedRun`, a trainer that holds its run directory
through a :class:`~mtrl.lease.RunLease`."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from mtrl.lease import RunLease

__all__ = ["LeasedRun"]

_R = TypeVar("_R", bound="LeasedRun")


class LeasedRun:
    """A trainer that holds its run directory through ``self.lease`` (a :class:`RunLease`): the one lease
    lifecycle of the three trainers. The trainer takes the directory when it is built
    (:meth:`_take_run_dir`), gives it back if building fails (:meth:`_released_on_error`) and holds it for
    each training call (:meth:`_holding_run_dir`, released when the call ends, however it ends). Its users
    get ``close()``, which gives the directory back without training (e.g. to build another trainer on it in
    this process; training takes it again), and a context manager that closes on exit."""

    lease: RunLease

    def _take_run_dir(self, run_dir: Path) -> None:
        """Take ``run_dir``'s lease (a second process or trainer refuses here, before anything is written);
        an abandoned trainer frees it when it is garbage-collected."""
        self.lease = RunLease(run_dir).acquire()
        weakref.finalize(self, self.lease.release)

    @contextlib.contextmanager
    def _released_on_error(self) -> Iterator[None]:
        """Give the lease back if the block raises (a trainer that fails to start)."""
        try:
            yield
        except BaseException:
            self.lease.release()
            raise

    @contextlib.contextmanager
    def _holding_run_dir(self) -> Iterator[None]:
        """Hold the lease for one training call: taken again if it was given back, released when the call
        ends (finished, stopped or crashed: the next process takes over at once)."""
        self.lease.acquire()
        try:
            yield
        finally:
            self.lease.release()

    def close(self) -> None:
        """Give the run directory back (release its lease); training takes it again."""
        self.lease.release()

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
