"""Which checkpoint a resume continues from: the newest one that loads.

A trainer lists its checkpoints newest first (the multi-task trainer: the file ``checkpoints/last.txt`` names,
then ``checkpoints/step_*.pt`` by step; the vision trainer: ``checkpoint.pt``, then ``checkpoint.prev.pt``) and
:func:`load_newest_intact` loads the first that is intact. A truncated or corrupt one
(:class:`~mtrl.checkpoint_io.CheckpointError`: a disk that filled, a copy cut short) is named in a note that the
trainer prints and keeps in its run notes, and the next one is used; only when none loads does the resume
fail, with one line naming every file it tried. A file refused as untrusted
(:class:`~mtrl.checkpoint_io.UntrustedCheckpointError`: it asks for more than plain data) is not damage but
tampering, and stops the resume at once with its one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from mtrl.checkpoint_io import CheckpointError, UntrustedCheckpointError

__all__ = ["load_newest_intact"]

T = TypeVar("T")


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
        except UntrustedCheckpointError:
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
