"""How a run ends when it is stopped or its disk fails, and how it is resumed: SIGTERM and SIGHUP handled like
Ctrl-C (exit 143/129/130, the step and the resume command printed, no final report; SIGHUP left ignored under
``nohup``), an unreadable newest checkpoint skipped for
the older intact one with a note, a missing ``checkpoints/last.txt``, a full disk during a checkpoint write, and
the job backends' reading of the exit statuses; on the real trainers and scripts."""

from __future__ import annotations

import errno
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mtrl.checkpoint_io import load_torch
from tests.faults.harness import call, one_line, snapshot

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "scripts" / "train.py")
TOY = str(ROOT / "configs" / "toy_sac.yaml")
RL_ARGS = ["checkpoint_every=50", "sac.warmup_steps=40", "eval_every=80", "eval_episodes=2",
           "log_every=10", "sac.hidden_sizes=[16, 16]", "sac.batch_per_task=8", "progress=false"]  # fmt: skip
VISION_CFG = str(ROOT / "configs" / "vision" / "synthetic.yaml")
VISION_ARGS = ["data.size=[16, 16]", "data.batch_size=4", "data.eval_batch_size=8", "data.train_length=8",
               "data.val_length=8", "model.width=4", "eval_every=3", "last_k=2", "log_every=3",
               "image_samples=0", "progress=false", "device=cpu"]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _results(run_dir: Path) -> dict[str, Any]:
    results = json.loads((run_dir / "results.json").read_text())
    results.pop("run_dir", None)
    return results


