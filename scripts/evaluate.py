"""Evaluate a trained multi-task SAC checkpoint and print a per-task success table.

    python scripts/evaluate.py RUN_DIR_OR_CHECKPOINT [episodes=N] [out=PATH.json] [device=cpu] [config=PATH]

RUN_DIR_OR_CHECKPOINT is either a run directory of ``scripts/train.py`` (its latest checkpoint: the
one ``checkpoints/last.txt`` names, else the highest ``checkpoints/step_*.pt``) or a checkpoint
file (``.pt``). The run's ``config.yaml`` is read from the run directory, or for a checkpoint file
from its folder or the folder above (``<run>/checkpoints/step_*.pt``); ``config=PATH`` names it
explicitly. Evaluates on a freshly built env of the run's benchmark, protocol and seed (so
mtrl-legacy's fixed goals are the training goals) with the deterministic policy, ``episodes``
episodes per task (default: the run's ``eval_episodes``, else the protocol's). Prints the table and
writes it as JSON to ``out`` (default ``<run dir>/eval_<step>.json``; its missing folders are created, and a
path that cannot be written, e.g. below a file, is refused before anything is evaluated): ``checkpoint``, ``step``,
``benchmark``, ``protocol``, ``episodes``, ``success_mean``, ``success`` and ``return`` per task.

Every usage problem (missing or unreadable checkpoint, no config, bad option) prints one line
naming it and the fix, and exits with status 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OPTIONS = ("episodes", "out", "device", "config")


class UsageError(Exception):
    """A problem with the command line or the files it names; the message says what to do."""


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file from a run directory, its ``checkpoints/`` folder or a file path: the library's
    lookup (:func:`agents.checkpoint.latest_checkpoint`, the one a resume uses): the file ``last.txt`` names,
    else the ``step_<n>.pt`` with the largest ``n``.
    """
    from agents.checkpoint import latest_checkpoint

    if not path.exists():
        raise UsageError(
            f"{str(path)!r} does not exist: pass a run directory of scripts/train.py (e.g. runs/MT10_ew_s0_...) "
            f"or one of its checkpoints/step_*.pt files"
        )
    try:
        return latest_checkpoint(path)
    except FileNotFoundError:
        raise UsageError(
            f"no checkpoint in {str(path)!r} (looked for checkpoints/last.txt and checkpoints/step_*.pt): "
            f"train with scripts/train.py first (a checkpoint is written at the end, every checkpoint_every "
            f"steps and on Ctrl-C) or pass a .pt file"
        ) from None


def find_config(ckpt: Path, given: str | None) -> Path:
    """The run's ``config.yaml``: ``given``, else next to the checkpoint or one folder up."""
    if given is not None:
        cfg = Path(given)
        if not cfg.is_file():
            raise UsageError(f"config={given!r} does not exist: pass the run's config.yaml")
        return cfg
    for folder in (ckpt.parent, ckpt.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise UsageError(
        f"no config.yaml next to {str(ckpt)!r} or in the folder above it: pass config=<the run's config.yaml>"
    )


def parse_options(items: list[str]) -> dict[str, str]:
    """``key=value`` options; unknown keys, repeated keys and bare words are usage errors."""
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in OPTIONS:
            raise UsageError(f"bad argument {item!r}; valid options: " + " ".join(f"{k}=..." for k in OPTIONS))
        if key in options:
            raise UsageError(f"option {key!r} given twice")
        options[key] = value
    if "episodes" in options:
        text = options["episodes"]
        if not re.fullmatch(r"\d+", text.strip()) or int(text) < 1:
            raise UsageError(f"bad value {text!r} for episodes: expected a positive integer (e.g. episodes=10)")
    if "out" in options:
        check_out(options["out"])
    return options


def check_out(text: str) -> Path:
    """The file ``out=`` names, checked before anything is evaluated: not a folder, and below a writable
    folder (missing folders on the way are created when the table is written; nothing is created here)."""
    out = Path(text)
    if not text.strip() or out.is_dir():
        raise UsageError(f"out={text!r} is not a file path: pass out=<file>.json (e.g. out=runs/eval/table.json)")
    existing = out.parent
    while not existing.exists():  # the nearest folder on the way that exists (".", "/" at the latest)
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"cannot write out={text!r}: {str(existing)!r} is a file, not a folder: pass another path")
    blocking = out if out.exists() else existing  # what the write needs to change
    if not os.access(blocking, os.W_OK):
        raise UsageError(f"cannot write out={text!r}: {str(blocking)!r} is not writable: pass another path")
    return out


