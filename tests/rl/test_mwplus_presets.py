"""The Meta-World+ presets (configs/mt10_mwplus.yaml, configs/mt50_mwplus.yaml) load, state what they derive, and train.

Their update is proved equal to the reference's in tests/rl/test_mwplus_equivalence.py; here: the values each
preset sets (and derives for MT50), a few training steps of their agent (on the toy suite by default, real
Meta-World with ``-m slow``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.config import TrainConfig
from agents.trainer import Trainer
from mtrl.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
PRESETS = {"MT10": ROOT / "configs" / "mt10_mwplus.yaml", "MT50": ROOT / "configs" / "mt50_mwplus.yaml"}
SMALL = ["sac.hidden_sizes=[32, 32]", "sac.batch_per_task=8", "checkpoint_every=0", "progress=false", "device=cpu"]


@pytest.mark.parametrize("benchmark", list(PRESETS))
def test_preset_sets_the_reference_update(benchmark: str) -> None:
    cfg = load_config(TrainConfig, str(PRESETS[benchmark]), [])
    sac = cfg.sac
    assert cfg.env.benchmark == benchmark and len(cfg.env.tasks) == int(benchmark[2:])
    assert cfg.env.protocol == "metaworld-v3" and cfg.protocol_details["reward_function_version"] == "v2"
    assert (sac.hidden_sizes, sac.lr, sac.alpha_lr, sac.gamma, sac.tau) == ((400, 400, 400), 3e-4, 3e-4, 0.99, 0.005)
    assert (sac.warmup_steps, sac.buffer_capacity, cfg.total_steps) == (4000, 1_000_000, 2_000_000)
    assert (sac.clip_of("actor"), sac.clip_of("critic"), sac.grad_clip_formula) == (1.0, 1.0, "optax")
    assert sac.actor_adam_eps == sac.critic_adam_eps == sac.alpha_adam_eps == 1e-5
    assert (sac.alpha_loss_reduction, sac.tanh_log_det, sac.q_input_order) == ("mean", "exact", "action_obs")
    assert (sac.trunk_init, sac.actor_head_init, sac.critic_head_init) == ("he_uniform", 1e-3, 3e-3)
    assert cfg.critic_balancer == cfg.actor_balancer == "ew"
    assert cfg.critic_balancer_hparams == cfg.actor_balancer_hparams == {"mean": True}
    assert cfg.eval_episodes == 50


def test_mt50_preset_derives_batch_and_cadence() -> None:
    """400 finished episodes over 50 tasks (all ending together every 500 steps) = every 4,000 vector steps; a
    batch that divides by 50 (the reference's 1280 does not)."""
    mt10 = load_config(TrainConfig, str(PRESETS["MT10"]), [])
    mt50 = load_config(TrainConfig, str(PRESETS["MT50"]), [])
    episodes_per_eval, episode_steps = 200_000 // 500, mt50.protocol.max_episode_steps
    for cfg, T in ((mt10, 10), (mt50, 50)):
        rounds = next(r for r in range(1, 1000) if (r * T) % episodes_per_eval == 0)  # rounds of T episodes
        assert cfg.eval_every == rounds * episode_steps
    assert (mt10.eval_every, mt50.eval_every) == (20_000, 4_000)
    assert (mt50.sac.batch_per_task * 50) % 50 == 0 and mt10.sac.batch_per_task * 10 == 1280


@pytest.mark.parametrize("benchmark", list(PRESETS))
def test_preset_agent_trains_on_the_toy_suite(tmp_path: Path, benchmark: str) -> None:
    """The preset's SAC (every Meta-World+ field on) trains a few steps: updates happen, values stay finite."""
    overrides = ["env.benchmark=toy", "env.protocol=toy", "total_steps=60", "sac.warmup_steps=20", "eval_every=0",
                 "eval_episodes=1"]  # fmt: skip
    trainer = Trainer(load_config(TrainConfig, str(PRESETS[benchmark]), [f"logdir={tmp_path}", *SMALL, *overrides]))
    results = trainer.train()
    assert results["complete"] and trainer.agent.num_updates == 40
    assert trainer.agent.cfg.tanh_log_det == "exact" and set(trainer.agent.grad_norms) == {"actor", "critic"}
    metrics = trainer.last_metrics
    assert all(abs(v) < 1e6 for v in metrics.values())  # finite
    assert {"train/critic_grad_norm", "train/actor_grad_norm"} <= set(metrics)


@pytest.mark.slow
@pytest.mark.parametrize("benchmark", list(PRESETS))
def test_preset_trains_on_real_metaworld(tmp_path: Path, benchmark: str) -> None:
    """A few vector steps of the preset on real Meta-World (one evaluation episode per task at the end)."""
    overrides = ["total_steps=12", "sac.warmup_steps=6", "eval_every=0", "eval_episodes=1"]
    trainer = Trainer(load_config(TrainConfig, str(PRESETS[benchmark]), [f"logdir={tmp_path}", *SMALL, *overrides]))
    results = trainer.train()
    assert results["complete"] and trainer.agent.num_updates == 6
    assert len(results["summary"]["final"]["success"]) == int(benchmark[2:])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sac.actor_adam_eps=0", "bad value 0.0 for 'sac.actor_adam_eps': expected a number > 0"),
        ("sac.critic_grad_clip=-1", "bad value -1.0 for 'sac.critic_grad_clip': expected a number > 0, or null"),
        ("sac.critic_head_init=0", "bad value 0.0 for 'sac.critic_head_init': expected a number > 0, or null"),
        ("sac.grad_clip_formula=jax", "bad value 'jax' for 'sac.grad_clip_formula'; valid choices: 'torch', 'optax'"),
        ("sac.alpha_loss_reduction=max", "bad value 'max' for 'sac.alpha_loss_reduction'; valid choices: 'sum'"),
        ("sac.tanh_log_det=approx", "bad value 'approx' for 'sac.tanh_log_det'; valid choices: 'epsilon', 'exact'"),
        ("sac.trunk_init=xavier", "bad value 'xavier' for 'sac.trunk_init'; valid choices: 'torch', 'he_uniform'"),
        ("sac.q_input_order=obs", "bad value 'obs' for 'sac.q_input_order'; valid choices: 'obs_action'"),
    ],
)
def test_bad_values_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, str(PRESETS["MT10"]), [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
