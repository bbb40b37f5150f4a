"""The run directory's single-writer lease and atomic files (mtrl.rundir), on real processes and files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mtrl.config import ConfigError
from mtrl.lease import _pid_space
from mtrl.rundir import LEASE_FILE, RunDirBusy, RunLease, atomic_write, check_resume, write_json


def _foreign_lease(run_dir: Path, expires_in: float, host: str = "other-host.example", space: str = "") -> None:
    """A lease written by a process on another host whose heartbeat expires in ``expires_in`` seconds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    record = {"host": host, "pid": 4242, "space": space, "started": 0, "token": "f" * 32, "heartbeat": now,
              "expires": now + expires_in}  # fmt: skip
    (run_dir / LEASE_FILE).write_text(json.dumps(record))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_holder_is_refused_with_one_line_naming_the_first(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mtrl.rundir import RunLease; "
         "RunLease(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(tmp_path / "run")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy) as err:
            RunLease(tmp_path / "run", wait=0).acquire()
        message = str(err.value)
        assert "\n" not in message and isinstance(err.value, ConfigError)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message and "is in use" in message
    finally:
        holder.kill()
        holder.wait()
    with RunLease(tmp_path / "run", wait=0) as again:  # its holder is gone: taken over at once
        assert again.held
    assert not (tmp_path / "run" / LEASE_FILE).exists()  # released


def test_a_waiting_acquirer_gets_the_lease_when_the_holder_releases(tmp_path: Path) -> None:
    holder = RunLease(tmp_path).acquire()
    threading.Timer(0.5, holder.release).start()
    start = time.monotonic()
    with RunLease(tmp_path, wait=10) as second:
        assert second.held
    assert 0.3 < time.monotonic() - start < 5


def test_a_live_lease_of_another_host_is_respected_and_an_expired_one_taken_over(tmp_path: Path) -> None:
    _foreign_lease(tmp_path, expires_in=30)
    with pytest.raises(RunDirBusy, match=r"pid 4242 on other-host\.example"):
        RunLease(tmp_path, wait=0).acquire()
    _foreign_lease(tmp_path, expires_in=-1)  # its heartbeat stopped more than the expiry ago
    with RunLease(tmp_path, wait=0) as lease:
        record = json.loads((tmp_path / LEASE_FILE).read_text())
        assert record["pid"] == os.getpid() and record["token"] == lease.token


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    _foreign_lease(tmp_path, expires_in=3600, host=socket.gethostname(), space=_pid_space())
    record = json.loads((tmp_path / LEASE_FILE).read_text())
    record["pid"] = _dead_pid()
    (tmp_path / LEASE_FILE).write_text(json.dumps(record))
    with RunLease(tmp_path, wait=0) as lease:
        assert lease.held


def test_pids_of_another_pid_namespace_with_this_hostname_are_not_compared(tmp_path: Path) -> None:
    """A container with this hostname but its own pids: its holder's pid means nothing here, so only the
    expiry frees its lease."""
    _foreign_lease(tmp_path, expires_in=30, host=socket.gethostname(), space="other-boot:4026531836")
    record = json.loads((tmp_path / LEASE_FILE).read_text())
    record["pid"] = _dead_pid()
    (tmp_path / LEASE_FILE).write_text(json.dumps(record))
    with pytest.raises(RunDirBusy, match="is in use by"):
        RunLease(tmp_path, wait=0).acquire()


def test_a_stopped_holder_finds_out_at_its_next_check_without_its_heartbeat(tmp_path: Path) -> None:
    """A holder that was stopped past its expiry (SIGSTOP, a suspended VM) cannot write on an old heartbeat:
    check() re-reads the lease once the last renewal has expired, even before the heartbeat thread runs."""
    lease = RunLease(tmp_path, ttl=30).acquire()
    lease._stop.set()  # the heartbeat thread stays asleep, as in a stopped process
    lease._valid_until = time.time() - 1  # ... whose last renewal has expired
    _foreign_lease(tmp_path, expires_in=30)  # meanwhile another process took the directory over
    with pytest.raises(RunDirBusy, match="lost the lease"):
        lease.check()
    lease.release()


def test_a_transient_io_error_of_the_heartbeat_does_not_lose_the_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtrl.lease as lease_module

    lease = RunLease(tmp_path, ttl=0.4).acquire()
    real, failures = lease_module.write_json, [0]

    def flaky(path: Path, data: object) -> Path:
        if failures[0] < 2:
            failures[0] += 1
            raise OSError(116, "Stale file handle")
        return real(path, data)

    monkeypatch.setattr(lease_module, "write_json", flaky)  # the lease's heartbeat writes
    time.sleep(0.5)  # two failed renewals, then a good one
    lease.check()
    assert failures[0] == 2 and lease.held
    lease.release()


def test_killed_writers_temporaries_are_removed_when_the_lease_is_taken(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    torn = tmp_path / "checkpoints" / ".step_000000100.4242.tmp.pt"
    torn.write_bytes(b"half a checkpoint")
    kept = tmp_path / "checkpoints" / "step_000000050.pt"
    kept.write_bytes(b"a checkpoint")
    with RunLease(tmp_path):
        assert not torn.exists() and kept.exists()


def test_the_heartbeat_renews_and_a_lost_lease_stops_the_holder(tmp_path: Path) -> None:
    lease = RunLease(tmp_path, ttl=0.4).acquire()
    first = json.loads((tmp_path / LEASE_FILE).read_text())["expires"]
    deadline = time.monotonic() + 20  # polled, not slept: a loaded 2-core machine may delay the heartbeat thread
    while json.loads((tmp_path / LEASE_FILE).read_text())["expires"] <= first:  # renewed every ttl/4
        assert time.monotonic() < deadline, "the heartbeat never renewed the lease"
        time.sleep(0.02)
    lease.check()
    _foreign_lease(tmp_path, expires_in=30)  # another process took it over (this one looked dead)
    with pytest.raises(RunDirBusy, match="lost the lease"):
        while time.monotonic() < deadline:  # the next heartbeat sees the foreign lease and marks this one lost
            lease.check()
            time.sleep(0.02)
    lease.release()
    assert json.loads((tmp_path / LEASE_FILE).read_text())["host"] == "other-host.example"  # not ours to remove


def test_bad_lease_settings_give_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTRL_LEASE_WAIT", "soon")
    with pytest.raises(ConfigError, match="MTRL_LEASE_WAIT='soon' is not a number"):
        RunLease(tmp_path)


def test_an_interrupted_atomic_write_leaves_the_previous_file(tmp_path: Path) -> None:
    target = write_json(tmp_path / "results.json", {"step": 1})

    def torn(tmp: Path) -> None:
        tmp.write_text('{"step": 2')  # half a file, then the writer dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, torn)
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary left behind


def test_check_resume_names_every_changed_key_and_what_may_change() -> None:
    saved = {"seed": 0, "optim": {"lr": 0.1, "steps": 10}, "logdir": "a"}
    check_resume(
        saved,
        {"seed": 0, "optim": {"lr": 0.1, "steps": 20}, "logdir": "b"},
        frozenset({"optim.steps", "logdir"}),
        "resume=true",
    )
    with pytest.raises(ConfigError) as err:
        check_resume(
            saved, {"seed": 1, "optim": {"lr": 0.2, "steps": 10}, "logdir": "a"}, frozenset({"logdir"}), "--resume"
        )
    message = str(err.value)
    assert "seed: the run has 0, now 1" in message and "optim.lr: the run has 0.1, now 0.2" in message
    assert message.startswith("--resume with a configuration") and "only logdir may change" in message


def test_a_forked_child_never_releases_its_parents_lease(tmp_path: Path) -> None:
    lease = RunLease(tmp_path).acquire()
    pid = os.fork()
    if pid == 0:  # the child (as an env worker would be): releasing must leave the parent's lease alone
        lease.release()
        os._exit(0)
    os.waitpid(pid, 0)
    assert json.loads((tmp_path / LEASE_FILE).read_text())["token"] == lease.token
    lease.release()
    assert not (tmp_path / LEASE_FILE).exists()


def test_a_second_trainer_in_the_same_process_is_told_to_close_the_first(tmp_path: Path) -> None:
    from mtrl.config import update_config
    from mtrl.vision.config import VisionConfig
    from mtrl.vision.trainer import VisionTrainer

    changes = {"data": {"name": "synthetic", "size": [32, 40], "batch_size": 4, "eval_batch_size": 8,
                        "train_length": 8, "val_length": 4}, "model": {"name": "small", "width": 8},
               "optim": {"steps": 2}, "logdir": str(tmp_path), "run_name": "twice", "progress": False}  # fmt: skip
    cfg = update_config(VisionConfig(), changes)
    first = VisionTrainer(cfg)
    with pytest.raises(RunDirBusy, match=r"held by this process: .*call its close\(\) first"):
        VisionTrainer(cfg)
    first.close()
    with VisionTrainer(update_config(cfg, {"optim": {"steps": 3}})) as second:
        assert second.total_steps == 3
    assert not (tmp_path / "twice" / LEASE_FILE).exists()
