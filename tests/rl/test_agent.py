"""Multi-task SAC agent: shapes, `ew` = plain multi-task SAC exactly, determinism, acting, state."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from agents.config import SACConfig, TrainConfig, resolve_balancers
from agents.networks import Actor, TwinCritic, polyak_update
from agents.sac import EvalAgent, MultiTaskSAC
from mtrl.balancers import make_balancer
from mtrl.config import ConfigError
from mtrl.replay import Batch
from tests.rl.helpers import agent_params, hand_written_sac_update, random_batch

T, O, A, N = 3, 5, 2, 8
CFG = SACConfig(hidden_sizes=(32, 32), batch_per_task=N, init_temperature=0.5)


def _agent(device: torch.device, balancer: str = "ew", seed: int = 0, cfg: SACConfig = CFG) -> MultiTaskSAC:
    torch.manual_seed(seed)
    return MultiTaskSAC(T, O, A, cfg, make_balancer(balancer, T), make_balancer(balancer, T), device=device)


def _batch(device: torch.device, seed: int = 0) -> Batch:
    return random_batch(T, O, A, N, device, seed)


_params = agent_params


def test_update_shapes_and_metrics(device: torch.device) -> None:
    agent = _agent(device)
    metrics = agent.update(_batch(device))
    for key in (
        "train/critic_loss",
        "train/actor_loss",
        "train/alpha_loss",
        "train/alpha/task2",
        "train/critic_loss/task0",
    ):
        assert key in metrics and np.isfinite(metrics[key])
    assert agent.log_alpha_T.shape == (T,)
    assert agent.target_entropy == -A
    assert agent.update(_batch(device, 1), with_metrics=False) == {}
    assert agent.num_updates == 2


def test_ew_reproduces_plain_multitask_sac(device: torch.device) -> None:
    ours, plain = _agent(device), _agent(device)
    assert all(torch.equal(a, b) for a, b in zip(_params(ours), _params(plain), strict=True))
    for step in range(3):
        batch = _batch(device, seed=step)
        torch.manual_seed(100 + step)
        ours.update(batch, with_metrics=False)
        torch.manual_seed(100 + step)
        hand_written_sac_update(plain, batch)
        for a, b in zip(_params(ours), _params(plain), strict=True):
            assert torch.equal(a, b)  # exact: the engine's ew path is one backward of Σ_t L_t


def test_two_runs_one_seed_identical(device: torch.device) -> None:
    losses = []
    for _ in range(2):
        agent = _agent(device, seed=7)
        torch.manual_seed(11)
        losses.append([agent.update(_batch(device, s))["train/critic_loss"] for s in range(3)])
    assert losses[0] == losses[1]


def test_polyak_update_is_a_convex_step() -> None:
    p, tp = [torch.ones(3)], [torch.zeros(3)]
    polyak_update(p, tp, 0.25)
    assert torch.equal(tp[0], torch.full((3,), 0.25))
    with pytest.raises(ValueError):
        polyak_update(p, [], 0.1)


def test_actor_squashing_and_log_prob(device: torch.device) -> None:
    torch.manual_seed(0)
    actor = Actor(T, O, A, (16,)).to(device)
    obs = torch.randn(T, 1000, O, device=device)
    noise = torch.randn(T, 1000, A, device=device)
    action, log_prob = actor(obs, noise)
    assert action.shape == (T, 1000, A) and log_prob.shape == (T, 1000)
    assert bool((action.abs() < 1).all())
    # the squashed-Gaussian density with the same noise: u = μ + σε, a = tanh(u),
    # log π(a) = Σ_A log N(u; μ, σ) − Σ_A log(1 − tanh(u)² + 1e-6)   (SAC App. C, eq. 21)
    mean, log_std = actor.distribution(obs)
    u = mean + log_std.exp() * noise
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1) - torch.log(
        1 - torch.tanh(u) ** 2 + 1e-6
    ).sum(-1)
    torch.testing.assert_close(action, torch.tanh(u), rtol=0, atol=0)
    torch.testing.assert_close(log_prob, expected, rtol=1e-5, atol=1e-5)
    # without explicit noise the actor draws it from the global generator, like randn_like
    torch.manual_seed(1)
    drawn = torch.randn(T, 1000, A, device=device)
    torch.manual_seed(1)
    torch.testing.assert_close(actor(obs)[1], actor(obs, drawn)[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="noise_TNA must have shape"):
        actor(obs, noise[:, :10])


def test_heads_see_only_their_task(device: torch.device) -> None:
    torch.manual_seed(0)
    critic = TwinCritic(T, O, A, (16,)).to(device)
    obs, act = torch.randn(T, 4, O, device=device), torch.randn(T, 4, A, device=device)
    q1, _ = critic(obs, act)
    q1[1].sum().backward()
    head_grad = critic.q1.heads.weight.grad
    assert head_grad is not None and bool((head_grad[[0, 2]] == 0).all()) and bool((head_grad[1] != 0).any())


def test_act_and_eval_adapter(device: torch.device) -> None:
    torch.manual_seed(0)
    agent = MultiTaskSAC(
        T,
        O,
        A,
        CFG,
        make_balancer("ew", T),
        make_balancer("ew", T),
        device=device,
        action_low=[-2.0, 0.0],
        action_high=[2.0, 1.0],
    )
    obs = np.random.default_rng(0).normal(size=(T, O + T))
    action = agent.act(obs)
    assert (
        action.shape == (T, A)
        and (action[:, 0] >= -2).all()
        and (action[:, 1] >= 0).all()
        and (action[:, 1] <= 1).all()
    )
    np.testing.assert_allclose(agent.to_policy_action(agent.to_env_action(torch.tensor(action[:, :]) * 0).numpy()), 0)
    ev = EvalAgent(agent)
    np.testing.assert_array_equal(ev.eval_action(obs), ev.eval_action(obs))  # deterministic
    ev.reset(np.ones(T, dtype=bool))
    with pytest.raises(ValueError, match="observations must have shape"):
        agent.act(np.zeros((T, O + 1)))


def test_state_dict_round_trip(device: torch.device) -> None:
    a, b = _agent(device, seed=0), _agent(device, seed=1)
    a.update(_batch(device))
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as through torch.save: Adam shares loaded tensors
    assert all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))
    torch.manual_seed(5)
    la = a.update(_batch(device, 2))
    torch.manual_seed(5)
    lb = b.update(_batch(device, 2))
    assert la == lb


def test_balancer_resolution_and_errors() -> None:
    cfg, notes = resolve_balancers(TrainConfig(balancer="uw"))
    assert (cfg.critic_balancer, cfg.actor_balancer) == ("uw", "ew") and "positive losses" in notes[0]
    cfg, notes = resolve_balancers(TrainConfig(balancer="imtl_g", actor_balancer="pcgrad"))
    assert (cfg.critic_balancer, cfg.actor_balancer, notes) == ("imtl_g", "pcgrad", [])
    with pytest.raises(ConfigError, match="actor_balancer"):
        resolve_balancers(TrainConfig(actor_balancer="famo"))
    with pytest.raises(ConfigError, match="valid choices"):
        TrainConfig(balancer="nope")
    with pytest.raises(ValueError, match="separate balancer instances"):
        shared = make_balancer("ew", T)
        MultiTaskSAC(T, O, A, CFG, shared, shared)


def test_build_agent_takes_sizes_bounds_and_names_from_the_envs() -> None:
    """The one factory of the trainer, evaluate.py and bench_train.py: T, O, A, bounds and names from the env."""
    from agents.config import EnvConfig, resolve_config
    from agents.sac import build_agent
    from envs.toy import make_toy_envs

    cfg, _ = resolve_config(
        TrainConfig(env=EnvConfig(benchmark="toy", protocol="toy", toy_num_tasks=3), sac=CFG, balancer="pcgrad")
    )
    envs = make_toy_envs(3, seed=0)
    try:
        agent = build_agent(cfg, envs, "cpu")
        space = envs.single_action_space
        assert (agent.num_tasks, agent.obs_dim, agent.action_dim) == (3, envs.obs_dim, envs.action_dim)
        assert agent.task_names == list(envs.task_names)
        assert agent.critic_balancer is not agent.actor_balancer and agent.critic_balancer.num_tasks == 3
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)  # type: ignore[attr-defined]
        assert torch.equal(agent.action_bias_A - agent.action_scale_A, low.float())
        assert torch.equal(agent.action_bias_A + agent.action_scale_A, high.float())
    finally:
        envs.close()