def evaluate_checkpoint(target: str, options: dict[str, str]) -> dict[str, Any]:
    """Load the checkpoint that ``target`` names, evaluate it and return the table (see module doc)."""
    import dataclasses

    import yaml

    from agents.checkpoint import load_checkpoint
    from agents.config import TrainConfig
    from agents.sac import EvalAgent, build_agent
    from agents.trainer import build_envs
    from envs import evaluate
    from mtrl.config import ConfigError, load_config
    from mtrl.device import resolve_device

    ckpt_path = find_checkpoint(Path(target))
    cfg_path = find_config(ckpt_path, options.get("config"))
    raw = yaml.safe_load(cfg_path.read_text()) or {}
    if isinstance(raw, dict) and raw.get("method") == "stl_sb3_sac":
        raise UsageError(
            f"{str(cfg_path.parent)!r} is a scripts/train_stl.py run (one stable-baselines3 SAC per task): its "
            f"evaluations are in results.json; this script evaluates multi-task checkpoints of scripts/train.py"
        )
    try:
        device = resolve_device(options.get("device", "cpu"))
    except ValueError as err:
        raise UsageError(str(err)) from err
    try:  # resolved for this machine, with this evaluation's device (not the training machine's)
        saved = load_config(TrainConfig, cfg_path, [f"device={device}"], resolve=False)
        cfg = dataclasses.replace(saved, protocol_details={}).resolve()
    except ConfigError as err:
        raise UsageError(f"config error in {str(cfg_path)!r}: {err}") from err
    if saved.protocol_details and saved.protocol_details != cfg.protocol_details:
        # The protocol's definition changed since the run was trained: evaluate under the run's own protocol.
        changed = sorted(k for k in cfg.protocol_details if saved.protocol_details.get(k) != cfg.protocol_details[k])
        print(f"note: {cfg.env.protocol!r} now differs from the run's saved protocol_details in {changed}; "
              "evaluating under the saved ones", file=sys.stderr)  # fmt: skip
        cfg = dataclasses.replace(cfg, protocol_details=saved.protocol_details)
    try:
        state = load_checkpoint(ckpt_path, map_location=device)
    except Exception as err:  # torch.load raises several types for a file that is not a checkpoint
        raise UsageError(f"cannot read checkpoint {str(ckpt_path)!r} ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "agent" not in state or "step" not in state:
        raise UsageError(f"{str(ckpt_path)!r} is not a scripts/train.py checkpoint (no 'agent'/'step' entries)")

    envs, task_names = build_envs(cfg, cfg.seed)  # the training seed: mtrl-legacy's fixed goals come from it
    try:
        agent = build_agent(cfg, envs, device)
        try:
            agent.load_state_dict(state["agent"])
        except (RuntimeError, KeyError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(
                f"checkpoint {str(ckpt_path)!r} does not fit {str(cfg_path)!r} ({first}); pass that run's config=..."
            ) from err
        episodes = int(options.get("episodes", 0)) or cfg.eval_episodes or envs.protocol.eval_episodes_per_task
        result = evaluate(EvalAgent(agent), envs, episodes_per_task=episodes)
    finally:
        envs.close()
    return {
        "checkpoint": str(ckpt_path),
        "config": str(cfg_path),
        "step": int(state["step"]),
        "benchmark": cfg.env.benchmark,
        "protocol": cfg.env.protocol,
        "episodes": episodes,
        "success_mean": float(result.success_mean),
        "success": {n: float(v) for n, v in zip(task_names, result.success_per_task, strict=True)},
        "return": {n: float(v) for n, v in zip(task_names, result.return_per_task, strict=True)},
    }


def format_table(table: dict[str, Any]) -> str:
    """The per-task success (and mean return) table printed by :func:`main`."""
    names = list(table["success"])
    width = max(len("task"), len("mean"), *(len(n) for n in names))
    lines = [
        f"{table['benchmark']} {table['protocol']}, step {table['step']}, {table['episodes']} episodes/task "
        f"({table['checkpoint']})",
        f"{'task':<{width}}  success   return",
    ]
    lines += [f"{n:<{width}}  {table['success'][n]:7.3f}  {table['return'][n]:7.2f}" for n in names]
    lines.append(f"{'mean':<{width}}  {table['success_mean']:7.3f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """The script: :func:`run` through the scripts' shell (:func:`mtrl.cli.run_main`: a file-system error or an
    unreadable checkpoint is one line and status 2, a second Ctrl-C no traceback)."""
    from mtrl.cli import run_main

    return run_main(lambda: run(argv), config_prefix="error")


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        options = parse_options(argv[1:])
        table = evaluate_checkpoint(argv[0], options)
        ckpt = Path(table["checkpoint"])
        out = Path(options["out"]) if "out" in options else Path(table["config"]).parent / f"eval_{table['step']}.json"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(table, indent=2))
        except OSError as err:
            raise UsageError(f"cannot write {str(out)!r} ({err.strerror}): pass out=<a writable path>") from err
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(table))
    print(f"wrote {out} (checkpoint {ckpt.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
