"""The single-writer lease of a run directory: one process writes it at a time.

:class:`RunLease` — the holder records its host, pid and a heartbeat with an expiry in ``lease.json``; a
second process refuses with a one-line :class:`RunDirBusy` naming the holder, or waits up to ``wait`` seconds
for the lease to free. A lease is *stale*, and is taken over, when its heartbeat has expired (the holder died
or hangs on any host) or when its holder ran on this host and its process is gone (then at once, no need to
wait for the expiry). Reading and changing ``lease.json`` happens under an exclusive ``flock`` of
``.lease.lock``, so two processes can never both take over one stale lease. A holder whose lease was taken
over (it stalled for longer than the expiry) notices at its next :meth:`RunLease.check` (the trainers call it
at every step and before every checkpoint) and stops; ``check`` itself re-reads the lease once the last
renewal is past its expiry, so a process that was stopped or suspended cannot write on the strength of an old
heartbeat. Pids are compared only between processes of one kernel boot and pid namespace (containers sharing
a hostname do not). :func:`recheck` runs a run-directory check again once the lease is taken.

Expiry across hosts compares wall clocks (``time.time()`` of the holder against the reader's), so hosts
sharing run directories need synchronised clocks (NTP; a skew well below the expiry is enough). The
defaults: expiry ``MTRL_LEASE_TTL`` seconds (60), heartbeat every quarter of it, ``MTRL_LEASE_WAIT``
seconds of waiting for a busy directory (0: refuse at once; the sweep's retries set it).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from mtrl.atomic import remove_stale_temporaries, write_json
from mtrl.config import ConfigError

__all__ = ["EXIT_BUSY", "LEASE_FILE", "LeaseHolder", "RunDirBusy", "RunLease", "recheck"]

T = TypeVar("T")

#: Exit status of the training scripts when another process holds the run directory (at start, or taken over
#: mid-run): sysexits' EX_TEMPFAIL — trying again later may work (the sweep's Ray retries do, after waiting).
EXIT_BUSY = 75

#: The lease file inside a run directory (present while a process holds the directory).
LEASE_FILE = "lease.json"
_LOCK_FILE = ".lease.lock"
_DEFAULT_TTL = 60.0


class RunDirBusy(ConfigError):
    """Another live process holds the run directory's lease (or held it while this one waited and changed
    the directory meanwhile): trying again later may work (:data:`EXIT_BUSY`)."""


def recheck(check: Callable[[], T]) -> T:
    """Run a run-directory check (resume or fresh start) again once the lease is taken. It passed before the
    lease, so a failure now comes from what the previous holder wrote while this process waited for it: it
    is raised as :class:`RunDirBusy` (retryable — a sweep's next attempt sees the new state and resumes)."""
    try:
        return check()
    except RunDirBusy:
        raise
    except ConfigError as err:
        raise RunDirBusy(
            f"{err} (written by the run directory's previous holder while this process waited for its lease; "
            "start it again)"
        ) from None


@dataclass(frozen=True)
class LeaseHolder:
    """What ``lease.json`` records about the process that holds a run directory."""

    host: str
    pid: int
    #: Boot id and pid namespace of the holder (``/proc``; "" where unknown): pids compare only within one.
    space: str
    #: Start time of the process (``/proc/<pid>/stat``; 0 where unknown): tells a reused pid apart.
    started: int
    token: str
    #: ``time.time()`` of the last heartbeat and of its expiry.
    heartbeat: float
    expires: float

    def describe(self, now: float) -> str:
        """``"pid 123 on host-a (heartbeat 3 s ago, expires in 57 s)"``."""
        return (
            f"pid {self.pid} on {self.host} (heartbeat {now - self.heartbeat:.0f} s ago, "
            f"expires in {max(self.expires - now, 0):.0f} s)"
        )


def _start_time(pid: int) -> int:
    """The process start time in clock ticks since boot (Linux), 0 where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def _pid_space() -> str:
    """This kernel boot and pid namespace, so that two containers with one hostname never compare pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _alive_here(holder: LeaseHolder) -> bool:
    """Whether ``holder`` (a process of this host) still runs."""
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = _start_time(holder.pid)
    return not (holder.started and started and started != holder.started)  # a reused pid is another process


def _read_holder(path: Path) -> LeaseHolder | None:
    try:
        return LeaseHolder(**{"space": "", **json.loads(path.read_text())})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None  # torn or foreign content: treated as no lease


@contextlib.contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` of the run directory's lock file (released on exit or process death)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process exclusion of the read-modify-write
        yield
        return
    with open(run_dir / _LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds (unset it or give e.g. {name}=60)") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must be ≥ 0 seconds")
    return value


class RunLease:
    """The single-writer lease of one run directory.

    ``acquire()`` creates the directory, takes the lease (waiting up to ``wait`` seconds while a live
    holder has it, then raising :class:`RunDirBusy`) and starts a heartbeat thread that renews it every
    ``ttl / 4`` seconds; ``release()`` stops the heartbeat and removes ``lease.json``. A process that
    exits without releasing leaves a lease that the next process on this host takes over at once (its pid
    is gone) and any other host after the expiry. Use as a context manager or call ``release()``;
    ``acquire()`` on a held lease does nothing.

    Args:
        run_dir: the run directory.
        ttl: seconds a heartbeat stays valid (default ``MTRL_LEASE_TTL`` or 60).
        wait: seconds to wait for a busy directory (default ``MTRL_LEASE_WAIT`` or 0).
    """

    def __init__(self, run_dir: str | Path, ttl: float | None = None, wait: float | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.ttl = _env_seconds("MTRL_LEASE_TTL", _DEFAULT_TTL) if ttl is None else float(ttl)
        if self.ttl <= 0:
            raise ConfigError(f"lease expiry must be > 0 seconds, got {self.ttl}")
        self.wait = _env_seconds("MTRL_LEASE_WAIT", 0.0) if wait is None else float(wait)
        self.host = socket.gethostname()
        self.space = _pid_space()
        self.pid = os.getpid()
        self.started = _start_time(self.pid)
        self.token = ""
        self.lost = False
        #: ``time.time()`` until which the last renewal that reached ``lease.json`` keeps the lease ours.
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.run_dir / LEASE_FILE

    def live_holder(self) -> LeaseHolder | None:
        """The process holding the lease now, if it is live (not stale); reads ``lease.json`` only (no lock
        file is created), so it can be asked before deciding to write anything."""
        holder = _read_holder(self.path)
        return holder if holder is not None and not self._stale(holder) else None

    @property
    def held(self) -> bool:
        """Whether this object holds the lease (acquired, not released, not taken over)."""
        return bool(self.token) and not self.lost

    # --- taking and giving back ------------------------------------------------------------------
    def acquire(self) -> RunLease:
        """Take the lease or raise :class:`RunDirBusy` (after waiting up to ``wait`` seconds)."""
        if self.held:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait
        while True:
            holder = self._try_take()
            if holder is None:
                break
            if time.monotonic() >= deadline:
                waited = f" after waiting {self.wait:.0f} s" if self.wait else ""
                if holder.pid == self.pid and holder.host == self.host and holder.space == self.space:
                    raise RunDirBusy(
                        f"run directory {str(self.run_dir)!r} is held by this process: an earlier trainer on it is "
                        "still open; let its train()/run() finish or call its close() first"
                    )
                raise RunDirBusy(
                    f"run directory {str(self.run_dir)!r} is in use by {holder.describe(time.time())}{waited}; "
                    f"wait for that run to end or stop it (a dead holder's lease expires after at most "
                    f"{holder.expires - holder.heartbeat:.0f} s), or use another run directory"
                )
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))
        self.lost = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease:{self.run_dir.name}", daemon=True)
        self._thread.start()
        atexit.register(self.release)
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove ``lease.json`` if this object still holds it. A no-op in a process
        forked from the holder (env workers): the lease is the parent's."""
        if os.getpid() != self.pid:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        atexit.unregister(self.release)
        if not self.token:
            return
        try:
            with _exclusive(self.run_dir):
                current = _read_holder(self.path)
                if current is not None and current.token == self.token:
                    self.path.unlink(missing_ok=True)
        except OSError:
            pass  # the directory (or its storage) is gone: nothing left to free
        self.token = ""

    def check(self) -> None:
        """Raise :class:`RunDirBusy` if another process took the lease over (this one stalled past the
        expiry): the caller must stop writing. Cheap while the last renewal is fresh; past its expiry (the
        process was stopped, suspended, or its heartbeat could not write) it renews the lease itself, under
        the lock, and finds out whether it is still ours. The trainers call it at every step and before
        every checkpoint and results write."""
        if not self.lost and self.token and time.time() >= self._valid_until - self.ttl / 4:
            self._renew()
        if self.lost:
            holder = _read_holder(self.path)
            who = holder.describe(time.time()) if holder else "another process"
            raise RunDirBusy(
                f"lost the lease of {str(self.run_dir)!r} to {who} (no heartbeat for more than {self.ttl:.0f} s); "
                "stopping without writing"
            )

    def __enter__(self) -> RunLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- internals ---------------------------------------------------------------------------------
    def _record(self, token: str) -> LeaseHolder:
        now = time.time()
        return LeaseHolder(self.host, self.pid, self.space, self.started, token, now, now + self.ttl)

    def _stale(self, holder: LeaseHolder) -> bool:
        if holder.expires <= time.time():
            return True
        same_machine = holder.host == self.host and holder.space == self.space and bool(self.space)
        return same_machine and not _alive_here(holder)

    def _renew(self) -> None:
        """Write a fresh heartbeat if ``lease.json`` still holds this object's token; mark the lease lost if
        another process holds it (or it is gone). An I/O error leaves it as it was: the next renewal retries,
        and ``check()`` keeps asking until the lease is renewed or found lost."""
        try:
            with _exclusive(self.run_dir):
                holder = _read_holder(self.path)
                if holder is None or holder.token != self.token:
                    self.lost = True
                    return
                record = self._record(self.token)
                write_json(self.path, asdict(record))
                self._valid_until = record.expires
        except OSError:
            return

    def _try_take(self) -> LeaseHolder | None:
        """Take the lease if it is free or stale; else return its live holder."""
        with _exclusive(self.run_dir):
            holder = _read_holder(self.path)
            if holder is not None and not self._stale(holder):
                return holder
            token = uuid.uuid4().hex
            record = self._record(token)
            write_json(self.path, asdict(record))
            self.token, self._valid_until = token, record.expires
            remove_stale_temporaries(self.run_dir)  # ours now: what killed writers left can go
            return None

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 4) and not self.lost:
            try:
                self._renew()
            except Exception:  # never let the heartbeat die silently: check() renews on its own when it is late
                continue
