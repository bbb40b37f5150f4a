"""Shared pieces of the script tests: import a script as a module, run one as a subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` imported as the module ``script_<name>`` (in-process calls skip interpreter
    start-up; the prefix keeps it from shadowing an installed package of the same name)."""
    module_name = f"script_{name}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python scripts/<name>.py ARGS`` from the repository root on one OpenMP thread, output captured."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def flat_sections(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A training config as a flat mapping: the ``env`` and ``sac`` sections' keys as ``env.<key>``/``sac.<key>``,
    every other key as it is (how the preset tests compare presets key by key)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key in ("env", "sac"):
            out.update(flat_sections(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out