def _resume_command(stderr: str) -> list[str]:
    """The command the interrupted script printed, with this interpreter for ``python``."""
    line = next(line for line in stderr.splitlines() if line.startswith("resume with: "))
    command = shlex.split(line.removeprefix("resume with: "))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_sigterm_checkpoints_exits_143_and_the_printed_command_resumes_to_the_uninterrupted_results(
    tmp_path: Path,
) -> None:
    """A real SIGTERM to ``scripts/train.py`` (a subprocess) after step 40; the reference run and the resume (the
    printed command) run in this process."""
    settings = [f"logdir={tmp_path}", *RL_ARGS, "total_steps=100", "checkpoint_every=30"]
    settings.remove("checkpoint_every=50")
    proc = subprocess.Popen([sys.executable, TRAIN, TOY, *settings, "run_name=term"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics, deadline = tmp_path / "term" / "metrics.jsonl", time.time() + 120
    while not (metrics.is_file() and '"step": 40' in metrics.read_text()):  # past the step-30 checkpoint
        assert proc.poll() is None and time.time() < deadline, "the run ended or stalled before step 40"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "final evaluation success (reported)" not in out + err
    last = err.strip().splitlines()[-2:]
    stopped = json.loads((tmp_path / "term" / "results.json").read_text())
    assert stopped["complete"] is False and 40 <= stopped["steps"] < 100
    assert last[0].startswith(f"interrupted by SIGTERM at step {stopped['steps']}: saved ")
    assert last[1].startswith("resume with: python scripts/train.py ") and last[1].endswith(
        f"logdir={tmp_path} run_name=term resume=true"
    )
    assert call("train", TOY, *settings, "run_name=full").code == 0
    resumed = call("train", *_resume_command(err)[2:])
    assert resumed.code == 0, resumed.err[-3000:]
    assert _results(tmp_path / "term") == _results(tmp_path / "full")


def _raise_signal_at(monkeypatch: pytest.MonkeyPatch, cls: type, method: str, signum: int, when: Any) -> None:
    """Make ``cls.method`` send this process ``signum`` once ``when(self)`` holds after it ran (a real signal,
    handled by the trainer's own handler)."""
    original, sent = getattr(cls, method), []

    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if not sent and when(self):
            sent.append(True)
            signal.raise_signal(signum)
        return result

    monkeypatch.setattr(cls, method, wrapped)


def test_ctrl_c_in_the_vision_trainer_checkpoints_exits_130_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtrl.vision.trainer import VisionTrainer

    args = [VISION_CFG, f"logdir={tmp_path}", *VISION_ARGS, "optim.steps=9"]
    assert call("train_vision", *args, "run_name=full").code == 0
    with monkeypatch.context() as patch:
        _raise_signal_at(patch, VisionTrainer, "train_step", signal.SIGINT, lambda trainer: trainer.step == 5)
        stopped = call("train_vision", *args, "run_name=int")
    assert stopped.code == 130, stopped.err[-3000:]
    assert stopped.out == "" and not (tmp_path / "int" / "results.json").exists()
    lines = stopped.err.strip().splitlines()[-2:]
    assert lines[0].startswith("interrupted by SIGINT at step 5: saved ") and "checkpoint.pt" in lines[0]
    assert lines[1].endswith(f"logdir={tmp_path} run_name=int resume=true")
    resumed = call("train_vision", *_resume_command(stopped.err)[2:])
    assert resumed.code == 0, resumed.err[-3000:]
    a, b = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("int", "full"))
    for key in ("steps", "final", "selected", "evals"):
        assert a[key] == b[key], key


def test_sigterm_in_the_single_task_reference_exits_143_with_the_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.stl import STLRun

    args = ["--tasks", "reach-v3", "--protocol", "mtrl-legacy", "--steps", "40", "--warmup", "20", "--eval-every",
            "0", "--eval-episodes", "1", "--buffer", "100", "--device", "cpu", "--no-progress", "--logdir",
            str(tmp_path), "--run-name", "term"]  # fmt: skip
    with monkeypatch.context() as patch:
        _raise_signal_at(patch, STLRun, "_after_env_step", signal.SIGTERM, lambda run: run.steps["reach-v3"] == 25)
        stopped = call("train_stl", *args)
    assert stopped.code == 143, stopped.err[-3000:]
    assert "final evaluation success" not in stopped.out
    lines = stopped.err.strip().splitlines()[-2:]
    at = _results(tmp_path / "term")["steps"]  # the step the saved state holds (SB3 ends the step it is in)
    assert 25 <= at < 40 and lines[0].startswith(f"interrupted by SIGTERM at step {at}: saved ")
    assert lines[1].endswith(f"--logdir {tmp_path} --run-name term --resume")
    resumed = call("train_stl", *_resume_command(stopped.err)[2:])
    assert resumed.code == 0, resumed.err[-3000:]
    assert _results(tmp_path / "term")["complete"] is True


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_sighup_a_closed_terminal_checkpoints_and_exits_129(tmp_path: Path) -> None:
    """A real SIGHUP (the terminal or ssh session of the run closed) to ``scripts/train.py``: the run checkpoints,
    exits 129 with the resume command, and the job backend reads 129 as stopped, not failed."""
    from mtrl.jobs import Job, JobOutcome
    from tests.rl.helpers import interrupt_once_logged

    cmd = [sys.executable, TRAIN, TOY, f"logdir={tmp_path}", "run_name=hup", "total_steps=1000000", "eval_every=0",
           "checkpoint_every=0", "log_every=20", "progress=false"]  # fmt: skip
    code, err = interrupt_once_logged(cmd, ROOT, tmp_path / "hup" / "metrics.jsonl", '"train/critic_loss"', 60,
                                      signum=signal.SIGHUP)  # fmt: skip
    assert code == 129, err[-3000:]
    results = json.loads((tmp_path / "hup" / "results.json").read_text())
    assert results["complete"] is False and results["steps"] > 0
    assert err.strip().splitlines()[-2].startswith(f"interrupted by SIGHUP at step {results['steps']}: saved ")
    assert err.strip().endswith(f"logdir={tmp_path} run_name=hup resume=true")
    job = Job("hup", tmp_path / "hup", tuple(cmd))
    assert JobOutcome(job, code, 1.0, tmp_path / "hup" / "job.log").stopped


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_a_run_started_under_nohup_keeps_ignoring_sighup() -> None:
    """``nohup`` starts a run with SIGHUP ignored so that it outlives its terminal: the stop handler leaves it so
    (and restores nothing for it), while SIGINT is taken over even when ignored (background jobs of a shell)."""
    from mtrl.interrupt import install_stop_handler

    stops: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGINT)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        restore = install_stop_handler(stops.append, lambda: False)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        signal.raise_signal(signal.SIGHUP)  # ignored: no stop
        signal.raise_signal(signal.SIGINT)
        assert stops == [signal.SIGINT]
        restore()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a terminal's run: SIGHUP becomes a clean stop
        restore = install_stop_handler(stops.append, lambda: False)
        signal.raise_signal(signal.SIGHUP)
        restore()
        assert stops == [signal.SIGINT, signal.SIGHUP] and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@pytest.fixture(scope="module")
