"""scripts/bench_train.py pieces: the training-loop timer, the head-cost measurement and its check, the table.

Timings themselves are not asserted (the benchmark is measured by hand on an idle machine); what is
checked is that the pieces time what they claim to and that the verdicts follow from the numbers.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from envs import make_toy_envs
from mtrl.replay import MultiTaskReplayBuffer
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("bench_train")


def test_training_loop_runs_the_trainers_step(bench: ModuleType) -> None:
    """act + env step + replay add + one update per vector step, with the preset's balancer resolution."""
    torch.set_num_threads(1)
    envs = make_toy_envs(3, seed=0)
    device = torch.device("cpu")
    buffer = MultiTaskReplayBuffer(3, envs.obs_dim, envs.action_dim, 3 * 100, device)
    obs = bench.prefill(envs, buffer, 5)
    assert buffer.size == 5
    timing, obs2 = bench.time_training_loop("MT10", "pcgrad", envs, buffer, obs, steps=2, warmup=1, device=device)
    assert buffer.size == 5 + 3  # every loop step (warm-up included) stored one transition per task
    assert obs2.shape == obs.shape
    for key in ("act_ms", "env_ms", "replay_ms", "update_ms", "update_ms_median"):
        assert timing[key] > 0
    # The loop's throughput is one vector step per (act + env + replay + update).
    per_step_s = sum(timing[k] for k in ("act_ms", "env_ms", "replay_ms", "update_ms")) / 1e3
    assert timing["vector_steps_per_s"] == pytest.approx(1 / per_step_s, rel=1e-9)
    assert timing["updates_per_s"] == pytest.approx(timing["vector_steps_per_s"])  # preset: 1 update per step
    agent, cfg = bench.build_agent("MT10", "pcgrad", envs, device)
    assert cfg.sac.hidden_sizes == (400, 400, 400) and cfg.sac.batch_per_task == 128
    assert (cfg.critic_balancer, cfg.actor_balancer) == ("pcgrad", "pcgrad")
    assert agent.critic_balancer is not agent.actor_balancer


def test_head_timer_covers_the_three_batched_heads(bench: ModuleType) -> None:
    torch.set_num_threads(1)
    assert bench.time_heads(2, 8, repeats=2, device=torch.device("cpu"), hidden=16) > 0


def test_head_check_passes_flat_and_fails_growing_costs(bench: ModuleType) -> None:
    def rows(per_task_us: list[float]) -> list[dict]:
        return [{"T": T, "ms": us * T / 1e3, "per_task_us": us} for T, us in zip((1, 10, 50), per_task_us, strict=True)]

    table, flat = bench.head_table(rows([5.0, 3.0, 3.1]))  # overheads amortised, then flat
    assert flat and "| 50 |" in table
    _, flat = bench.head_table(rows([5.0, 3.0, 15.0]))  # per-task cost ∝ T between 10 and 50 (a T² head)
    assert not flat


def test_table_puts_benchmarks_side_by_side_with_ratios(bench: ModuleType) -> None:
    ew = {"vector_steps_per_s": 10.0, "updates_per_s": 10.0, "update_ms_median": 90.0, "act_ms": 1.0, "env_ms": 5.0}
    ew |= {"replay_ms": 0.2, "update_ms": 91.0, "steps_ratio_to_ew": 1.0, "update_ratio_to_ew": 1.0}
    pc = {**ew, "vector_steps_per_s": 8.0, "updates_per_s": 8.0, "update_ms_median": 112.5}
    pc |= {"steps_ratio_to_ew": 0.8, "update_ratio_to_ew": 1.25}
    rows = [
        {"bench": "MT10", "balancer": "ew", **ew},
        {"bench": "MT10", "balancer": "pcgrad", **pc},
        {"bench": "MT10", "balancer": "sb3_sac", "update_ms": 100.0, "updates_per_s": 10.0, "ew_over_sb3": 0.9},
        {"bench": "MT50", "balancer": "ew", **ew},
    ]
    table = bench.markdown_table(rows, ["MT10", "MT50"], ["ew", "pcgrad"])
    lines = table.splitlines()
    assert lines[0].count("MT10") == 3 and lines[0].count("MT50") == 3
    pcgrad = next(line for line in lines if line.startswith("| pcgrad"))
    assert "8.00 (0.80)" in pcgrad and "112.5 (1.25)" in pcgrad and pcgrad.endswith("| – | – | – |")
    assert "our ew / SB3 = 0.90" in table
    assert np.isclose(float(pcgrad.split("|")[4].split()[0]), 112.5)


def test_interleaved_update_timer_runs_every_agent_each_round(bench: ModuleType) -> None:
    """One update per agent (and per extra closure) in every round, warm-up rounds untimed."""
    torch.set_num_threads(1)
    envs = make_toy_envs(3, seed=0)
    device = torch.device("cpu")
    buffer = MultiTaskReplayBuffer(3, envs.obs_dim, envs.action_dim, 3 * 300, device)
    bench.prefill(envs, buffer, 130)  # the preset samples 128 transitions per task
    calls: list[int] = []
    medians = bench.time_updates_interleaved(
        "MT10", ["ew", "pcgrad"], envs, buffer, rounds=2, warmup=1, device=device, extra={"x": lambda: calls.append(1)}
    )
    assert set(medians) == {"ew", "pcgrad", "x"}
    assert len(calls) == 3  # warm-up + rounds
    assert all(m > 0 for m in medians.values())
