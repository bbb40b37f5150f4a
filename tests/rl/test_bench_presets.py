"""The balancer-benchmark pilot's presets (``configs/bench/*.yaml``, docs/benchmark.md): each is the CPU preset with
only the pre-registered keys changed, and each trains on its real Meta-World task set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.config import TrainConfig
from agents.trainer import Trainer
from mtrl.config import config_to_dict, load_config
from tests.helpers import flat_sections

ROOT = Path(__file__).resolve().parents[2]
CPU_PRESET = ROOT / "configs" / "mt10_sac_cpu.yaml"
BENCH = ROOT / "configs" / "bench"
#: The keys in which a pilot preset differs from the CPU preset: the task set, the budget and the evaluation
#: (all three), and the trunk (mix4_small only).
BUDGET_KEYS = {"total_steps", "eval_every", "eval_episodes", "log_every", "checkpoint_every"}
CHANGED = {
    "mix4.yaml": {"env.benchmark", "env.tasks", *BUDGET_KEYS},
    "mix4_small.yaml": {"env.benchmark", "env.tasks", "sac.hidden_sizes", *BUDGET_KEYS},
    "mix6.yaml": {"env.benchmark", "env.tasks", *BUDGET_KEYS},
}


def _load(path: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, path, ["device=cpu", *overrides])


def test_every_bench_preset_is_listed() -> None:
    assert sorted(p.name for p in BENCH.glob("*.yaml")) == sorted(CHANGED)


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_preset_is_the_cpu_preset_with_the_pilot_keys_changed(name: str) -> None:
    ours, cpu = flat_sections(config_to_dict(_load(BENCH / name))), flat_sections(config_to_dict(_load(CPU_PRESET)))
    differ = {k for k in ours.keys() | cpu.keys() if ours.get(k) != cpu.get(k)}
    assert differ - {"protocol_details"} == CHANGED[name]  # protocol_details is resolved from eval_episodes
    cfg = _load(BENCH / name)
    assert cfg.env.benchmark == "custom" and 4 <= len(cfg.env.tasks) <= 8  # the 4-8 tasks
    assert cfg.eval_episodes is not None and cfg.eval_episodes >= 20  # >= 20 episodes per task per evaluation
    assert cfg.total_steps // cfg.eval_every >= 3  # the score is the mean of the last 3 evaluations


def test_small_and_six_task_presets_change_one_thing_of_mix4() -> None:
    mix4 = flat_sections(config_to_dict(_load(BENCH / "mix4.yaml")))
    for name, key in (("mix4_small.yaml", "sac.hidden_sizes"), ("mix6.yaml", "env.tasks")):
        other = flat_sections(config_to_dict(_load(BENCH / name)))
        assert {k for k in mix4 if mix4[k] != other[k]} == {key}
    assert _load(BENCH / "mix6.yaml").env.tasks[:4] == _load(BENCH / "mix4.yaml").env.tasks


@pytest.mark.parametrize(
    "name",
    # building a custom Meta-World set costs ~2 s of CPU per task, and the final evaluation episode 500 vector
    # steps: mix4 in the default run (~10-20 s), the other two (mix4's tasks with another trunk; two tasks more) slow
    ["mix4.yaml", *(pytest.param(n, marks=pytest.mark.slow) for n in ("mix4_small.yaml", "mix6.yaml"))],
)
def test_preset_trains_on_its_task_set(tmp_path: Path, name: str) -> None:
    """The preset through the trainer on its real Meta-World tasks: 6 vector steps (4 of them random warm-up, then
    two updates of 4 rows per task) and one evaluation episode per task at the end."""
    overrides = ["total_steps=6", "sac.warmup_steps=4", "sac.batch_per_task=4", "sac.buffer_capacity=1000",
                 "eval_every=0", "eval_episodes=1", "checkpoint_every=0", "log_every=1", "progress=false",
                 f"logdir={tmp_path}", "run_name=run"]  # fmt: skip
    cfg = _load(BENCH / name, *overrides)
    results = Trainer(cfg).train()
    assert results["complete"] and results["steps"] == 6
    assert set(results["summary"]["final"]["success"]) == set(cfg.env.tasks)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [row for row in logged if "train/critic_loss" in row]
    assert [row["step"] for row in losses] == [5, 6]  # the two updates after the warm-up
