"""Evaluate a saved multi-task SAC run: its checkpoint on a fresh env of its own benchmark, protocol and seed.

:func:`evaluate_run` resolves what a user names (a run directory of ``scripts/train.py``, its ``checkpoints/``
folder or one ``step_*.pt`` file) to a checkpoint (:func:`find_checkpoint`: the one a resume would use) and the
run's ``config.yaml`` (:func:`find_config`), reads the config again for this machine's device, rebuilds the
agent and the env (:func:`agents.sac.build_agent`, :func:`agents.trainer.build_envs` with the training seed, so
mtrl-legacy's fixed goals are the training goals), and evaluates the deterministic policy
(:func:`envs.evaluate`). The result is a table (a JSON-ready dict): ``checkpoint``, ``config``, ``step``,
``benchmark``, ``protocol``, ``episodes``, ``success_mean``, ``success`` and ``return`` per task;
:func:`format_table` prints it and :func:`write_table` saves it (default ``<run dir>/eval_<step>.json``),
after :func:`check_out` has checked the place before anything is evaluated.

Every problem with what the user named (no such path, no checkpoint, no config, an unreadable checkpoint, a
checkpoint that does not fit the config, a place that cannot be written) raises a one-line
:class:`~mtrl.config.ConfigError` naming the fix. ``scripts/evaluate.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from agents.checkpoint import latest_checkpoint, load_checkpoint
from agents.config import TrainConfig
from agents.sac import EvalAgent, build_agent
from agents.trainer import build_envs
from envs import evaluate
from mtrl.config import ConfigError, load_config
from mtrl.device import resolve_device

__all__ = ["check_out", "evaluate_run", "find_checkpoint", "find_config", "format_table", "write_table"]


def find_checkpoint(path: Path) -> Path:
    """A checkpoint file from a run directory, its ``checkpoints/`` folder or a file path: the library's
    lookup (:func:`agents.checkpoint.latest_checkpoint`, the one a resume uses): the file ``last.txt`` names,
    else the ``step_<n>.pt`` with the largest ``n``.
    """
    if not path.exists():
        raise ConfigError(
            f"{str(path)!r} does not exist: pass a run directory of scripts/train.py (e.g. runs/MT10_ew_s0_...) "
            f"or one of its checkpoints/step_*.pt files"
        )
    try:
        return latest_checkpoint(path)
    except FileNotFoundError:
        raise ConfigError(
            f"no checkpoint in {str(path)!r} (looked for checkpoints/last.txt and checkpoints/step_*.pt): "
            f"train with scripts/train.py first (a checkpoint is written at the end, every checkpoint_every "
            f"steps and on Ctrl-C) or pass a .pt file"
        ) from None


def find_config(ckpt: Path, given: str | Path | None = None) -> Path:
    """The run's ``config.yaml``: ``given``, else next to the checkpoint or one folder up."""
    if given is not None:
        cfg = Path(given)
        if not cfg.is_file():
            raise ConfigError(f"config={str(given)!r} does not exist: pass the run's config.yaml")
        return cfg
    for folder in (ckpt.parent, ckpt.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise ConfigError(
        f"no config.yaml next to {str(ckpt)!r} or in the folder above it: pass config=<the run's config.yaml>"
    )


def check_out(text: str) -> Path:
    """The file ``out=`` names, checked before anything is evaluated: not a folder, and below a writable
    folder (missing folders on the way are created when the table is written; nothing is created here)."""
    out = Path(text)
    if not text.strip() or out.is_dir():
        raise ConfigError(f"out={text!r} is not a file path: pass out=<file>.json (e.g. out=runs/eval/table.json)")
    existing = out.parent
    while not existing.exists():  # the nearest folder on the way that exists (".", "/" at the latest)
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot write out={text!r}: {str(existing)!r} is a file, not a folder: pass another path")
    blocking = out if out.exists() else existing  # what the write needs to change
    if not os.access(blocking, os.W_OK):
        raise ConfigError(f"cannot write out={text!r}: {str(blocking)!r} is not writable: pass another path")
    return out


def _saved_config(cfg_path: Path, device_name: str) -> tuple[TrainConfig, torch.device]:
    """The run's config resolved for this machine with this evaluation's device (not the training machine's),
    under the run's own ``protocol_details`` when the protocol's definition changed since (a note on stderr
    says which keys), and that device."""
    raw = yaml.safe_load(cfg_path.read_text()) or {}
    if isinstance(raw, dict) and raw.get("method") == "stl_sb3_sac":
        raise ConfigError(
            f"{str(cfg_path.parent)!r} is a scripts/train_stl.py run (one stable-baselines3 SAC per task): its "
            f"evaluations are in results.json; this script evaluates multi-task checkpoints of scripts/train.py"
        )
    try:
        device = resolve_device(device_name)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    try:
        saved = load_config(TrainConfig, cfg_path, [f"device={device}"], resolve=False)
        cfg = dataclasses.replace(saved, protocol_details={}).resolve()
    except ConfigError as err:
        raise ConfigError(f"config error in {str(cfg_path)!r}: {err}") from err
    if saved.protocol_details and saved.protocol_details != cfg.protocol_details:
        # The protocol's definition changed since the run was trained: evaluate under the run's own protocol.
        changed = sorted(k for k in cfg.protocol_details if saved.protocol_details.get(k) != cfg.protocol_details[k])
        print(f"note: {cfg.env.protocol!r} now differs from the run's saved protocol_details in {changed}; "
              "evaluating under the saved ones", file=sys.stderr)  # fmt: skip
        cfg = dataclasses.replace(cfg, protocol_details=saved.protocol_details)
    return cfg, device


def evaluate_run(
    target: str | Path, episodes: int | None = None, device: str = "cpu", config: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate the checkpoint that ``target`` names and return its table (see the module docstring).

    Args:
        target: a run directory of ``scripts/train.py``, its ``checkpoints/`` folder or a ``step_*.pt`` file.
        episodes: episodes per task; None: the run's ``eval_episodes``, else the protocol's.
        device: where the agent runs ("cpu", "cuda", "auto", ...).
        config: the run's ``config.yaml``; None: next to the checkpoint or one folder up.
    """
    ckpt_path = find_checkpoint(Path(target))
    cfg_path = find_config(ckpt_path, config)
    cfg, torch_device = _saved_config(cfg_path, device)
    try:
        state = load_checkpoint(ckpt_path, map_location=torch_device)
    except Exception as err:  # torch.load raises several types for a file that is not a checkpoint
        raise ConfigError(f"cannot read checkpoint {str(ckpt_path)!r} ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or "agent" not in state or "step" not in state:
        raise ConfigError(f"{str(ckpt_path)!r} is not a scripts/train.py checkpoint (no 'agent'/'step' entries)")

    envs, task_names = build_envs(cfg, cfg.seed)  # the training seed: mtrl-legacy's fixed goals come from it
    try:
        agent = build_agent(cfg, envs, torch_device)
        try:
            agent.load_state_dict(state["agent"])
        except (RuntimeError, KeyError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"checkpoint {str(ckpt_path)!r} does not fit {str(cfg_path)!r} ({first}); pass that run's config=..."
            ) from err
        episodes = episodes or cfg.eval_episodes or envs.protocol.eval_episodes_per_task
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


def write_table(table: dict[str, Any], out: str | Path | None = None) -> Path:
    """Write ``table`` as JSON to ``out`` (default ``<run dir>/eval_<step>.json``, the run directory being the
    folder of its ``config.yaml``), creating missing folders; returns the path."""
    path = Path(out) if out is not None else Path(table["config"]).parent / f"eval_{table['step']}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table, indent=2))
    except OSError as err:
        raise ConfigError(f"cannot write {str(path)!r} ({err.strerror}): pass out=<a writable path>") from err
    return path


def format_table(table: dict[str, Any]) -> str:
    """The per-task success (and mean return) table of :func:`evaluate_run`'s result, as the script prints it."""
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
