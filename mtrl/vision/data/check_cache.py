"""A record that a data folder passed its full start-up check, so that a large data set is read once, not at
every start.

The record is a small JSON file, ``.mtrl_data_check.json``, beside the data (in ``{root}/{split}/``), or, when
that folder is not writable, in ``$XDG_CACHE_HOME/mtrl/data_checks/`` (default ``~/.cache``), named by a hash
of the folder's path. It lists the keys of the checks that passed; a key (:func:`check_key`) hashes what was
checked (the check's own description: tasks, classes, format) and the name, size and modification time of
every file read. Any change to a file, a file added or removed, or another check gives another key, so the
data is checked again.

Files modified less than :data:`RACY_SECONDS` before the check are not vouched for (no key): a rewrite within
the file system's timestamp granularity could keep the same size and time. Old files, as a downloaded data set
has, are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from mtrl.atomic import write_text

__all__ = ["CACHE_NAME", "RACY_SECONDS", "cache_files", "check_key", "has_passed", "record_pass"]

#: the record's file name beside the data.
CACHE_NAME = ".mtrl_data_check.json"
#: files younger than this (seconds) when checked are not vouched for by the record.
RACY_SECONDS = 2.0
#: keys kept per folder (one per distinct check of it, e.g. task subsets), newest last.
_KEEP = 8


def check_key(files: Sequence[Path], what: str) -> str | None:
    """The key of checking ``files`` with the check ``what`` describes; None when a file is too recent (or
    gone) to be vouched for."""
    digest = hashlib.sha256(what.encode())
    newest_allowed = time.time_ns() - int(RACY_SECONDS * 1e9)
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            return None
        if stat.st_mtime_ns > newest_allowed:
            return None
        digest.update(f"\0{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_files(folder: Path) -> list[Path]:
    """Where the record of ``folder`` may be: beside the data, then in the user's cache folder."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtrl" / "data_checks"
    name = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return [folder / CACHE_NAME, user / f"{name}.json"]


def _keys(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    keys = data.get("passed") if isinstance(data, dict) else None
    return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []


def has_passed(folder: Path, key: str) -> bool:
    """Whether a record of ``folder`` holds ``key``."""
    return any(key in _keys(path) for path in cache_files(folder))


def record_pass(folder: Path, key: str) -> Path | None:
    """Add ``key`` to the record of ``folder`` (beside the data if it can be written, else in the user's
    cache folder); returns the file written, None when neither could be (the data is then checked again at
    the next start, nothing else changes)."""
    for path in cache_files(folder):
        keys = [*[k for k in _keys(path) if k != key][-(_KEEP - 1) :], key]
        with contextlib.suppress(OSError):  # a read-only data folder: try the next place
            write_text(path, json.dumps({"format": 1, "passed": keys}, indent=1))
            return path
    return None
