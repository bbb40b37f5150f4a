"""One writer per run directory, with real processes: a second ``train.py ... resume=true`` on a run that is
training refuses with one line naming the holder, and a run SIGKILLed in the middle of writing a checkpoint
is resumed by the next process (the dead holder's lease taken over at once) to the uninterrupted results.

The killed run is ``scripts/train.py`` started through a small wrapper that makes its second checkpoint write
wait for a signal file, write half of the file and SIGKILL its own process: a real kill during a real write.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from mtrl.rundir import LEASE_FILE

ROOT = Path(__file__).resolve().parents[2]
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

#: Runs train.py; its N-th torch.save waits for the file GO, writes half of the file and SIGKILLs the process.
KILL_DURING_SAVE = """
import os, runpy, signal, sys, time
import torch
kill_at, go = int(sys.argv[1]), sys.argv[2]
real_save, calls = torch.save, [0]
def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        while not os.path.exists(go):
            time.sleep(0.05)
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(logdir: Path, name: str, *extra: str) -> list[str]:
    return [TRAIN, TOY, f"logdir={logdir}", f"run_name={name}", *SETTINGS, *extra]


def _results(run_dir: Path) -> dict[str, object]:
    results = json.loads((run_dir / "results.json").read_text())
    results.pop("run_dir")
    return results


def test_one_writer_and_a_sigkill_during_a_checkpoint_write(tmp_path: Path) -> None:
    run_dir, go = tmp_path / "runs" / "killed", tmp_path / "go"
    wrapper = tmp_path / "kill_during_save.py"
    wrapper.write_text(KILL_DURING_SAVE)
    killed = subprocess.Popen(
        [sys.executable, str(wrapper), "2", str(go), *_train(tmp_path / "runs", "killed")],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    reference = subprocess.Popen(
        [sys.executable, *_train(tmp_path / "runs", "reference")], env=_env(), stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while not (run_dir / "checkpoints" / "last.txt").is_file():  # the first checkpoint (step 50) is complete
            assert killed.poll() is None and time.time() < deadline, killed.stderr.read() if killed.stderr else ""
            time.sleep(0.1)
        # While it waits inside its second checkpoint write, a second process on the same run directory refuses.
        second = subprocess.run(
            [sys.executable, *_train(tmp_path / "runs", "killed", "resume=true")],
            env=_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        last_line = second.stderr.strip().splitlines()[-1]
        assert last_line.startswith("config error: run directory") and "is in use by" in last_line
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
