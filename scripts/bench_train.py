"""Multi-task SAC training throughput per balancer on MT10/MT50, and our `ew` update vs stable-baselines3.

    python scripts/bench_train.py [--updates 30] [--env-steps 200] [--threads 2] [--device cpu]
        [--benchmarks MT10 MT50] [--balancers ew pcgrad cagrad nash_mtl imtl_g aligned_mtl]

For each benchmark, in one process and with the same settings (3×400 ReLU trunks, 128 transitions
per task, Adam 3e-4):

* the env cost per vector step (real Meta-World vector env, random actions, ``--env-steps`` steps);
* the time of one full SAC update (critic + actor + temperature + Polyak) per balancer, median over
  ``--updates`` updates after ``--warmup`` untimed ones, on a replay buffer of random transitions;
* vector steps/s = 1 / (env time + update time) at one update per step (the preset), updates/s =
  1 / update time, and the update-time ratio to ``ew``;
* stable-baselines3's SAC update (``SAC.train(gradient_steps=1)``) with ``net_arch=[400, 400, 400]``
  on the same total batch (128·T) and observation size (obs + one-hot), and our ``ew``/SB3 ratio.

Prints a Markdown table (paste into the README) and writes it as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from agents.config import SACConfig
from agents.sac import MultiTaskSAC
from mtrl.balancers import make_balancer
from mtrl.replay import MultiTaskReplayBuffer

OBS_DIM, ACTION_DIM = 39, 4  # Meta-World v3 observation (without one-hot) and action sizes
DEFAULT_BALANCERS = ["ew", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_buffer(num_tasks: int, per_task: int, device: torch.device, seed: int = 0) -> MultiTaskReplayBuffer:
    """A replay buffer of ``per_task`` random transitions per task (update cost does not depend on values)."""
    rng = np.random.default_rng(seed)
    buf = MultiTaskReplayBuffer(num_tasks, OBS_DIM, ACTION_DIM, num_tasks * per_task, device)
    for _ in range(per_task):
        buf.add(
            rng.normal(size=(num_tasks, OBS_DIM)),
            rng.uniform(-1, 1, size=(num_tasks, ACTION_DIM)),
            rng.uniform(0, 10, size=num_tasks),
            rng.normal(size=(num_tasks, OBS_DIM)),
            np.zeros(num_tasks),
        )
    return buf


def time_our_update(
    balancer: str, num_tasks: int, buf: MultiTaskReplayBuffer, updates: int, warmup: int, device: torch.device
) -> float:
    """Median seconds of one ``MultiTaskSAC.update`` with ``balancer`` on the critic and the actor."""
    torch.manual_seed(0)
    cfg = SACConfig(batch_per_task=128)
    agent = MultiTaskSAC(
        num_tasks,
        OBS_DIM,
        ACTION_DIM,
        cfg,
        make_balancer(balancer, num_tasks),
        make_balancer(balancer, num_tasks),
        device=device,
    )
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + updates):
        batch = buf.sample(cfg.batch_per_task, gen)
        _sync(device)
        start = time.perf_counter()
        agent.update(batch, with_metrics=False)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_sb3_update(num_tasks: int, updates: int, warmup: int, device: torch.device) -> float:
    """Median seconds of one stable-baselines3 SAC gradient step at the same size and total batch."""
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import Logger

    obs_dim = OBS_DIM + num_tasks

    class SpacesOnly(gym.Env):  # type: ignore[type-arg]
        """Gives SB3 the observation/action spaces; never stepped (updates read the replay buffer)."""

        observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            return np.zeros(obs_dim, np.float32), {}

        def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
            return np.zeros(obs_dim, np.float32), 0.0, False, False, {}

    env = SpacesOnly()
    batch = 128 * num_tasks
    model = SAC(
        "MlpPolicy",
        env,
        learning_rate=3e-4,
        buffer_size=4 * batch,
        batch_size=batch,
        tau=0.005,
        gamma=0.99,
        ent_coef="auto_1.0",
        policy_kwargs={"net_arch": [400, 400, 400]},
        device=device,
        seed=0,
        verbose=0,
    )
    rng = np.random.default_rng(0)
    for _ in range(4 * batch):
        model.replay_buffer.add(  # type: ignore[union-attr]
            rng.normal(size=(1, obs_dim)).astype(np.float32),
            rng.normal(size=(1, obs_dim)).astype(np.float32),
            rng.uniform(-1, 1, size=(1, ACTION_DIM)).astype(np.float32),
            rng.uniform(0, 10, size=1),
            np.zeros(1),
            [{}],
        )
    model.set_logger(Logger(folder=None, output_formats=[]))  # train() records its losses there
    times = []
    for i in range(warmup + updates):
        _sync(device)
        start = time.perf_counter()
        model.train(gradient_steps=1, batch_size=batch)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_env_step(benchmark: str, steps: int) -> float:
    """Mean seconds per vector step of the real Meta-World vector env with random actions."""
    from envs.metaworld import make_mt_envs

    envs = make_mt_envs(benchmark, seed=0)  # type: ignore[arg-type]
    envs.reset()
    rng = np.random.default_rng(0)
    T = envs.num_envs
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(rng.uniform(-1, 1, size=(T, ACTION_DIM)))
    elapsed = (time.perf_counter() - start) / steps
    envs.close()
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benchmarks", nargs="+", default=["MT10", "MT50"], choices=["MT10", "MT50"])
    p.add_argument("--balancers", nargs="+", default=DEFAULT_BALANCERS)
    p.add_argument("--updates", type=int, default=30, help="timed updates per balancer")
    p.add_argument("--warmup", type=int, default=3, help="untimed updates first")
    p.add_argument("--env-steps", type=int, default=200, help="timed vector env steps")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-sb3", action="store_true", help="skip the stable-baselines3 comparison")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows: list[dict[str, Any]] = []
    print(f"device={device} threads={args.threads} torch={torch.__version__} updates={args.updates}\n")
    print("| bench | balancer | update ms | × ew | updates/s | vector steps/s (env+update) |")
    print("|---|---|---:|---:|---:|---:|")
    for bench in args.benchmarks:
        T = 10 if bench == "MT10" else 50
        env_s = time_env_step(bench, args.env_steps)
        buf = random_buffer(T, 256, device)
        ew_s: float | None = None
        for name in args.balancers:
            try:
                upd_s = time_our_update(name, T, buf, args.updates, args.warmup, device)
            except NotImplementedError as err:  # a balancer still being written: say so, keep going
                print(f"| {bench} | {name} | not available: {err} | | | |")
                continue
            if name == "ew":
                ew_s = upd_s
            ratio = upd_s / ew_s if ew_s else float("nan")
            row = {
                "bench": bench,
                "balancer": name,
                "update_ms": 1e3 * upd_s,
                "ratio_to_ew": ratio,
                "updates_per_s": 1 / upd_s,
                "vector_steps_per_s": 1 / (env_s + upd_s),
                "env_ms": 1e3 * env_s,
            }
            rows.append(row)
            print(
                f"| {bench} | {name} | {row['update_ms']:.1f} | {ratio:.2f} | {row['updates_per_s']:.2f} | "
                f"{row['vector_steps_per_s']:.2f} |"
            )
        if not args.no_sb3:
            sb3_s = time_sb3_update(T, args.updates, args.warmup, device)
            ratio = ew_s / sb3_s if ew_s else float("nan")
            rows.append({"bench": bench, "balancer": "sb3_sac", "update_ms": 1e3 * sb3_s, "ew_over_sb3": ratio})
            print(
                f"| {bench} | SB3 SAC (same size/batch) | {1e3 * sb3_s:.1f} | ours ew / SB3 = {ratio:.2f} | "
                f"{1 / sb3_s:.2f} | |"
            )
        print(f"| {bench} | env only (sync, random actions) | {1e3 * env_s:.1f} | | | {1 / env_s:.1f} |")
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
