"""The run-directory rule (mtrl.runstart), the scripts' shell (mtrl.cli) and checkpoint recovery, on the three real
trainers and their scripts.

For every trainer: a fresh start over a checkpoint or a results.json, a resume with nothing to resume, and a start
in a directory another trainer wrote (recorded in run.json, or inferred for a directory of an older release) are
refused with one line and exit 2, and nothing in the run directory changes (a sha256 snapshot of every file).
A resume while a live process holds a directory that has no checkpoint yet is busy (exit 75). A file-system error
at start-up (a path through a file, no permission) is one line naming the path (exit 2).
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.harness import call, one_line, snapshot

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "configs" / "toy_sac.yaml")
RL_ARGS = ["total_steps=90", "checkpoint_every=30", "sac.warmup_steps=20", "eval_every=45", "eval_episodes=2",
           "log_every=15", "sac.hidden_sizes=[16, 16]", "sac.batch_per_task=8", "progress=false"]  # fmt: skip
VISION_CFG = str(ROOT / "configs" / "vision" / "synthetic.yaml")
VISION_ARGS = ["data.size=[16, 16]", "data.batch_size=4", "data.eval_batch_size=8", "data.train_length=8",
               "data.val_length=8", "model.width=4", "optim.steps=6", "eval_every=3", "last_k=1", "log_every=3",
               "image_samples=0", "progress=false", "device=cpu"]  # fmt: skip
STL_ARGS = ["--tasks", "reach-v3", "--protocol", "mtrl-legacy", "--steps", "30", "--warmup", "20", "--eval-every", "0",
            "--eval-episodes", "1", "--buffer", "100", "--device", "cpu", "--no-progress"]  # fmt: skip


def rl(logdir: Path, name: str, *extra: str) -> tuple[str, ...]:
    return ("train", TOY, f"logdir={logdir}", f"run_name={name}", *RL_ARGS, *extra)


def vision(logdir: Path, name: str, *extra: str) -> tuple[str, ...]:
    return ("train_vision", VISION_CFG, f"logdir={logdir}", f"run_name={name}", *VISION_ARGS, *extra)


def stl(logdir: Path, name: str, *extra: str) -> tuple[str, ...]:
    return ("train_stl", *STL_ARGS, "--logdir", str(logdir), "--run-name", name, *extra)


COMMANDS = {"rl": rl, "vision": vision, "stl": stl}
RESUME = {"rl": "resume=true", "vision": "resume=true", "stl": "--resume"}
SCRIPTS = {"rl": "scripts/train.py", "vision": "scripts/train_vision.py", "stl": "scripts/train_stl.py"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished run directory of each trainer, written by its script."""
    logdir = tmp_path_factory.mktemp("finished")
    runs = {}
    for kind, command in COMMANDS.items():
        result = call(*command(logdir, kind))
        assert result.code == 0, result.err[-3000:]
        runs[kind] = logdir / kind
    return runs


def refused(args: tuple[str, ...], run_dir: Path, code: int = 2) -> str:
    """Run the script; assert it exits with ``code``, prints one line and changes nothing in ``run_dir``."""
    before = snapshot(run_dir)
    result = call(*args)
    assert result.code == code, result.err[-3000:]
    assert snapshot(run_dir) == before, "the refused start changed the run directory"
    return one_line(result.err)


def copy_run(source: Path, target: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, target)
    for name in drop:
        (target / name).unlink()
    return target


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_a_fresh_start_over_results_or_checkpoints_is_refused(
    kind: str, finished: dict[str, Path], tmp_path: Path
) -> None:
    command = COMMANDS[kind]
    line = refused(command(finished[kind].parent, kind), finished[kind])  # a finished run: results.json
    assert "already holds a finished run (results.json)" in line and str(finished[kind]) in line
    assert "delete the directory to start over" in line
    copy_run(finished[kind], tmp_path / kind, drop=("results.json",))  # checkpoints only (a stopped run)
    line = refused(command(tmp_path, kind), tmp_path / kind)
    assert "already has checkpoints" in line and f"pass {RESUME[kind]} to continue it" in line


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_a_resume_with_nothing_to_resume_is_refused_and_creates_nothing(kind: str, tmp_path: Path) -> None:
    line = refused(COMMANDS[kind](tmp_path, "typo", RESUME[kind]), tmp_path / "typo")
    assert (
        f"{RESUME[kind]}: nothing to resume in {str(tmp_path / 'typo')!r}: no checkpoint (the directory does not "
        "exist: check" in line
    )
    assert not (tmp_path / "typo").exists()
    (tmp_path / "empty").mkdir()
    line = refused(COMMANDS[kind](tmp_path, "empty", RESUME[kind]), tmp_path / "empty")
    assert "nothing to resume in" in line and f"start it without {RESUME[kind]}" in line


@pytest.mark.parametrize("recorded", [True, False], ids=["run.json", "older-release"])
@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_a_directory_of_another_trainer_is_refused_naming_it(
    kind: str, recorded: bool, finished: dict[str, Path], tmp_path: Path
) -> None:
    for other in sorted(set(COMMANDS) - {kind}):
        run_dir = copy_run(finished[other], tmp_path / other, drop=() if recorded else ("run.json",))
        for extra in ((), (RESUME[kind],)):  # a fresh start and a resume
            line = refused(COMMANDS[kind](tmp_path, other, *extra), run_dir)
            assert f"was written by {SCRIPTS[other]}" in line and f"not by {SCRIPTS[kind]}" in line
            assert "use a new" in line


def test_a_resume_before_the_holders_first_checkpoint_is_busy(tmp_path: Path) -> None:
    run_dir = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mtrl.rundir import RunLease; "
         "RunLease(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for kind in ("rl", "vision"):
            line = refused(COMMANDS[kind](tmp_path, "held", RESUME[kind]), run_dir, code=75)
            assert line.startswith("error: run directory") and f"is in use by pid {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()


def test_a_run_directory_through_a_file_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    for kind in ("rl", "vision", "stl"):
        result = call(*COMMANDS[kind](tmp_path / "file", "run"))
        assert result.code == 2, result.err[-3000:]
        line = one_line(result.err)
        assert line.startswith("error: ") and str(tmp_path / "file") in line and "(ENOTDIR)" in line, line


def test_a_run_directory_this_user_may_not_write_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES from the run directory's creation (what a non-root user gets in a read-only log directory; the
    tests run as root, where the permission bits do not stop writes, so the error is raised at the real call)."""
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(tmp_path / "readonly"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    for kind in ("rl", "vision"):
        result = call(*COMMANDS[kind](tmp_path / "readonly", "run"))
        assert result.code == 2, result.err[-3000:]
        line = one_line(result.err)
        assert f"Permission denied (EACCES): {str(tmp_path / 'readonly' / 'run')!r}" in line
        assert "fix the permissions or choose another logdir" in line


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only directories")  # fmt: skip
def test_a_read_only_log_directory_is_one_line(tmp_path: Path) -> None:
    logdir = tmp_path / "ro"
    logdir.mkdir(mode=0o500)
    result = call(*rl(logdir, "run"))
    assert result.code == 2 and "(EACCES)" in one_line(result.err)
