"""One writer per run directory, for all three trainers, with real processes.

For each trainer (``scripts/train.py``, ``scripts/train_vision.py``, ``scripts/train_stl.py``) a run is
started under a wrapper that makes one of its checkpoint writes wait for a signal file, write half of the file
and SIGKILL its own process: a real kill during a real write. While it waits, a second process (or trainer) on
the same run directory refuses with one line naming the holder. After the kill, the next process takes the dead
holder's lease over at once (its pid is gone on this host), resumes from the last complete checkpoint and
finishes: with the uninterrupted run's results for the RL and vision trainers (which resume exactly); for the
single-task reference, whose interrupted episode restarts from a reset, complete from the intact checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtrl.rundir import LEASE_FILE
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "scripts" / "train.py")
TOY = str(ROOT / "configs" / "toy_sac.yaml")
SETTINGS = [
    "total_steps=200",
    "checkpoint_every=50",
    "sac.warmup_steps=50",
    "eval_every=100",
    "eval_episodes=2",
    "log_every=50",
    "sac.hidden_sizes=[32, 32]",
    "sac.batch_per_task=16",
    "progress=false",
]

#: Runs a training script; the N-th atomic write of a file named PATTERN waits for the file GO, writes the
#: temporary file whole, cuts it to half and SIGKILLs the process before the rename: a kill in mid-write.
KILL_DURING_WRITE = """
import fnmatch, os, runpy, signal, sys, time
import mtrl.atomic as atomic, mtrl.rundir as rundir
pattern, nth, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real, seen = atomic.atomic_write, [0]
def atomic_write(path, write, *rest):
    if not fnmatch.fnmatch(os.path.basename(str(path)), pattern):
        return real(path, write, *rest)
    seen[0] += 1
    if seen[0] != nth:
        return real(path, write, *rest)
    def killed(tmp):
        while not os.path.exists(go):
            time.sleep(0.05)
        write(tmp)
        with open(tmp, "r+b") as handle:
            handle.truncate(os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, killed, *rest)
atomic.atomic_write = rundir.atomic_write = atomic_write  # the writers' module and its re-export
sys.argv = sys.argv[4:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start_killed(tmp_path: Path, pattern: str, nth: int, go: Path, command: list[str]) -> subprocess.Popen[str]:
    """``command`` (a script and its arguments) under :data:`KILL_DURING_WRITE`."""
    wrapper = tmp_path / "kill_during_write.py"
    wrapper.write_text(KILL_DURING_WRITE)
    return subprocess.Popen(
        [sys.executable, str(wrapper), pattern, str(nth), str(go), *command],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 180) -> None:
    """Wait until ``path`` exists while ``proc`` runs."""
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.1)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(logdir: Path, name: str, *extra: str) -> list[str]:
    return [TRAIN, TOY, f"logdir={logdir}", f"run_name={name}", *SETTINGS, *extra]


def _results(run_dir: Path) -> dict[str, object]:
    results = json.loads((run_dir / "results.json").read_text())
    results.pop("run_dir")
    return results


