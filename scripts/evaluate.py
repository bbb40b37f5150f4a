"""Evaluate a trained multi-task SAC checkpoint and print a per-task success table.

    python scripts/evaluate.py runs/MT10_ew_s0_... [episodes=N] [out=path.json] [device=cpu]

Accepts a run directory (its last checkpoint and config.yaml) or a checkpoint ``.pt`` inside
``<run>/checkpoints/``. Evaluates on a freshly built env of the run's benchmark, protocol and seed
(so mtrl-legacy's fixed goals are the training goals) with the deterministic policy; writes
``eval_<step>.json`` into the run directory unless ``out=`` is given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from agents.checkpoint import latest_checkpoint, load_checkpoint
from agents.config import TrainConfig
from agents.sac import EvalAgent, MultiTaskSAC
from agents.trainer import build_envs, resolve_device
from envs import evaluate
from mtrl.balancers import make_balancer
from mtrl.config import ConfigError, load_config


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    options = dict(a.split("=", 1) for a in argv[1:] if "=" in a)
    unknown = sorted(set(options) - {"episodes", "out", "device"})
    if unknown or len(options) != len(argv) - 1:
        print(f"bad arguments {argv[1:]}; valid: episodes=N out=PATH device=NAME", file=sys.stderr)
        return 2
    ckpt_path = latest_checkpoint(argv[0])
    run_dir = ckpt_path.parent.parent
    try:
        cfg = load_config(TrainConfig, run_dir / "config.yaml")
    except ConfigError as err:
        print(f"config error in {run_dir / 'config.yaml'}: {err}", file=sys.stderr)
        return 2
    device = resolve_device(options.get("device", "cpu"))
    envs, task_names = build_envs(cfg, cfg.seed)  # the training seed: mtrl-legacy's fixed goals come from it
    episodes = int(options.get("episodes", cfg.eval_episodes or envs.protocol.eval_episodes_per_task))
    T = envs.num_envs
    space = envs.single_action_space
    agent = MultiTaskSAC(
        T,
        int(envs.single_observation_space.shape[0]) - T,  # type: ignore[index]
        int(space.shape[0]),  # type: ignore[index]
        cfg.sac,
        make_balancer(cfg.critic_balancer or cfg.balancer, T, **(cfg.critic_balancer_hparams or {})),
        make_balancer(cfg.actor_balancer or cfg.balancer, T, **(cfg.actor_balancer_hparams or {})),
        device=device,
        action_low=space.low,  # type: ignore[attr-defined]
        action_high=space.high,  # type: ignore[attr-defined]
        task_names=task_names,
    )
    state = load_checkpoint(ckpt_path, map_location=device)
    agent.load_state_dict(state["agent"])
    result = evaluate(EvalAgent(agent), envs, episodes_per_task=episodes)
    envs.close()
    per_task = {name: float(v) for name, v in zip(task_names, result.success_per_task, strict=True)}
    mean = result.success_mean
    width = max(len(n) for n in task_names)
    print(f"{'task':<{width}}  success   ({episodes} episodes/task, protocol {cfg.env.protocol}, step {state['step']})")
    for name, rate in per_task.items():
        print(f"{name:<{width}}  {rate:7.3f}")
    print(f"{'mean':<{width}}  {mean:7.3f}")
    out = Path(options.get("out", run_dir / f"eval_{state['step']}.json"))
    table = {
        "checkpoint": str(ckpt_path),
        "step": state["step"],
        "protocol": cfg.env.protocol,
        "episodes": episodes,
        "success_mean": mean,
        "success": per_task,
    }
    out.write_text(json.dumps(table, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
