"""The fault-and-bad-input matrix: every fault and bad input a user reported (issue 19), and the ones that
already held, through the real command-line scripts. Each refusal must exit with its status, say one line
that names what is wrong, and leave the run directory exactly as it was.

The rest of the matrix needs more than a command line and lives beside the code it checks:

* signals (SIGINT/SIGTERM → 130/143, resumed to the uninterrupted result), a truncated latest checkpoint, a
  missing ``last.txt``, a disk that fills while a checkpoint is written, and sweeps reading 130/143 as
  resumable: ``tests/test_interrupt.py``;
* a busy directory before its holder's first checkpoint (75), unwritable and read-only run directories, the
  run-directory rule for each trainer through the library: ``tests/test_run_rule.py``;
* malicious files in every loader, old checkpoints resuming bit for bit: ``tests/test_trusted_loading.py``;
* vision data checked in full at start-up, sweep's and aggregate's checks, evaluate's ``out=``:
  ``tests/test_bad_inputs.py``; the lease refusing a second writer: ``tests/test_single_writer.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faults.conftest import TOY, VISION
from tests.faults.harness import call, one_line, snapshot
from tests.helpers import ROOT


@dataclass(frozen=True)
class Case:
    """One row: run ``script`` with ``argv`` (``{logdir}``, ``{tmp}`` filled in) on a copy of the finished
    run ``run`` (after ``damage``), expect exit ``code`` and one stderr line matching ``line``; the run
    directory must be unchanged."""

    script: str
    argv: tuple[str, ...]
    code: int
    line: str
    run: str | None = None
    damage: Callable[[Path], None] | None = None
    #: Directories (relative to tmp) that must not exist afterwards (a refused start creates nothing).
    absent: tuple[str, ...] = field(default_factory=tuple)


def _remove_checkpoints(run: Path) -> None:
    for ckpt in (run / "checkpoints").glob("*"):
        ckpt.unlink()
    (run / "checkpoints").rmdir()


def _bad_yaml(tmp: Path) -> None:
    (tmp / "bad.yaml").write_text("sac:\n  hidden_sizes: [64,\n")


def _empty_yaml(tmp: Path) -> None:
    (tmp / "empty.yaml").write_text("")


def _dup_yaml(tmp: Path) -> None:
    (tmp / "dup.yaml").write_text((ROOT / TOY[0]).read_text() + "seed: 3\n")


RL = (*TOY, "logdir={logdir}")
VIS = (*VISION, "logdir={logdir}")

CASES: dict[str, Case] = {
    # --- data loss: one rule for every run directory -------------------------------------------------
    "vision fresh over a finished run": Case(
        "train_vision", (*VIS, "run_name=vision"), 2, r"vision.*finished run \(results\.json\).*new run_name", "vision"
    ),
    "vision resume with a mistyped name": Case(
        "train_vision",
        (*VIS, "run_name=visoin", "resume=true"),
        2,
        r"resume=true: nothing to resume in .*visoin.*without resume=true",
        absent=("runs/visoin",),
    ),
    "vision resume of an RL run": Case(
        "train_vision", (*VIS, "run_name=rl", "resume=true"), 2, r"scripts/train\.py|multi-task SAC", "rl"
    ),
    "vision fresh over an RL run": Case(
        "train_vision", (*VIS, "run_name=rl"), 2, r"scripts/train\.py|multi-task SAC", "rl"
    ),
    "RL fresh over a vision run": Case("train", (*RL, "run_name=vision"), 2, r"train_vision|vision", "vision"),
    "RL resume of a vision run": Case(
        "train", (*RL, "run_name=vision", "resume=true"), 2, r"train_vision|vision", "vision"
    ),
    "RL fresh over a finished run": Case(
        "train", (*RL, "run_name=rl"), 2, r"rl.*finished run \(results\.json\).*new run_name", "rl"
    ),
    "RL fresh over results.json only": Case(
        "train", (*RL, "run_name=rl"), 2, r"results\.json", "rl", _remove_checkpoints
    ),
    "RL resume with a mistyped name": Case(
        "train",
        (*RL, "run_name=lr", "resume=true"),
        2,
        r"resume=true: nothing to resume in .*lr.*without resume=true",
        absent=("runs/lr",),
    ),
    "single-task reference over an RL run": Case(
        "train_stl",
        ("--logdir", "{logdir}", "--run-name", "rl", "--steps", "10"),
        2,
        r"scripts/train\.py|multi-task SAC",
        "rl",
    ),
    "single-task reference resuming a vision run": Case(
        "train_stl", ("--logdir", "{logdir}", "--run-name", "vision", "--resume"), 2, r"train_vision|vision", "vision"
    ),
    "single-task reference resume with a mistyped name": Case(
        "train_stl",
        ("--logdir", "{logdir}", "--run-name", "nope", "--resume"),
        2,
        r"nothing to resume",
        absent=("runs/nope",),
    ),
    # --- tracebacks where a line is owed -------------------------------------------------------------
    "YAML syntax error in an override (RL)": Case(
        "train", (*RL, "run_name=x", "sac.hidden_sizes=[64,"), 2, r"sac\.hidden_sizes", absent=("runs/x",)
    ),
    "YAML syntax error in an override (vision)": Case(
        "train_vision", (*VIS, "run_name=x", "model.width=[16,"), 2, r"model\.width", absent=("runs/x",)
    ),
    "YAML syntax error in a file (RL)": Case(
        "train", ("{tmp}/bad.yaml", "logdir={logdir}"), 2, r"bad\.yaml", damage=_bad_yaml
    ),
    "YAML syntax error in a file (vision)": Case(
        "train_vision", ("{tmp}/bad.yaml", "logdir={logdir}"), 2, r"bad\.yaml", damage=_bad_yaml
    ),
    "empty YAML file": Case("train", ("{tmp}/empty.yaml", "logdir={logdir}"), 2, r"empty\.yaml", damage=_empty_yaml),
    "duplicate override": Case("train", (*RL, "run_name=x", "seed=1", "seed=2"), 2, r"seed", absent=("runs/x",)),
    "duplicate key in a YAML file": Case(
        "train", ("{tmp}/dup.yaml", "logdir={logdir}", "run_name=x"), 2, r"seed", damage=_dup_yaml, absent=("runs/x",)
    ),
    "log directory under a file": Case(
        "train",
        (*TOY, "logdir={tmp}/afile/logs", "run_name=x"),
        2,
        r"afile",
        damage=lambda t: (t / "afile").write_text(""),
    ),
    "vision log directory under a file": Case(
        "train_vision",
        (*VISION, "logdir={tmp}/afile/logs", "run_name=x"),
        2,
        r"afile",
        damage=lambda t: (t / "afile").write_text(""),
    ),
    # --- what already held -------------------------------------------------------------------------
    "unknown config key": Case("train", (*RL, "run_name=x", "sac.widht=3"), 2, r"sac\.widht", absent=("runs/x",)),
    "unknown balancer": Case("train", (*RL, "run_name=x", "balancer=nope"), 2, r"nope", absent=("runs/x",)),
    "unknown vision balancer": Case(
        "train_vision", (*VIS, "run_name=x", "balancer.name=nope"), 2, r"nope", absent=("runs/x",)
    ),
    "sweep with an unknown balancer": Case(
        "sweep",
        ("scripts/train.py", TOY[0], "--balancers", "ew", "nope", "--seeds", "0", "--root", "{logdir}/sweep"),
        2,
        r"nope",
        absent=("runs/sweep",),
    ),
    "evaluate a vision run": Case("evaluate", ("{logdir}/vision",), 2, r"vision", "vision"),
    "evaluate a missing path": Case("evaluate", ("{logdir}/nothing",), 2, r"nothing"),
    "evaluate a non-checkpoint file": Case("evaluate", ("{logdir}/rl/config.yaml",), 2, r"config\.yaml", "rl"),
    "evaluate into a missing folder": Case(
        "evaluate",
        ("{logdir}/rl", "out={tmp}/afile/x.json"),
        2,
        r"afile",
        "rl",
        lambda r: (r.parents[1] / "afile").write_text(""),
    ),
}


def _fill(arg: str, tmp: Path) -> str:
    return arg.replace("{logdir}", str(tmp / "runs")).replace("{tmp}", str(tmp))


@pytest.mark.parametrize("name", list(CASES))
def test_refusal(name: str, run_copy: Callable[[str], Path], tmp_path: Path) -> None:
    case = CASES[name]
    (tmp_path / "runs").mkdir(exist_ok=True)
    run = run_copy(case.run) if case.run else None
    if case.damage is not None:
        case.damage(run if run is not None else tmp_path)
    before = snapshot(tmp_path / "runs")
    result = call(case.script, *(_fill(a, tmp_path) for a in case.argv))
    assert result.code == case.code, f"{name}: exit {result.code}\n{result.err}"
    assert re.search(case.line, one_line(result.err)), f"{name}: {result.err}"
    assert snapshot(tmp_path / "runs") == before, f"{name}: the run directories changed"
    for path in case.absent:
        assert not (tmp_path / path).exists(), f"{name}: {path} was created"
