"""The width presets of Meta-World+'s scaling results: the reference MT10 preset with other widths, and they train."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from agents.config import TrainConfig, build_balancers, num_tasks_of
from agents.sac import MultiTaskSAC
from mtrl.config import config_to_dict, load_config
from tests.helpers import run_script
from tests.rl.helpers import agent_params, random_batch

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "configs" / "mt10_mwplus.yaml"
#: preset -> (actor widths, critic widths) as published (comments of the preset files)
PRESETS = {
    "mt10_mwplus_width4096.yaml": ((4096,) * 3, (4096,) * 3),
    "mt10_mwplus_critic1024.yaml": ((400,) * 3, (1024,) * 3),
}
WIDTH_KEYS = ("hidden_sizes", "actor_hidden_sizes", "critic_hidden_sizes")
OBS_DIM, ACTION_DIM = 39, 4  # Meta-World v3 observation (without the one-hot) and action sizes


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_the_reference_preset_with_other_widths(name: str) -> None:
    cfg = load_config(TrainConfig, ROOT / "configs" / name, ["device=cpu"])
    assert (cfg.sac.actor_widths, cfg.sac.critic_widths) == PRESETS[name]
    reference = load_config(TrainConfig, REFERENCE, ["device=cpu"])
    ours, theirs = config_to_dict(cfg), config_to_dict(reference)
    for tree in (ours, theirs):
        for key in WIDTH_KEYS:
            tree["sac"].pop(key)
    assert ours == theirs


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_agent_updates(name: str) -> None:
    """The preset's agent (MT10's T, observation and action sizes), widths scaled down with actor and critic kept
    apart, takes three updates on a stratified batch: every parameter group moves and the losses stay finite."""
    overrides = ["sac.actor_hidden_sizes=[16, 16, 16]", "sac.critic_hidden_sizes=[24, 24, 24]", "device=cpu"]
    cfg = load_config(TrainConfig, ROOT / "configs" / name, overrides)
    T = num_tasks_of(cfg)
    critic, actor = build_balancers(cfg, T)
    torch.manual_seed(0)
    agent = MultiTaskSAC(T, OBS_DIM, ACTION_DIM, cfg.sac, critic, actor)
    assert _widths(agent.actor) == [16, 16, 16] and _widths(agent.critic) == [24, 24, 24] * 2
    before = agent_params(agent)
    for step in range(3):
        metrics = agent.update(random_batch(T, OBS_DIM, ACTION_DIM, 4, torch.device("cpu"), seed=step))
        assert all(math.isfinite(v) for v in metrics.values())
    assert all(not torch.equal(a, b) for a, b in zip(before, agent_params(agent), strict=True))


def _widths(net: nn.Module) -> list[int]:
    return [m.out_features for m in net.modules() if isinstance(m, nn.Linear)]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_trains_a_few_steps(tmp_path: Path, name: str) -> None:
    """The preset file itself through scripts/train.py on real MT10: 12 vector steps, 8 of them warm-up, widths
    scaled down (actor and critic kept apart), 4 rows per task and one final evaluation episode per task
    (~140 s each on the shared 2-core machine, most of it the 500-step evaluation episodes)."""
    proc = run_script(
        "train",
        str(ROOT / "configs" / name),
        "total_steps=12",
        "sac.warmup_steps=8",
        "sac.batch_per_task=4",
        "sac.actor_hidden_sizes=[16, 16, 16]",
        "sac.critic_hidden_sizes=[24, 24, 24]",
        "eval_every=0",
        "eval_episodes=1",
        "checkpoint_every=0",
        "checkpoint_replay=false",
        "progress=false",
        "device=cpu",
        f"logdir={tmp_path}",
        "run_name=preset",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "preset" / "results.json").read_text())
    assert results["steps"] == 12 and len(results["summary"]["final"]["success"]) == 10
    saved = (tmp_path / "preset" / "config.yaml").read_text()
    assert "critic_hidden_sizes:\n  - 24" in saved or "critic_hidden_sizes: [24, 24, 24]" in saved
