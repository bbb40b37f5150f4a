"""Which checkpoint a resume (or an evaluation) continues from: the newest one that loads.

:func:`checkpoint_candidates` lists a trainer's checkpoints newest first, the one lookup of every trainer, a
resume and ``scripts/evaluate.py``: for the multi-task trainer the file ``checkpoints/last.txt`` names, then
``checkpoints/step_*.pt`` by decreasing step; for the others the files of their
:attr:`~mtrl.runstart.TrainerKind.checkpoints` in that order (the vision trainer: ``checkpoint.pt``, then
``checkpoint.prev.pt``). :func:`load_newest_intact` loads the first that is intact. A truncated or corrupt one
(:class:`~mtrl.checkpoint_io.CheckpointError`: a disk that filled, a copy cut short) is named in a note that the
trainer prints and keeps in its run notes, and the next one is used; only when none loads does the resume
fail, with one line naming every file it tried. A file refused as untrusted
(:class:`~mtrl.checkpoint_io.UntrustedCheckpointError`: it asks for more than plain data) is not damage but
tampering, and stops the resume at once with its one line; so does a file another trainer wrote
(:class:`~mtrl.checkpoint_io.ForeignCheckpointError`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mtrl.checkpoint_io import CheckpointError, ForeignCheckpointError, UntrustedCheckpointError

if TYPE_CHECKING:
    from mtrl.runstart import TrainerKind

__all__ = [
    "POINTER",
    "checkpoint_candidates",
    "latest_checkpoint",
    "load_newest_intact",
    "step_file_name",
]

T = TypeVar("T")

#: The multi-task trainer's pointer file, beside its step files: the name of the newest complete one.
POINTER = "last.txt"
_STEP_FILE = re.compile(r"step_(\d+)\.pt")


def step_file_name(step: int) -> str:
    """The multi-task trainer's checkpoint file of ``step``: ``step_<step, 9 digits>.pt`` (names sort by step)."""
    return f"step_{step:09d}.pt"


def _step_files_newest_first(run_dir: Path) -> tuple[list[Path], list[str]]:
    """The multi-task trainer's order, in a run directory or its ``checkpoints/`` folder: the file ``last.txt``
    names, then every ``step_<n>.pt`` by decreasing ``n``; where ``last.txt`` is missing or names a file that is
    gone, the highest ``step_<n>.pt`` comes first and a note says so."""
    for folder in (run_dir / "checkpoints", run_dir):
        numbered = ((_STEP_FILE.fullmatch(f.name), f) for f in folder.glob("step_*.pt"))
        steps = [f for _, f in sorted(((int(m.group(1)), f) for m, f in numbered if m), reverse=True)]
        pointer = folder / POINTER
        named = folder / pointer.read_text().strip() if pointer.is_file() else None
        if named is not None and named.is_file():
            return [named, *(f for f in steps if f != named)], []
        if steps:
            why = f"names {named.name}, which is missing" if named is not None else "is missing"
            return steps, [f"{pointer} {why}: using the highest step file, {steps[0].name}"]
    return [], []


#: Trainers whose checkpoints are not simply their ``TrainerKind.checkpoints`` in order, by ``TrainerKind.name``.
_ORDERS: dict[str, Callable[[Path], tuple[list[Path], list[str]]]] = {"rl": _step_files_newest_first}


def checkpoint_candidates(path: str | Path, kind: TrainerKind) -> tuple[list[Path], list[str]]:
    """The checkpoints of ``kind`` in a run directory, newest first, and notes on the lookup (a resume uses the
    first that loads, :func:`load_newest_intact`).

    The multi-task trainer (``"rl"``): the file ``checkpoints/last.txt`` names, then every
    ``checkpoints/step_<n>.pt`` by decreasing ``n`` (``path`` may also be the ``checkpoints/`` folder); where
    ``last.txt`` is missing or names a file that is gone, the highest step file comes first and a note says so.
    The others: the files matching each of ``kind.checkpoints`` in turn (the vision trainer: ``checkpoint.pt``,
    then ``checkpoint.prev.pt``). A file is its own only candidate. Reads only.
    """
    p = Path(path)
    if p.is_file():
        return [p], []
    order = _ORDERS.get(kind.name)
    if order is not None:
        return order(p)
    found: list[Path] = []
    for pattern in kind.checkpoints:
        found += [f for f in sorted(p.glob(pattern), reverse=True) if f.is_file() and f not in found]
    return found, []


def latest_checkpoint(path: str | Path, kind: TrainerKind) -> Path:
    """The newest checkpoint of ``kind`` that ``path`` (a run directory or a checkpoint file) names: the first of
    :func:`checkpoint_candidates`.

    Raises:
        FileNotFoundError: no checkpoint there (the message names what was looked for).
    """
    candidates, _ = checkpoint_candidates(path, kind)
    if not candidates:
        raise FileNotFoundError(f"no checkpoint in {str(path)!r} (looked for {' and '.join(kind.checkpoints)})")
    return candidates[0]


def load_newest_intact(candidates: Sequence[Path], load: Callable[[Path], T]) -> tuple[Path, T, list[str]]:
    """``(path, load(path), notes)`` for the first of ``candidates`` (newest first) that loads; ``notes`` say
    which newer ones were skipped and why.

    Raises:
        CheckpointError: there is no candidate, or none loads (one line naming each and its problem).
    """
    if not candidates:
        raise CheckpointError("no checkpoint to resume from")
    problems: list[str] = []
    for path in candidates:
        try:
            value = load(path)
        except (UntrustedCheckpointError, ForeignCheckpointError):
            raise  # tampered or foreign, not damaged: stop rather than resume from an older file
        except CheckpointError as err:
            problems.append(str(err))
            continue
        notes = [f"{problem}: skipped it, resumed from the older intact {path.name}" for problem in problems]
        return path, value, notes
    raise CheckpointError(
        f"no intact checkpoint to resume from ({'; '.join(problems)}); start the run again without resuming, "
        "in a new run directory"
    )