def test_rl_trainer_one_writer_and_a_sigkill_during_a_checkpoint_write(tmp_path: Path) -> None:
    run_dir, go = tmp_path / "runs" / "killed", tmp_path / "go"
    killed = start_killed(tmp_path, "step_*.pt", 2, go, _train(tmp_path / "runs", "killed"))
    reference = subprocess.Popen(
        [sys.executable, *_train(tmp_path / "runs", "reference")], env=_env(), stdout=subprocess.DEVNULL
    )
    try:
        wait_for(run_dir / "checkpoints" / "last.txt", killed)  # the first checkpoint (step 50) is complete
        # While it waits inside its second checkpoint write, a second process on the same run directory refuses.
        second = subprocess.run(
            [sys.executable, *_train(tmp_path / "runs", "killed", "resume=true")],
            env=_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 75, second.stderr  # EXIT_BUSY
        last_line = second.stderr.strip().splitlines()[-1]
        assert last_line.startswith("error: run directory") and "is in use by" in last_line
        assert f"pid {killed.pid} on {socket.gethostname()}" in last_line
        assert not (run_dir / "results.json").exists()
        go.touch()
        assert killed.wait(timeout=120) == -9
    finally:
        killed.kill()
    assert list((run_dir / "checkpoints").glob(".step_*.tmp.pt")), "the kill landed during the write"
    assert (run_dir / "checkpoints" / "last.txt").read_text() == "step_000000050.pt"
    assert (run_dir / LEASE_FILE).is_file()  # the dead holder's lease is still there ...
    resumed = subprocess.run(
        [sys.executable, *_train(tmp_path / "runs", "killed", "resume=true")],
        env=_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr  # ... and taken over at once: its pid is gone
    assert reference.wait(timeout=180) == 0
    assert _results(run_dir) == _results(tmp_path / "runs" / "reference")
    assert not (run_dir / LEASE_FILE).exists()
    assert not list((run_dir / "checkpoints").glob(".step_*.tmp.pt"))  # the torn temporary went with the takeover


VISION = [str(ROOT / "scripts" / "train_vision.py"), str(ROOT / "configs" / "vision" / "synthetic.yaml"),
          "data.size=[32, 40]", "data.batch_size=4", "data.eval_batch_size=8", "data.train_length=16",
          "data.val_length=8", "model.width=8", "optim.steps=9", "optim.lr_decay_every=4", "eval_every=3",
          "last_k=2", "log_every=3", "image_samples=0", "progress=false"]  # fmt: skip


def test_vision_trainer_one_writer_and_a_sigkill_during_a_checkpoint_write(tmp_path: Path) -> None:
    from mtrl.config import load_config
    from mtrl.rundir import RunDirBusy
    from mtrl.vision.config import VisionConfig
    from mtrl.vision.trainer import VisionTrainer

    logdir, go = tmp_path / "runs", tmp_path / "go"
    run = [*VISION, f"logdir={logdir}"]
    killed = start_killed(tmp_path, "checkpoint.pt", 2, go, [*run, "run_name=killed"])  # 2nd: the step-6 one
    reference = subprocess.Popen([sys.executable, *run, "run_name=reference"], env=_env(), stdout=subprocess.DEVNULL)
    try:
        wait_for(logdir / "killed" / "checkpoint.pt", killed)
        overrides = [*VISION[2:], f"logdir={logdir}", "run_name=killed", "resume=true"]
        with pytest.raises(RunDirBusy, match=f"is in use by pid {killed.pid} on {socket.gethostname()}"):
            VisionTrainer(load_config(VisionConfig, VISION[1], overrides))
        go.touch()
        assert killed.wait(timeout=120) == -9
    finally:
        killed.kill()
    assert list((logdir / "killed").glob(".checkpoint.*.tmp.pt")), "the kill landed during the write"
    resumed = subprocess.run([sys.executable, *run, "run_name=killed", "resume=true"], env=_env(),
                             capture_output=True, text=True, timeout=180)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=180) == 0
    a, b = (json.loads((logdir / name / "results.json").read_text()) for name in ("killed", "reference"))
    assert a["steps"] == b["steps"] == 9 and [e["step"] for e in a["evals"]] == [3, 6, 9]
    for key in ("final", "selected", "evals"):  # train_time_s, run and config (run_name, resume) differ
        assert a[key] == b[key], key
    assert not (logdir / "killed" / LEASE_FILE).exists()


def test_single_task_reference_one_writer_and_a_sigkill_during_a_model_write(tmp_path: Path) -> None:
    from agents.stl import STLRun
    from agents.stl_state import STATE_FILE, read_state
    from mtrl.rundir import RunDirBusy
    from mtrl.runstart import STL

    stl = load_script("train_stl")
    logdir, go = tmp_path / "runs", tmp_path / "go"
    args = ["--tasks", "reach-v3", "--protocol", "mtrl-legacy", "--steps", "90", "--warmup", "60", "--eval-every",
            "0", "--checkpoint-every", "30", "--buffer", "200", "--device", "cpu",
            "--no-progress", "--logdir", str(logdir), "--run-name", "killed"]  # fmt: skip
    script = str(ROOT / "scripts" / "train_stl.py")
    killed = start_killed(tmp_path, "model.zip", 2, go, [script, *args])  # the 2nd model write: step 60
    try:
        wait_for(logdir / "killed" / "checkpoints" / STATE_FILE, killed)
        with pytest.raises(RunDirBusy, match=f"is in use by pid {killed.pid}"):
            STLRun(stl.parse_args([*args, "--resume"]))
        go.touch()
        assert killed.wait(timeout=120) == -9
    finally:
        killed.kill()
    folder = logdir / "killed" / "checkpoints" / "reach-v3"
    assert list(folder.glob(".model.*.tmp.zip")), "the kill landed during the write"
    assert read_state(logdir / "killed" / "checkpoints", ["reach-v3"], STL).steps == {"reach-v3": 30}
    resumed = subprocess.run([sys.executable, script, *args, "--resume"], env=_env(), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "reach-v3: resumed at step 30" in resumed.stderr  # from the intact step-30 model
    results = json.loads((logdir / "killed" / "results.json").read_text())
    assert results["complete"] is True and results["steps"] == 90
    assert not (logdir / "killed" / LEASE_FILE).exists()


def test_a_fresh_start_that_waited_for_the_lease_never_overwrites_what_the_holder_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder writes its first checkpoint while a fresh start (same run directory, MTRL_LEASE_WAIT) waits:
    once the lease frees, the fresh start must refuse as it would have had it started later, not train over it."""
    import threading

    from agents.config import TrainConfig
    from agents.trainer import Trainer
    from mtrl.config import load_config
    from mtrl.rundir import RunDirBusy, RunLease

    run_dir = tmp_path / "race"
    holder = RunLease(run_dir).acquire()

    def holder_checkpoints_then_ends() -> None:
        time.sleep(0.5)
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.txt").write_text("step_000000050.pt")
        holder.release()

    threading.Thread(target=holder_checkpoints_then_ends).start()
    monkeypatch.setenv("MTRL_LEASE_WAIT", "30")
    cfg = load_config(TrainConfig, TOY, [f"logdir={tmp_path}", "run_name=race", *SETTINGS])
    with pytest.raises(RunDirBusy, match=r"already has checkpoints.*while this process waited"):
        Trainer(cfg)  # retryable (exit 75): a sweep's next attempt resumes what the holder wrote
    assert not (run_dir / "config.yaml").exists() and not (run_dir / LEASE_FILE).exists()
