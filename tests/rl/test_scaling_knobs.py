"""The scaling knobs in the SAC agent: separate actor/critic widths, LayerNorm/skip trunks, α-derived task weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from agents.config import SACConfig, TrainConfig
from agents.sac import MultiTaskSAC
from mtrl.balancers import make_balancer
from mtrl.balancers.alpha_weights import AlphaWeights, alpha_task_weights
from mtrl.config import ConfigError, load_config
from mtrl.nn import VanillaMLP
from mtrl.replay import Batch
from tests.rl.helpers import agent_params, hand_written_sac_update, random_batch

T, O, A, N = 3, 5, 2, 8


def _linear_widths(module: nn.Module) -> list[int]:
    return [m.out_features for m in module.modules() if isinstance(m, nn.Linear)]


def test_separate_widths_follow_one_rule() -> None:
    cfg = SACConfig(hidden_sizes=(32, 32), critic_hidden_sizes=(48, 48, 48))
    assert cfg.actor_widths == (32, 32) and cfg.critic_widths == (48, 48, 48)
    agent = MultiTaskSAC(T, O, A, cfg, make_balancer("ew", T), make_balancer("ew", T))
    assert _linear_widths(agent.actor.net.trunk) == [32, 32]
    assert _linear_widths(agent.critic.q1.trunk) == _linear_widths(agent.critic.q2.trunk) == [48, 48, 48]
    cfg = SACConfig(actor_hidden_sizes=(16,))
    assert cfg.actor_widths == (16,) and cfg.critic_widths == cfg.hidden_sizes


def test_width_overrides_load_and_bad_widths_are_refused() -> None:
    cfg = load_config(
        TrainConfig,
        "configs/toy_sac.yaml",
        ["sac.actor_hidden_sizes=[24]", "sac.critic_hidden_sizes=[40, 40]", "sac.layer_norm=true", "device=cpu"],
    )
    assert cfg.sac.actor_widths == (24,) and cfg.sac.critic_widths == (40, 40) and cfg.sac.layer_norm
    for key in ("sac.critic_hidden_sizes=[]", "sac.actor_hidden_sizes=[64, 0]", "sac.hidden_sizes=[]"):
        with pytest.raises(ConfigError, match=r"expected a non-empty list of positive widths"):
            load_config(TrainConfig, "configs/toy_sac.yaml", [key, "device=cpu"])


def test_layer_norm_and_skip_trunks_train_with_a_gradient_balancer() -> None:
    """LayerNorm trunks run the task_partitioned strategy (the capture hooks the LayerNorms) and learn."""
    cfg = SACConfig(hidden_sizes=(16, 16), batch_per_task=N, layer_norm=True, skip_connections=True)
    torch.manual_seed(0)
    agent = MultiTaskSAC(T, O, A, cfg, make_balancer("upgrad", T), make_balancer("upgrad", T))
    assert isinstance(agent.actor.net.trunk, VanillaMLP) and isinstance(agent.critic.q1.trunk, VanillaMLP)
    assert agent.critic.q1.trunk.skips == (False, True)
    # auto = task_partitioned (the agent passes its captures), which refuses shared parameters it does not hook
    norms = [m for m in agent.critic_capture.layers if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 2  # two Q-networks, a LayerNorm before layer 1 and before the heads
    before = agent_params(agent)
    agent.update(random_batch(T, O, A, N, torch.device("cpu")))
    changed = [not torch.equal(a, b) for a, b in zip(before, agent_params(agent), strict=True)]
    assert all(changed[: len(list(agent.actor.parameters()))])  # every actor tensor moved, LayerNorms included


def _weighted_sac_update(agent: MultiTaskSAC, batch: Batch) -> None:
    """Hand-written multi-task SAC whose critic and actor losses are weighted by w = T·softmax(−log α) from the
    temperatures before the update (Meta-World+ use_task_weights, summed over tasks)."""
    hand_written_sac_update(agent, batch, alpha_task_weights(agent.log_alpha_T).to(torch.float32))


def test_alpha_weights_is_the_weighted_sac_update() -> None:
    """alpha_weights (base ew) through the agent = the hand-written weighted update, with the weights from the
    temperatures before each update; it differs from plain ew once the temperatures differ."""
    cfg = SACConfig(hidden_sizes=(16, 16), batch_per_task=N, init_temperature=0.5)
    agents = []
    for key in ("alpha_weights", "alpha_weights", "ew"):
        torch.manual_seed(0)
        agents.append(MultiTaskSAC(T, O, A, cfg, make_balancer(key, T), make_balancer(key, T)))
    ours, by_hand, plain = agents
    for agent in agents:
        with torch.no_grad():
            agent.log_alpha_T.copy_(torch.tensor([-1.0, 0.0, 0.7]))
    assert all(isinstance(b, AlphaWeights) for b in ours.alpha_weighted) and len(ours.alpha_weighted) == 2
    for step in range(3):
        batch = random_batch(T, O, A, N, torch.device("cpu"), seed=step)
        before = alpha_task_weights(ours.log_alpha_T)
        for agent, update in ((ours, None), (by_hand, _weighted_sac_update), (plain, None)):
            torch.manual_seed(100 + step)
            if update is None:
                agent.update(batch, with_metrics=False)
            else:
                update(agent, batch)
        for balancer in ours.alpha_weighted:
            torch.testing.assert_close(balancer.weights_T, before, rtol=0, atol=0)
        for a, b in zip(agent_params(ours), agent_params(by_hand), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(agent_params(ours), agent_params(plain), strict=True))


def test_alpha_weights_resolves_with_any_base_and_refuses_closure_bases() -> None:
    cfg = load_config(
        TrainConfig, "configs/toy_sac.yaml", ["balancer=alpha_weights", "balancer_hparams={base: pcgrad}", "device=cpu"]
    )
    assert cfg.critic_balancer == cfg.actor_balancer == "alpha_weights"
    assert cfg.critic_balancer_hparams == {"base": "pcgrad", "base_hparams": {"seed": 0}}  # the run seed reaches pcgrad
    uw = load_config(
        TrainConfig, "configs/toy_sac.yaml", ["balancer=alpha_weights", "balancer_hparams={base: uw}", "device=cpu"]
    )
    assert uw.actor_balancer == "ew"  # a positive-loss base cannot take the actor losses, as uw alone
    with pytest.raises(ConfigError, match="base cannot be 'sgsu'"):
        load_config(
            TrainConfig,
            "configs/toy_sac.yaml",
            ["balancer=alpha_weights", "balancer_hparams={base: sgsu}", "device=cpu"],
        )


def test_update_timing_times_every_variant_round_robin() -> None:
    from agents.update_timing import time_update_variants

    variants = {"plain": ["sac.hidden_sizes=[16]"], "layer norm": ["sac.hidden_sizes=[16]", "sac.layer_norm=true"]}
    results = time_update_variants(Path("configs/toy_sac.yaml"), variants, rounds=3, blocks=2, warmup=1)
    assert [r.label for r in results] == list(variants)
    for r in results:
        assert len(r.times) == 6 and len(r.block_medians) == 2 and all(t > 0 for t in r.times)
        low, high = r.range_ms
        assert low <= high and min(r.times) * 1e3 <= r.median_ms <= max(r.times) * 1e3


def test_loop_throughput_counts_the_updates_after_warm_up(tmp_path: Path) -> None:
    from agents.update_timing import loop_throughput

    overrides = ["total_steps=30", "sac.warmup_steps=20", "sac.hidden_sizes=[16]", "eval_every=0", "eval_episodes=1",
                 "checkpoint_every=0", "progress=false", f"logdir={tmp_path}", "run_name=tp", "device=cpu"]  # fmt: skip
    result = loop_throughput(load_config(TrainConfig, "configs/toy_sac.yaml", overrides), skip=2)
    assert result["timed_updates"] == 30 - 20 - 2 - 1 and result["vector_steps_per_s"] > 0