def stopped_rl_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A toy run stopped (crashed) after its step-100 checkpoint: step files 50 and 100, last.txt → 100."""
    logdir = tmp_path_factory.mktemp("rl")
    result = call("train", TOY, f"logdir={logdir}", "run_name=run", *RL_ARGS, "total_steps=100")
    assert result.code == 0, result.err[-3000:]
    (logdir / "run" / "results.json").unlink()
    return logdir / "run"


def _resume_rl(run_dir: Path, *extra: str) -> Any:
    return call("train", TOY, f"logdir={run_dir.parent}", f"run_name={run_dir.name}", *RL_ARGS, "total_steps=120",
                "resume=true", *extra)  # fmt: skip


def _notes(run_dir: Path) -> str:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return "\n".join(row["text"]["run/notes"] for row in rows if "run/notes" in row.get("text", {}))


def test_a_truncated_latest_checkpoint_is_named_and_the_older_one_used(stopped_rl_run: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = Path(shutil.copytree(stopped_rl_run, tmp_path / "run"))
    latest = run_dir / "checkpoints" / "step_000000100.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    resumed = _resume_rl(run_dir)
    assert resumed.code == 0, resumed.err[-3000:]
    note = one_line(resumed.err)
    assert note.startswith(f"note: checkpoint file {str(latest)!r} is truncated or corrupt")
    assert note.endswith("skipped it, resumed from the older intact step_000000050.pt")
    assert "resumed from step_000000050.pt at step 50" in _notes(run_dir) and str(latest) in _notes(run_dir)
    assert _results(run_dir)["complete"] is True and _results(run_dir)["steps"] == 120


def test_a_missing_last_txt_resumes_from_the_highest_step_file(stopped_rl_run: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = Path(shutil.copytree(stopped_rl_run, tmp_path / "run"))
    (run_dir / "checkpoints" / "last.txt").unlink()
    from agents.evaluate import find_checkpoint  # scripts/evaluate.py looks the checkpoint up the same way

    assert find_checkpoint(run_dir) == run_dir / "checkpoints" / "step_000000100.pt"
    resumed = _resume_rl(run_dir)
    assert resumed.code == 0, resumed.err[-3000:]
    assert "last.txt is missing: using the highest step file, step_000000100.pt" in one_line(resumed.err)
    assert "resumed from step_000000100.pt at step 100" in _notes(run_dir)


def test_a_truncated_vision_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    args = [VISION_CFG, f"logdir={tmp_path}", "run_name=run", *VISION_ARGS]
    assert call("train_vision", *args, "optim.steps=6").code == 0  # checkpoints at steps 3 and 6
    run_dir = tmp_path / "run"
    assert load_torch(run_dir / "checkpoint.prev.pt")["step"] == 3
    (run_dir / "results.json").unlink()
    latest = run_dir / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    resumed = call("train_vision", *args, "optim.steps=9", "resume=true")
    assert resumed.code == 0, resumed.err[-3000:]
    notes = [line for line in resumed.err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and str(latest) in notes[0] and notes[0].endswith("older intact checkpoint.prev.pt")
    results = json.loads((run_dir / "results.json").read_text())
    assert [e["step"] for e in results["evals"]] == [3, 6, 9]  # resumed at 3: evaluated at 6 again, then 9


def _disk_full_at(call: int) -> Callable[..., None]:
    """A ``torch.save`` whose ``call``-th call finds the disk full half-way through its file (the others save)."""
    real_save, calls = torch.save, []

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == call:
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    return save


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one_and_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = torch.save
    monkeypatch.setattr(torch, "save", _disk_full_at(2))  # the step-100 checkpoint
    result = call("train", TOY, f"logdir={tmp_path}", "run_name=full", *RL_ARGS, "total_steps=160")
    assert result.code == 2, result.err[-3000:]
    ckpts = tmp_path / "full" / "checkpoints"
    line = one_line(result.err)
    assert line == (
        f"error: No space left on device (ENOSPC): {str(ckpts / 'step_000000100.pt')!r}; the disk is full: free "
        "space and run again (the last complete checkpoint is intact)"
    )
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.txt", "step_000000050.pt"]  # no temporary left
    assert (ckpts / "last.txt").read_text() == "step_000000050.pt"
    monkeypatch.setattr(torch, "save", real_save)
    before = snapshot(ckpts)
    resumed = call("train", TOY, f"logdir={tmp_path}", "run_name=full", *RL_ARGS, "total_steps=60", "resume=true")
    assert resumed.code == 0, resumed.err[-3000:]  # the intact step-50 checkpoint continues the run
    assert before["step_000000050.pt"] == snapshot(ckpts)["step_000000050.pt"]
    assert _results(tmp_path / "full")["steps"] == 60


def test_the_job_backend_reads_130_and_143_as_stopped_and_resumes_them(tmp_path: Path) -> None:
    from mtrl.jobs import Job, run_jobs

    trainer = ("import pathlib, sys; d = pathlib.Path(sys.argv[1]); resumed = 'again' in sys.argv; "
               "(d / 'checkpoints').mkdir(exist_ok=True); (d / 'checkpoints' / 'last.txt').write_text('x'); "
               "(d / 'results.json').write_text('{}') if resumed else None; "
               "sys.exit(0 if resumed else 143)")  # fmt: skip
    job = Job("j", tmp_path / "j", (sys.executable, "-c", trainer, str(tmp_path / "j")), resume_args=("again",))
    stream = io.StringIO()
    first = run_jobs([job], stream=stream)
    assert [o.returncode for o in first] == [143] and first[0].stopped and not first[0].failed
    assert (
        "0 failed] j: stopped before its end (exit 143) (checkpointed: it resumes when run again)" in stream.getvalue()
    )
    second = run_jobs([job], stream=stream)  # the next invocation resumes it
    assert [o.returncode for o in second] == [0] and "$ " + " ".join(job.argv()) in (
        tmp_path / "j" / "job.log"
    ).read_text()


def test_a_full_disk_during_a_vision_checkpoint_keeps_both_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [VISION_CFG, f"logdir={tmp_path}", "run_name=run", *VISION_ARGS, "optim.steps=9"]
    monkeypatch.setattr(torch, "save", _disk_full_at(3))  # the step-9 checkpoint
    result = call("train_vision", *args)
    assert result.code == 2, result.err[-3000:]
    run_dir = tmp_path / "run"
    assert one_line(result.err.split("\n", 1)[1]).startswith(
        f"error: No space left on device (ENOSPC): {str(run_dir / 'checkpoint.pt')!r}; the disk is full"
    )  # (the first line is the trainer's AMP note)
    assert not list(run_dir.glob(".checkpoint.*")) and not (run_dir / "results.json").exists()
    steps = {name: load_torch(run_dir / name)["step"] for name in ("checkpoint.pt", "checkpoint.prev.pt")}
    assert steps == {"checkpoint.pt": 6, "checkpoint.prev.pt": 3}
