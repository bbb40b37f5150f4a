"""The start of every run: may this trainer write this run directory, and how is the run resumed?

One rule for the three trainers (``scripts/train.py``, ``scripts/train_vision.py``, ``scripts/train_stl.py``),
checked by :func:`claim_run_dir` before the single-writer lease and again under it:

* a directory written by another trainer is refused, naming that trainer. Each run records its writer in
  ``run.json`` (``{"trainer": "rl" | "vision" | "stl", ...}``, written atomically when the run starts); for a
  directory of an older release the writer is inferred from its files (:func:`written_by`);
* a fresh start over a checkpoint or a ``results.json`` is refused (it would overwrite them);
* a resume with nothing to resume is refused (a mistyped run name would otherwise train from scratch), except
  while a live process holds the directory and has not checkpointed yet: then the lease decides
  (:class:`~mtrl.rundir.RunDirBusy`, exit 75, or a wait under ``MTRL_LEASE_WAIT``).

Each refusal is one line (:class:`~mtrl.config.ConfigError`) that says how to go on. Nothing in the directory
is written before the rule passes. Writing ``run.json`` is the first write of a run, so a directory that
cannot be written (read-only, full, a path through a file) fails there, before any env or model is built.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mtrl.config import ConfigError
from mtrl.rundir import LeasedRun, RunLease, recheck, write_json

__all__ = [
    "RL",
    "RUN_FILE",
    "STL",
    "STL_FLAGS",
    "TRAINERS",
    "VISION",
    "NothingToResume",
    "TrainerKind",
    "check_run_dir",
    "checkpoint_files",
    "claim_run_dir",
    "has_checkpoint",
    "resume_command",
    "written_by",
]

T = TypeVar("T")

#: The file recording which trainer writes a run directory.
RUN_FILE = "run.json"
_RUN_FORMAT = 1


@dataclass(frozen=True)
class TrainerKind:
    """One of the three trainers, as the run-directory rule names it."""

    #: ``run.json``'s ``trainer``: ``"rl"``, ``"vision"`` or ``"stl"``.
    name: str
    #: The script that runs it (named in the messages).
    script: str
    #: What it trains, in words.
    description: str
    #: How its command line asks to resume, and names the run directory.
    resume_flag: str
    run_name_flag: str
    #: Globs (relative to the run directory) of the files a resume continues from.
    checkpoints: tuple[str, ...]

    def run_name_hint(self) -> str:
        """``"a new run_name"`` / ``"a new --run-name"``."""
        return f"a new {self.run_name_flag}"


RL = TrainerKind(
    "rl", "scripts/train.py", "multi-task SAC", "resume=true", "run_name",
    ("checkpoints/last.txt", "checkpoints/step_*.pt"),
)  # fmt: skip
VISION = TrainerKind(
    "vision", "scripts/train_vision.py", "dense multi-task vision", "resume=true", "run_name",
    ("checkpoint.pt", "checkpoint.prev.pt"),
)  # fmt: skip
STL = TrainerKind(
    "stl", "scripts/train_stl.py", "one stable-baselines3 SAC per task", "resume=true", "run_name",
    ("checkpoints/state.pt", "checkpoints/state.json"),  # state.json: earlier releases
)  # fmt: skip
#: The single-task reference started with the deprecated ``--flag`` form of ``scripts/train_stl.py`` (its
#: messages and resume command name ``--resume`` and ``--run-name``).
STL_FLAGS = TrainerKind(STL.name, STL.script, STL.description, "--resume", "--run-name", STL.checkpoints)

#: The trainers by ``run.json`` name.
TRAINERS: dict[str, TrainerKind] = {kind.name: kind for kind in (RL, VISION, STL)}


class NothingToResume(ConfigError):
    """A resume in a run directory that holds no checkpoint of its trainer."""


def checkpoint_files(run_dir: Path, kind: TrainerKind) -> list[Path]:
    """The files of ``run_dir`` that a resume of ``kind`` continues from (any of them: the trainer picks)."""
    return sorted(p for pattern in kind.checkpoints for p in Path(run_dir).glob(pattern) if p.is_file())


def has_checkpoint(run_dir: Path, kind: TrainerKind | None = None) -> bool:
    """Whether ``run_dir`` holds a checkpoint of ``kind`` (of any trainer when None)."""
    kinds = TRAINERS.values() if kind is None else (kind,)
    return any(checkpoint_files(run_dir, k) for k in kinds)


def _read_mapping(path: Path, parse: Callable[[str], Any]) -> dict[str, Any]:
    try:
        data = parse(path.read_text())
    except Exception:  # missing, unreadable, or not JSON/YAML: it says nothing about its writer
        return {}
    return data if isinstance(data, dict) else {}


def _writer_of_record(record: dict[str, Any]) -> str | None:
    """The trainer whose ``config.yaml`` or ``results.json`` ``record`` is (None where it does not say)."""
    if record.get("method") == "stl_sb3_sac":
        return STL.name
    if "data" in record and "model" in record:
        return VISION.name
    if "critic_balancer" in record or ("sac" in record and "env" in record):
        return RL.name
    return None


def written_by(run_dir: Path) -> str | None:
    """Which trainer wrote ``run_dir`` (``"rl"``, ``"vision"``, ``"stl"``), or None for a directory no trainer
    wrote. ``run.json`` says it; for a directory of an older release it is inferred from the files: vision's
    ``checkpoint.pt``, the single-task reference's ``checkpoints/state.pt`` (or ``state.json``) or
    ``checkpoints/<task>/model.zip``, the multi-task trainer's ``checkpoints/step_*.pt``/``last.txt``, else
    ``config.yaml`` or ``results.json``."""
    run_dir = Path(run_dir)
    recorded = _read_mapping(run_dir / RUN_FILE, json.loads).get("trainer")
    if recorded in TRAINERS:
        return str(recorded)
    if has_checkpoint(run_dir, VISION):
        return VISION.name
    if has_checkpoint(run_dir, STL) or any(run_dir.glob("checkpoints/*/model.zip")):
        return STL.name
    if has_checkpoint(run_dir, RL):
        return RL.name
    import yaml

    for name, parse in (("config.yaml", yaml.safe_load), ("results.json", json.loads)):
        writer = _writer_of_record(_read_mapping(run_dir / name, parse))
        if writer is not None:
            return writer
    return None


def _finished(run_dir: Path) -> bool | None:
    """Whether ``results.json`` says the run finished (None: there is no readable one)."""
    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = _read_mapping(path, json.loads)
    return results.get("complete", results.get("finished", True)) is not False


def check_run_dir(run_dir: Path, kind: TrainerKind, resume: bool) -> None:
    """The run-directory rule for a start of ``kind`` (a resume when ``resume``); reads only.

    Raises:
        ConfigError: one line; the directory was written by another trainer, or a fresh start would overwrite
            a checkpoint or ``results.json``.
        NothingToResume: a resume finds no checkpoint of ``kind``.
    """
    run_dir = Path(run_dir)
    where = repr(str(run_dir))
    writer = written_by(run_dir)
    if writer is not None and writer != kind.name:
        other = TRAINERS[writer]
        raise ConfigError(
            f"run directory {where} was written by {other.script} ({other.description}), not by {kind.script}; "
            f"{kind.script} neither continues nor overwrites it: use {kind.run_name_hint()} (or continue it with "
            f"{other.script})"
        )
    checkpoints = checkpoint_files(run_dir, kind)
    if resume:
        if not checkpoints:
            why = (
                f"it has no {' or '.join(kind.checkpoints)}"
                if run_dir.is_dir()
                else f"the directory does not exist: check {kind.run_name_flag} and the log directory"
            )
            raise NothingToResume(
                f"{kind.resume_flag}: nothing to resume in {where}: no checkpoint ({why}); start it without "
                f"{kind.resume_flag}"
            )
        return
    finished = _finished(run_dir)
    if finished:
        raise ConfigError(
            f"run directory {where} already holds a finished run (results.json); use {kind.run_name_hint()}, "
            "or delete the directory to start over"
        )
    if checkpoints or finished is not None:
        found = ", ".join(str(p.relative_to(run_dir)) for p in checkpoints[:2]) or "results.json"
        raise ConfigError(
            f"run directory {where} already has checkpoints ({found}); pass {kind.resume_flag} to continue it, "
            f"{kind.run_name_hint()}, or delete the directory to start over"
        )


def claim_run_dir(run: LeasedRun, run_dir: Path, kind: TrainerKind, resume: bool, check: Callable[[], T]) -> T:
    """Start ``run`` in ``run_dir``: the rule (:func:`check_run_dir`) and the trainer's own ``check`` (its resume
    configuration check; it returns what the trainer resumes from), then the lease
    (:meth:`~mtrl.rundir.LeasedRun._take_run_dir`), then both again under the lease
    (:func:`~mtrl.rundir.recheck`: what a holder we waited for wrote counts), then ``run.json``. Returns what
    ``check`` returned under the lease. A resume that finds nothing while a live process holds the directory
    (it has not checkpointed yet) is left to the lease: busy (exit 75) or, with ``MTRL_LEASE_WAIT``, checked
    again once that process is done. Anything raised after the lease gives the lease back."""

    def rule() -> T:
        check_run_dir(run_dir, kind, resume)
        return check()

    try:
        rule()
    except NothingToResume:
        if RunLease(run_dir).live_holder() is None:
            raise
    run._take_run_dir(run_dir)
    with run._released_on_error():
        found = recheck(rule)
        write_json(Path(run_dir) / RUN_FILE, {"format": _RUN_FORMAT, "trainer": kind.name, "script": kind.script})
    return found


def resume_command(kind: TrainerKind, argv: Sequence[str], run_dir: Path) -> str:
    """The command that resumes the run in ``run_dir``: ``python <script>`` with ``argv`` (the arguments the run
    was started with), its run name set to ``run_dir``'s and the resume flag added."""
    run_dir = Path(run_dir)
    args: list[str] = []
    if kind.resume_flag.startswith("--"):  # argparse flags: --run-name X --resume
        skip = False
        for arg in argv:
            if skip:
                skip = False
            elif arg in (kind.run_name_flag, "--logdir"):
                skip = True
            elif arg != kind.resume_flag and not arg.startswith((f"{kind.run_name_flag}=", "--logdir=")):
                args.append(arg)
        args += ["--logdir", str(run_dir.parent), kind.run_name_flag, run_dir.name, kind.resume_flag]
    else:  # dotted overrides: logdir=... run_name=X resume=true
        args = [a for a in argv if a.split("=", 1)[0] not in ("logdir", kind.run_name_flag, "resume")]
        args += [f"logdir={run_dir.parent}", f"{kind.run_name_flag}={run_dir.name}", kind.resume_flag]
    return " ".join(["python", kind.script, *(_quoted(a) for a in args)])


def _quoted(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
