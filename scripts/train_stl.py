"""The "one SAC agent per task" reference row: stable-baselines3 SAC on each Meta-World task alone.

    python scripts/train_stl.py                                  # short: MT10 tasks, 3000 steps each
    python scripts/train_stl.py --steps 2000000 --eval-every 10000 --eval-episodes 50 --device cuda  # full
    python scripts/train_stl.py --tasks reach-v3 push-v3 --protocol mtrl-legacy

Each task gets its own SB3 SAC with the multi-task preset's network and optimiser (3×400 ReLU actor
and critics, Adam 3e-4, batch 128, γ 0.99, τ 0.005, initial temperature 1.0, 1500 random steps,
buffer 1M/T) on a single Meta-World v3 env of the chosen protocol (episode length, goals, reward
version as in ``envs.protocols``). Success is evaluated every ``--eval-every`` steps with the
deterministic policy and logged to TensorBoard under ``eval/success/<task>`` (and
``eval/success_mean`` once every task has been evaluated at that step), the layout of
``scripts/train.py``, so ``tensorboard --logdir runs`` shows both side by side. Writes
``<logdir>/<run>/results.json`` with the per-task histories.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from envs.metaworld import MT10_TASKS
from envs.protocols import PROTOCOLS, Protocol
from mtrl.logger import JsonlWriter, Logger, TensorBoardWriter


def make_task_env(task: str, protocol: Protocol, seed: int) -> Any:
    """One Meta-World v3 task under ``protocol`` (fixed goal for mtrl-legacy, as envs.metaworld does)."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World ids)

    kwargs: dict[str, Any] = {
        "env_name": task,
        "seed": seed,
        "max_episode_steps": protocol.max_episode_steps,
        "reward_function_version": protocol.reward_function_version,
    }
    if protocol.reward_normalization is not None:
        kwargs["reward_normalization_method"] = protocol.reward_normalization
    env = gym.make("Meta-World/MT1", **kwargs)
    if not protocol.random_goals:
        env.reset()
        env.get_wrapper_attr("toggle_sample_tasks_on_reset")(False)
    return env


def success_rate(model: Any, env: Any, episodes: int) -> float:
    """Fraction of deterministic episodes with ``info["success"]`` at any step."""
    wins = 0
    for _ in range(episodes):
        obs, _ = env.reset()
        done, success = False, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            success |= bool(info.get("success", 0.0))
            done = terminated or truncated
        wins += int(success)
    return wins / episodes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(MT10_TASKS), help="Meta-World v3 task names (default: MT10)")
    p.add_argument("--protocol", default="metaworld-v3", choices=sorted(PROTOCOLS))
    p.add_argument("--steps", type=int, default=3000, help="env steps per task (full budget: 2000000)")
    p.add_argument("--warmup", type=int, default=1500, help="random steps before learning (mtrl: 1500)")
    p.add_argument("--eval-every", type=int, default=1500)
    p.add_argument("--eval-episodes", type=int, default=None, help="default: the protocol's")
    p.add_argument("--buffer", type=int, default=100_000, help="per-task buffer (1M total / 10 tasks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--logdir", default="runs")
    p.add_argument("--run-name", default=None)
    args = p.parse_args()
    try:
        from stable_baselines3 import SAC
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError as err:
        raise SystemExit("scripts/train_stl.py needs stable-baselines3: pip install -e '.[stl]'") from err

    protocol = PROTOCOLS[args.protocol]
    episodes = args.eval_episodes or protocol.eval_episodes_per_task
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.logdir) / (args.run_name or f"STL_{args.protocol}_s{args.seed}_{stamp}")
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = Logger([TensorBoardWriter(run_dir), JsonlWriter(run_dir / "metrics.jsonl")])
    logger.text("run/notes", f"protocol: {args.protocol}\n\none SB3 SAC per task; args: {vars(args)}", 0)
    history: dict[str, dict[int, float]] = {}

    class EvalCallback(BaseCallback):
        def __init__(self, task: str, eval_env: Any) -> None:
            super().__init__()
            self.task, self.eval_env = task, eval_env

        def _on_step(self) -> bool:
            if self.num_timesteps % args.eval_every == 0:
                rate = success_rate(self.model, self.eval_env, episodes)
                history[self.task][self.num_timesteps] = rate
                logger.scalars({f"eval/success/{self.task}": rate}, self.num_timesteps)
                print(f"{self.task} step {self.num_timesteps}: success {rate:.2f}", flush=True)
            return True

    for task in args.tasks:
        history[task] = {}
        env, eval_env = make_task_env(task, protocol, args.seed), make_task_env(task, protocol, args.seed)
        model = SAC(
            "MlpPolicy",
            env,
            learning_rate=3e-4,
            buffer_size=args.buffer,
            learning_starts=args.warmup,
            batch_size=128,
            tau=0.005,
            gamma=0.99,
            ent_coef="auto_1.0",
            policy_kwargs={"net_arch": [400, 400, 400]},
            seed=args.seed,
            device=args.device,
            verbose=0,
        )
        model.learn(total_timesteps=args.steps, callback=EvalCallback(task, eval_env))
        if args.steps not in history[task]:
            history[task][args.steps] = success_rate(model, eval_env, episodes)
            logger.scalars({f"eval/success/{task}": history[task][args.steps]}, args.steps)
        env.close()
        eval_env.close()
    steps = sorted(set.intersection(*(set(h) for h in history.values())))
    for step in steps:
        logger.scalars({"eval/success_mean": float(np.mean([history[t][step] for t in args.tasks]))}, step)
    means = [float(np.mean([history[t][s] for t in args.tasks])) for s in steps]
    results = {
        "protocol": args.protocol,
        "tasks": args.tasks,
        "steps_per_task": args.steps,
        "reported": protocol.summarize(means) if means else {},
        "history": history,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    logger.close()
    print(json.dumps(results["reported"]), f"\nTensorBoard: tensorboard --logdir {run_dir.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
