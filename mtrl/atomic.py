"""Atomic files: a kill in mid-write leaves the previous file intact.

:func:`atomic_write` writes to a temporary name in the same folder, flushes it to disk and renames it over
the target (``os.replace`` is atomic on POSIX file systems); :func:`write_text`, :func:`write_json` and
:func:`save_torch` are its text, JSON and ``torch.save`` forms. :func:`remove_stale_temporaries` deletes
what killed writers left behind.

This module imports nothing of the project, so any module may use it (``mtrl.config`` saves
``config.yaml`` with it; ``mtrl.rundir`` re-exports it).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "remove_stale_temporaries", "save_torch", "write_json", "write_text"]


def atomic_write(path: str | Path, write: Callable[[Path], object], previous: str | Path | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path`` (same suffix, so writers that insist on
    one — SB3's ``.zip`` — are happy), then rename it over ``path``. Returns ``path``.

    With ``previous``, the file at ``path`` (if any) is renamed to ``previous`` just before, so the last
    complete version survives a new one that turns out unreadable (vision's ``checkpoint.prev.pt``; a kill
    between the two renames leaves ``previous`` only). A write that fails (``ENOSPC``, ``EACCES``, ...) removes
    the temporary and leaves ``path`` as it was; its ``OSError`` names ``path`` if the writer's named no file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        _fsync(tmp)  # the data is on disk before the rename makes it the file (a node that loses power)
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a directory that cannot be written has no temporary either
    return path


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


#: What :func:`atomic_write` names its temporaries: ``.<stem>.<pid>.tmp<suffix>``.
_TEMPORARY = re.compile(r"^\..+\.\d+\.tmp(\.[^.]+)?$")


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporaries that writers killed in mid-write left in ``run_dir`` (a checkpoint's can be
    hundreds of MB); returns them. Only safe while holding the run directory's lease
    (:class:`mtrl.lease.RunLease` calls it when it takes the lease)."""
    removed = []
    for tmp in run_dir.rglob(".*.tmp*"):
        if tmp.is_file() and _TEMPORARY.match(tmp.name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (``results.json``, ``state.json``)."""
    return write_text(path, json.dumps(data, indent=2))


def save_torch(obj: Any, path: str | Path, previous: str | Path | None = None) -> Path:
    """``torch.save(obj, path)`` atomically (checkpoints; ``previous``: see :func:`atomic_write`). It writes
    through a Python file object, so a full disk raises ``OSError(ENOSPC)`` (torch's own file writer raises
    a ``RuntimeError`` that does not say why)."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    return atomic_write(path, write, previous)
