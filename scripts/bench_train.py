"""Multi-task SAC training throughput per balancer on MT10/MT50, per-task head cost vs T, and our
``ew`` update vs stable-baselines3's SAC update.

    python scripts/bench_train.py                      # the README's measurement (CPU, 2 threads)
    python scripts/bench_train.py --device cuda --threads 8
    python scripts/bench_train.py --benchmarks MT10 --balancers ew pcgrad --steps 3 --warmup 1 --prefill 130
        --head-tasks 1 10 --head-repeats 5 --updates-sb3 3          # a quick sanity run
    python scripts/bench_train.py --benchmarks MT10 --set 'sac.critic_hidden_sizes=[1024,1024,1024]'  # a knob

For each benchmark, in one process, with the preset's settings (``configs/{mt10,mt50}_sac.yaml``:
3×400 ReLU trunks, 128 transitions per task, Adam 3e-4, one update per vector step) and each
balancer resolved and built exactly as ``scripts/train.py`` does (``mtrl.config.load_config``,
``build_balancers``):

1. **Training-loop throughput.** The post-warm-up step of ``agents.trainer.Trainer.env_step`` on
   the real Meta-World vector env (sync): act with the policy, step the env
   (``envs.step_transitions``), add the transitions to the replay buffer, then one full SAC update
   (stratified sample, critic, actor, temperature, Polyak). ``--steps`` timed vector steps after
   ``--warmup`` untimed ones, on a buffer pre-filled with ``--prefill`` random-action steps.
   Reported: vector steps/s and updates/s of the whole loop, its ratio to ``ew``, and the loop's
   split into act / env / replay / update.
2. **Update time, interleaved.** One agent per balancer (and stable-baselines3's SAC) on the same
   replay buffer; ``--update-rounds`` rounds in which every one of them does one update, in turn, so
   that a change of machine load hits all of them alike (the loop timings of 1. run one balancer
   after the other and drifted by up to 30% between balancers on this shared 2-core VM). Reported:
   the median update time and its ratio to ``ew`` — the issue's targets: every Gramian balancer
   ≤ 1.3× ``ew`` on MT10, ≤ 1.6× on MT50 — and our ``ew`` over SB3's update.
3. **Per-task head cost vs T.** Forward + backward of every batched per-task head of the SAC
   networks (the actor's and both critics' ``BatchedLinear``) on ``(T, 128, 400)`` features, for
   each T in ``--head-tasks``, divided by T. The heads are one ``baddbmm`` each, so the per-task
   cost must stay flat (or fall, as fixed overheads amortise) as T grows: the check fails if it
   grows by more than 1.3× from one T to the next.
   stable-baselines3's update is ``SAC.train(gradient_steps=1)`` with ``net_arch=[400, 400, 400]``
   on the same total batch (128·T) and observation size (obs + one-hot).

Prints one side-by-side Markdown table (balancers × benchmarks; paste into the README), the head
table and the target checks; ``--out`` also writes every number as JSON.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from mtrl.device import synchronize

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"MT10": ROOT / "configs" / "mt10_sac.yaml", "MT50": ROOT / "configs" / "mt50_sac.yaml"}
DEFAULT_BALANCERS = ["ew", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl"]
#: The issue's update-time targets for the Gramian balancers, as a multiple of ``ew``.
TARGETS = {"MT10": 1.3, "MT50": 1.6}
OBS_DIM, ACTION_DIM = 39, 4  # Meta-World v3 observation (without one-hot) and action sizes


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# --- 1. training loop ------------------------------------------------------------------------------
#: Extra ``key=value`` overrides of every preset (``--set``), applied after the balancer's.
OVERRIDES: list[str] = []


def build_agent(bench: str, balancer: str, envs: Any, device: torch.device) -> tuple[Any, Any]:
    """``(MultiTaskSAC, resolved TrainConfig)`` for ``balancer`` on ``envs``, built as the trainer builds it."""
    from agents.config import TrainConfig
    from agents.sac import build_agent as build_sac
    from mtrl.config import load_config

    overrides = [f"balancer={balancer}", f"device={device}", "progress=false", *OVERRIDES]
    cfg = load_config(TrainConfig, PRESETS[bench], overrides)
    return build_sac(cfg, envs, device), cfg


def prefill(envs: Any, buffer: Any, steps: int, seed: int = 0) -> np.ndarray:
    """``steps`` random-action vector steps into ``buffer`` (the warm-up); returns the next observations."""
    from envs import step_transitions

    rng = np.random.default_rng(seed)
    space = envs.single_action_space
    obs, _ = envs.reset()
    O = envs.obs_dim
    for _ in range(steps):
        action_TA = rng.uniform(space.low, space.high, size=(envs.num_envs, space.shape[0]))
        res = step_transitions(envs, action_TA)
        buffer.add(obs[:, :O], action_TA, res.reward, res.next_obs[:, :O], res.terminated)
        obs = res.obs
    return np.asarray(obs)


def time_training_loop(
    bench: str, balancer: str, envs: Any, buffer: Any, obs: np.ndarray, steps: int, warmup: int, device: torch.device
) -> tuple[dict[str, float], np.ndarray]:
    """Seconds per vector step of the training loop's pieces (act, env, replay add, update) with ``balancer``.

    Times :func:`agents.step.training_step`, the step ``agents.trainer.Trainer.env_step`` runs, after its warm-up
    (the policy acts; metrics off, as at every step that is not a logging step). Returns the timings and the
    observations to continue from.
    """
    from agents.step import PHASES, training_step

    torch.manual_seed(0)
    agent, cfg = build_agent(bench, balancer, envs, device)
    gen = torch.Generator().manual_seed(0)
    parts: dict[str, list[float]] = {name: [] for name in PHASES}
    ends: dict[str, float] = {}

    def clock(name: str) -> None:
        synchronize(device)  # the phase's device work is done
        ends[name] = time.perf_counter()

    for i in range(warmup + steps):
        start = time.perf_counter()
        res, _ = training_step(
            agent, envs, buffer, obs, action_TA=None, updates=cfg.sac.updates_per_step,
            batch_per_task=cfg.sac.batch_per_task, sample_gen=gen, metrics=False, phase=clock,
        )  # fmt: skip
        obs = res.obs
        if i >= warmup:
            begins = [start, *(ends[name] for name in PHASES[:-1])]
            for name, begin in zip(PHASES, begins, strict=True):
                parts[name].append(ends[name] - begin)
    total = sum(sum(v) for v in parts.values())
    out = {f"{k}_ms": 1e3 * statistics.fmean(v) for k, v in parts.items()}
    out["update_ms_median"] = 1e3 * statistics.median(parts["update"])
    out["vector_steps_per_s"] = steps / total
    out["updates_per_s"] = steps * cfg.sac.updates_per_step / total
    return out, obs


# --- 2. head cost vs T -----------------------------------------------------------------------------
def time_heads(num_tasks: int, per_task: int, repeats: int, device: torch.device, hidden: int = 400) -> float:
    """Median seconds of forward + backward through every per-task head of the SAC actor and twin critic.

    The heads are the ``mtrl.nn.BatchedLinear`` modules of :class:`agents.networks.Actor` and
    :class:`agents.networks.TwinCritic` (3×400 trunks), fed ``(T, per_task, hidden)`` features.
    """
    from agents.networks import Actor, TwinCritic
    from mtrl.nn import BatchedLinear

    torch.manual_seed(0)
    nets = [
        Actor(num_tasks, OBS_DIM, ACTION_DIM, (hidden,) * 3).to(device),
        TwinCritic(num_tasks, OBS_DIM, ACTION_DIM, (hidden,) * 3).to(device),
    ]
    heads = [m for net in nets for m in net.modules() if isinstance(m, BatchedLinear)]
    assert len(heads) == 3, f"expected the actor head and two critic heads, found {len(heads)}"
    x_TNH = torch.randn(num_tasks, per_task, hidden, device=device, requires_grad=True)
    times = []
    for i in range(repeats + 3):
        synchronize(device)
        start = time.perf_counter()
        total = sum(head(x_TNH).sum() for head in heads)
        total.backward()  # type: ignore[union-attr]
        synchronize(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- 3. stable-baselines3 --------------------------------------------------------------------------
def make_sb3_update(num_tasks: int, device: torch.device) -> Callable[[], None]:
    """One stable-baselines3 SAC gradient step at our network size and total batch, as a closure."""
    import gymnasium as gym
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

    from agents.config import SACConfig
    from agents.sb3 import make_sb3_sac

    batch = 128 * num_tasks
    sac = SACConfig(hidden_sizes=(400, 400, 400), batch_per_task=batch, buffer_capacity=4 * batch)
    model = make_sb3_sac(SpacesOnly(), sac, seed=0, device=str(device))
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

    def update() -> None:
        model.train(gradient_steps=1, batch_size=batch)

    return update


def _update_once(agent: Any, buffer: Any, per_task: int, gen: torch.Generator) -> None:
    agent.update(buffer.sample(per_task, gen), with_metrics=False)


def time_updates_interleaved(
    bench: str,
    balancers: Sequence[str],
    envs: Any,
    buffer: Any,
    rounds: int,
    warmup: int,
    device: torch.device,
    extra: dict[str, Callable[[], None]] | None = None,
) -> dict[str, float]:
    """Median seconds of one SAC update per balancer (and per ``extra`` closure), timed round-robin.

    Every round gives each agent one update on a fresh stratified batch of the shared ``buffer``
    (``with_metrics=False``, as at every update that is not a logging step); the first ``warmup``
    rounds are not timed.
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    steps: dict[str, Callable[[], None]] = {}
    for name in balancers:
        agent, cfg = build_agent(bench, name, envs, device)
        n = cfg.sac.batch_per_task

        steps[name] = functools.partial(_update_once, agent, buffer, n, gen)
    steps |= extra or {}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + rounds):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# --- report ----------------------------------------------------------------------------------------
