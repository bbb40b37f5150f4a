"""The Python 3.11 compatibility rewrite of a copy of ``rainx0r/metaworld-algorithms`` (see README.md).

The reference needs Python >= 3.12 for three things only: PEP 695 ``type X = ...`` aliases (``types.py``,
one of them recursive), ``typing.override`` (3.12's ``typing``; ``typing_extensions`` has the same
decorator) and nothing else that blocks import of the MTSAC update. A fourth rewrite is not about the
Python version: ``monitoring/utils.py`` imports ``wandb`` at module level for its ``log`` function, which
the update never calls; the import moves into that function so the update imports without wandb.
Every rewrite is a plain text substitution that must match exactly once, so a reference at another
commit fails loudly instead of being half-patched.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

__all__ = ["REWRITES", "make_compat_copy"]

#: (file relative to the package, exact text, replacement, why)
REWRITES: list[tuple[str, str, str, str]] = [
    ("types.py", "type LogDict = ", "LogDict: TypeAlias = ", "PEP 695 alias -> TypeAlias"),
    ("types.py", "type AuxPolicyOutputs = ", "AuxPolicyOutputs: TypeAlias = ", "PEP 695 alias -> TypeAlias"),
    ("types.py", "type LayerActivationsDict = ", "LayerActivationsDict: TypeAlias = ", "PEP 695 alias -> TypeAlias"),
    (
        "types.py",
        'type Intermediates = dict[str, tuple[LayerActivations, ...] | "Intermediates"]',
        'Intermediates: TypeAlias = "dict[str, tuple[LayerActivations, ...] | Intermediates]"',
        "recursive PEP 695 alias -> string TypeAlias (a str in a runtime `|` is a TypeError)",
    ),
    ("types.py", "type GymVectorEnv = ", "GymVectorEnv: TypeAlias = ", "PEP 695 alias -> TypeAlias"),
    ("types.py", "type EnvCheckpoint = ", "EnvCheckpoint: TypeAlias = ", "PEP 695 alias -> TypeAlias"),
    (
        "types.py",
        "from typing import Any, NamedTuple, Protocol, TypedDict\n",
        "from typing import Any, NamedTuple, Protocol, TypeAlias, TypedDict\n",
        "TypeAlias for the aliases above",
    ),
    (
        "monitoring/utils.py",
        "import wandb\n",
        "",
        "wandb only for log(), which the update never calls: imported there instead",
    ),
    (
        "monitoring/utils.py",
        "def log(logs: dict, step: int) -> None:\n",
        "def log(logs: dict, step: int) -> None:\n    import wandb\n\n",
        "wandb imported where it is used",
    ),
]

#: ``from typing import ..., override, ...`` in these modules: ``override`` comes from typing_extensions.
_OVERRIDE_IMPORT = re.compile(r"^from typing import (.*)\boverride\b(.*)$", re.MULTILINE)


def _move_override(text: str) -> tuple[str, int]:
    """``from typing import A, override, B`` -> ``from typing import A, B`` + typing_extensions' override."""

    def fix(match: re.Match[str]) -> str:
        names = [n.strip() for n in (match.group(1) + match.group(2)).split(",") if n.strip()]
        line = f"from typing import {', '.join(names)}\n" if names else ""
        return line + "from typing_extensions import override"

    return _OVERRIDE_IMPORT.subn(fix, text)


def make_compat_copy(reference: Path, dest: Path) -> list[str]:
    """Copy ``reference/metaworld_algorithms`` to ``dest/metaworld_algorithms`` and apply the rewrites.

    Returns one line per rewrite applied (for the fixture's metadata). Raises ValueError when a rewrite
    does not match exactly once (a reference at another commit).
    """
    src = reference / "metaworld_algorithms"
    if not src.is_dir():
        raise ValueError(f"{reference} has no metaworld_algorithms/: pass a checkout of rainx0r/metaworld-algorithms")
    pkg = dest / "metaworld_algorithms"
    shutil.copytree(src, pkg)
    applied: list[str] = []
    for rel, old, new, why in REWRITES:
        path = pkg / rel
        text = path.read_text()
        if text.count(old) != 1:
            raise ValueError(f"compat rewrite of {rel} expects {old!r} exactly once, found {text.count(old)}")
        path.write_text(text.replace(old, new))
        applied.append(f"{rel}: {why}")
    for path in sorted(pkg.rglob("*.py")):
        text, count = _move_override(path.read_text())
        if count:
            path.write_text(text)
            applied.append(f"{path.relative_to(pkg)}: typing.override -> typing_extensions.override")
    return applied
