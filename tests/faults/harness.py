"""The fault-and-bad-input matrix's tools: call a script's ``main(argv)`` in-process, snapshot a directory,
and read the one-line error a refusal owes the user."""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import load_script

__all__ = ["CliResult", "call", "one_line", "snapshot"]


@dataclass(frozen=True)
class CliResult:
    """What a script's ``main`` returned and printed."""

    code: int
    out: str
    err: str


def call(script: str, *argv: str) -> CliResult:
    """``scripts/<script>.py ARGV`` run in this process (no interpreter start-up): its exit status (a
    ``SystemExit`` raised inside counts as returned) and its captured stdout and stderr."""
    main = load_script(script).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse errors exit from inside main
            code = exc.code if isinstance(exc.code, int) else 1
    return CliResult(int(code), out.getvalue(), err.getvalue())


def one_line(text: str) -> str:
    """The single non-empty line of ``text``; fails (with the whole text) if there are more or none."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path → sha256 of its bytes); empty for a missing directory."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
