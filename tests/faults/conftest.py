"""Finished runs made once per test session; each matrix case works on its own copy."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.harness import call

#: The toy multi-task SAC preset, short (the finished run: 60 vector steps, one checkpoint at the end, about 6 s).
TOY = ("configs/toy_sac.yaml", "sac.warmup_steps=20", "eval_every=0", "progress=false")
#: A synthetic dense-vision run: 4 steps on 16 images (about 8 s).
VISION = (
    "configs/vision/synthetic.yaml",
    "optim.steps=4",
    "eval_every=2",
    "data.train_length=16",
    "data.val_length=8",
)


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"rl": <toy run dir>, "vision": <synthetic vision run dir>}``, trained to the end once."""
    logdir = tmp_path_factory.mktemp("finished")
    made = {
        "rl": call("train", *TOY, "total_steps=60", f"logdir={logdir}", "run_name=rl"),
        "vision": call("train_vision", *VISION, f"logdir={logdir}", "run_name=vision"),
    }
    for kind, result in made.items():
        assert result.code == 0, f"{kind} run failed: {result.err}"
    return {kind: logdir / kind for kind in made}


@pytest.fixture
def run_copy(finished_runs: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """``run_copy("rl")``: a fresh copy of a finished run, as ``<tmp_path>/runs/<kind>``."""

    def copy(kind: str) -> Path:
        dest = tmp_path / "runs" / kind
        shutil.copytree(finished_runs[kind], dest)
        return dest

    return copy