def markdown_table(rows: list[dict[str, Any]], benches: Sequence[str], balancers: Sequence[str]) -> str:
    """Balancers (and SB3) down, benchmarks across: steps/s, updates/s, update ms, each with its ratio to ew."""
    head = ["balancer"]
    for b in benches:
        head += [f"{b} vector steps/s (÷ ew)", f"{b} updates/s", f"{b} update ms (× ew)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    by = {(r["bench"], r["balancer"]): r for r in rows}
    for name in [*balancers, "sb3_sac"]:
        cells = ["SB3 SAC, same size and total batch" if name == "sb3_sac" else name]
        for b in benches:
            r = by.get((b, name))
            if r is None:
                cells += ["–", "–", "–"]
            elif name == "sb3_sac":
                sb3_ms = f"{r['update_ms']:.1f} (our ew / SB3 = {r['ew_over_sb3']:.2f})"
                cells += ["–", f"{r['updates_per_s']:.2f} (update only)", sb3_ms]
            elif "error" in r:
                cells += [f"not available: {r['error']}", "", ""]
            else:
                cells += [
                    f"{r['vector_steps_per_s']:.2f} ({r['steps_ratio_to_ew']:.2f})",
                    f"{r['updates_per_s']:.2f}",
                    f"{r['update_ms_median']:.1f} ({r['update_ratio_to_ew']:.2f})",
                ]
        lines.append("| " + " | ".join(cells) + " |")
    split = ["loop split, ew: act / env / replay / update ms"]
    for b in benches:
        r = by.get((b, "ew"))
        split += (
            [f"{r['act_ms']:.1f} / {r['env_ms']:.1f} / {r['replay_ms']:.1f} / {r['update_ms']:.1f}", "", ""]
            if r and "error" not in r
            else ["–", "", ""]
        )
    lines.append("| " + " | ".join(split) + " |")
    return "\n".join(lines)


def head_table(head_rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """The head-cost table and whether the per-task cost stayed flat (≤ 1.3× growth between successive T)."""
    lines = [
        "| T | heads fwd+bwd ms | per task µs | per task × smallest T |",
        "|---:|---:|---:|---:|",
    ]
    base = head_rows[0]["per_task_us"]
    for r in head_rows:
        lines.append(f"| {r['T']} | {r['ms']:.3f} | {r['per_task_us']:.2f} | {r['per_task_us'] / base:.2f} |")
    growth = [b["per_task_us"] / a["per_task_us"] for a, b in itertools.pairwise(head_rows)]
    flat = all(g <= 1.3 for g in growth)
    return "\n".join(lines), flat


def build_parser() -> argparse.ArgumentParser:
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = argparse.ArgumentParser(prog="bench_train.py", description=__doc__, formatter_class=Formatter)
    p.add_argument("--benchmarks", nargs="+", default=["MT10", "MT50"], choices=sorted(PRESETS), help="suites")
    p.add_argument("--balancers", nargs="+", default=DEFAULT_BALANCERS, help="registry keys; ew is always run first")
    p.add_argument("--steps", type=_positive, default=30, help="timed training-loop vector steps per balancer")
    p.add_argument("--warmup", type=int, default=3, help="untimed loop steps first (per balancer)")
    p.add_argument("--prefill", type=_positive, default=200, help="random-action vector steps filling the buffer")
    p.add_argument("--head-tasks", nargs="+", type=_positive, default=[1, 10, 50], help="T values of the head test")
    p.add_argument("--head-repeats", type=_positive, default=50, help="timed head forward+backward passes per T")
    p.add_argument("--update-rounds", type=_positive, default=20, help="timed rounds of the interleaved update timing")
    p.add_argument("--no-sb3", action="store_true", help="skip the stable-baselines3 comparison")
    p.add_argument("--threads", type=_positive, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:<i> | mps")
    p.add_argument("--out", type=Path, default=None, help="also write every number as JSON")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides of every preset (a knob)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from mtrl.balancers import BALANCERS

    unknown = [b for b in args.balancers if b not in BALANCERS]
    if unknown:
        p.error(f"argument --balancers: unknown {unknown}; valid choices: {', '.join(sorted(BALANCERS))}")
    if args.warmup < 0:
        p.error(f"argument --warmup: expected an integer >= 0, got {args.warmup}")
    from mtrl.device import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        p.error(f"argument --device: {err}")
    balancers = ["ew", *[b for b in args.balancers if b != "ew"]]
    OVERRIDES[:] = args.set
    torch.set_num_threads(args.threads)
    from agents.config import TrainConfig
    from envs.metaworld import make_mt_envs
    from mtrl.config import ConfigError, load_config
    from mtrl.replay import MultiTaskReplayBuffer

    print(
        f"device={device} threads={args.threads} torch={torch.__version__} steps={args.steps} "
        f"warmup={args.warmup} prefill={args.prefill} set={args.set}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for bench in args.benchmarks:
        preset = load_config(TrainConfig, PRESETS[bench], [f"device={device}"])
        envs = make_mt_envs(bench, protocol=preset.protocol, seed=0, vector_strategy=preset.env.vector_strategy)
        T = envs.num_envs
        # The preset's capacity (1M transitions, as in a real run): sampling touches a full-size buffer.
        buffer = MultiTaskReplayBuffer(T, envs.obs_dim, envs.action_dim, preset.sac.buffer_capacity, device)
        obs = prefill(envs, buffer, args.prefill)
        bench_rows: list[dict[str, Any]] = []
        for name in balancers:
            try:
                timing, obs = time_training_loop(bench, name, envs, buffer, obs, args.steps, args.warmup, device)
            except (NotImplementedError, ImportError, ConfigError) as err:  # e.g. a missing solver: say so
                rows.append({"bench": bench, "balancer": name, "error": str(err).splitlines()[0]})
                continue
            timing["loop_update_ms_median"] = timing.pop("update_ms_median")
            bench_rows.append({"bench": bench, "balancer": name, **timing})
            print(f"{bench} {name}: {timing['vector_steps_per_s']:.2f} vector steps/s (training loop)", flush=True)
        extra = {} if args.no_sb3 else {"sb3_sac": make_sb3_update(T, device)}
        timed = [r["balancer"] for r in bench_rows]
        medians = time_updates_interleaved(bench, timed, envs, buffer, args.update_rounds, args.warmup, device, extra)
        envs.close()
        ew = next((r for r in bench_rows if r["balancer"] == "ew"), None)
        if ew is None:
            p.error(f"{bench}: the ew run failed, so no ratio can be formed")
        ew_s = medians["ew"]
        for r in bench_rows:
            r["update_ms_median"] = 1e3 * medians[r["balancer"]]
            r["update_ratio_to_ew"] = medians[r["balancer"]] / ew_s
            r["steps_ratio_to_ew"] = r["vector_steps_per_s"] / ew["vector_steps_per_s"]
            print(f"{bench} {r['balancer']}: update {r['update_ms_median']:.1f} ms "
                  f"({r['update_ratio_to_ew']:.2f}× ew, interleaved)", flush=True)  # fmt: skip
        rows += bench_rows
        if "sb3_sac" in medians:
            sb3_s = medians["sb3_sac"]
            sb3 = {"update_ms": 1e3 * sb3_s, "updates_per_s": 1 / sb3_s, "ew_over_sb3": ew_s / sb3_s}
            rows.append({"bench": bench, "balancer": "sb3_sac", **sb3})
            print(f"{bench} SB3 SAC update: {1e3 * sb3_s:.1f} ms (our ew / SB3 = {ew_s / sb3_s:.2f})", flush=True)

    head_rows = []
    for T in sorted(set(args.head_tasks)):
        seconds = time_heads(T, 128, args.head_repeats, device)
        head_rows.append({"T": T, "ms": 1e3 * seconds, "per_task_us": 1e6 * seconds / T})

    print("\n" + markdown_table(rows, args.benchmarks, balancers))
    table, flat = head_table(head_rows)
    print("\nPer-task head cost (actor + twin-critic BatchedLinear heads, 128 rows per task, 400 features):\n")
    print(table)
    checks = []
    for bench in args.benchmarks:
        gramian = [
            r for r in rows if r["bench"] == bench and r["balancer"] not in ("ew", "sb3_sac") and "error" not in r
        ]
        if gramian:
            worst = max(gramian, key=lambda r: r["update_ratio_to_ew"])
            ok = worst["update_ratio_to_ew"] <= TARGETS[bench]
            checks.append(
                f"{bench}: slowest balancer update {worst['balancer']} = {worst['update_ratio_to_ew']:.2f}× ew "
                f"(target ≤ {TARGETS[bench]}×): {'met' if ok else 'NOT met'}"
            )
    checks.append(f"per-task head cost flat in T (≤ 1.3× growth between successive T): {'met' if flat else 'NOT met'}")
    print("\n" + "\n".join(checks))
    if args.out is not None:
        args.out.write_text(json.dumps({"rows": rows, "heads": head_rows, "checks": checks}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
