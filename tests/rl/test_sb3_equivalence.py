"""Our SAC update is stable-baselines3's, to float precision, at T = 1 without a task input.

Both agents start from the same weights (ours copied into SB3's actor, critics and target critics)
and take updates on the same batches with the same reparametrisation noise: the same ``ε`` for the
next-state action of the TD target and for the policy action of the actor and temperature losses
(SB3 draws them inside ``torch.distributions.Normal.rsample``, which the test feeds from a queue).
In float64 their actor, critics, target critics and temperature then agree to 1e-12 relative (SB3's
cast of observations to float32 is bypassed for this: it is a dtype choice, not part of the update).

The deliberate differences that remain, none of which changes this update:

* the order of the random draws (SB3 samples ``ã`` for the current states first, we sample ``a'``
  for the next states first), hence different random streams in training;
* the multi-task layout (per-task heads as one batched ``(T, in, out)`` weight, stratified replay:
  at ``T = 1`` the same uniform sampling with replacement);
* ``sac.task_input``: ``one_hot`` appends a constant 1 at ``T = 1`` (a second first-layer bias), and
  ``embedding`` a learned vector; SB3 has neither (``none`` is the reference's architecture).

The two details the check pins down are tested separately too: the temperature loss's gradient is
taken with respect to ``log α``, and the critic loss carries the factor ½.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.config import SACConfig
from agents.networks import Actor, TwinCritic
from agents.sac import MultiTaskSAC, UpdateNoise
from mtrl.balancers import make_balancer
from mtrl.replay import Batch

sb3 = pytest.importorskip("stable_baselines3")

O, A, N = 39, 4, 32
CFG = SACConfig(hidden_sizes=(32, 32), task_input="none", batch_per_task=N, warmup_steps=0)


class BoxEnv(gym.Env[np.ndarray, np.ndarray]):
    """The spaces of a Meta-World task (39-d observations, 4-d actions in [-1, 1]); never stepped here."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (O,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (A,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(O), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(O), 0.0, False, False, {}


def _ours(cfg: SACConfig = CFG) -> MultiTaskSAC:
    agent = MultiTaskSAC(1, O, A, cfg, make_balancer("ew", 1), make_balancer("ew", 1))
    for net in (agent.actor, agent.critic, agent.critic_target):
        net.double()
    agent.log_alpha_T.data = agent.log_alpha_T.data.double()
    return agent


def _copy_mlp(trunk: torch.nn.Sequential, head_w: torch.Tensor, head_b: torch.Tensor, target: Any) -> None:
    """Our trunk + one task's head (``(in, out)``, ``(1, out)``) into an SB3 ``Sequential`` ending in Linear."""
    linears = [m for m in target if isinstance(m, torch.nn.Linear)]
    ours = [m for m in trunk if isinstance(m, torch.nn.Linear)]
    assert len(linears) == len(ours) + 1
    with torch.no_grad():
        for mine, theirs in zip(ours, linears, strict=False):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
        linears[-1].weight.copy_(head_w.T)
        linears[-1].bias.copy_(head_b.reshape(-1))


def _sb3_like(agent: MultiTaskSAC) -> Any:
    """SB3's SAC with ``CFG``'s settings (agents.sb3.make_sb3_sac), float64, holding ``agent``'s weights."""
    from agents.sb3 import make_sb3_sac

    model = make_sb3_sac(BoxEnv(), CFG, seed=0)
    model.policy.double()
    model.log_ent_coef.data = model.log_ent_coef.data.double()
    actor = model.actor
    w, b = agent.actor.net.heads.weight[0], agent.actor.net.heads.bias[0]  # (in, 2A), (1, 2A): [mean | log_std]
    with torch.no_grad():
        for ours, theirs in zip(
            [m for m in agent.actor.net.trunk if isinstance(m, torch.nn.Linear)],
            [m for m in actor.latent_pi if isinstance(m, torch.nn.Linear)],
            strict=True,
        ):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
        actor.mu.weight.copy_(w[:, :A].T)
        actor.mu.bias.copy_(b[0, :A])
        actor.log_std.weight.copy_(w[:, A:].T)
        actor.log_std.bias.copy_(b[0, A:])
    for critic, sb3_critic in ((agent.critic, model.critic), (agent.critic_target, model.critic_target)):
        for q, qf in ((critic.q1, sb3_critic.qf0), (critic.q2, sb3_critic.qf1)):
            _copy_mlp(q.trunk, q.heads.weight[0], q.heads.bias[0], qf)
    assert torch.equal(model.log_ent_coef.detach(), agent.log_alpha_T.detach())
    from stable_baselines3.common.logger import configure

    model.set_logger(configure(None, []))
    return model


def _batch(rng: np.random.Generator) -> Batch:
    t = lambda x: torch.as_tensor(x, dtype=torch.float64)[None]  # noqa: E731  (1, n, ·): T = 1
    return Batch(
        obs=t(rng.normal(size=(N, O))),
        action=t(rng.uniform(-1, 1, size=(N, A))),
        reward=t(rng.normal(size=N)),
        next_obs=t(rng.normal(size=(N, O))),
        terminated=t((rng.random(N) < 0.2).astype(np.float64)),
    )


def _sb3_update(model: Any, batch: Batch, noise: UpdateNoise, monkeypatch: pytest.MonkeyPatch) -> None:
    """One ``SAC.train`` step on ``batch`` whose two ``rsample`` draws are ``noise.obs`` then ``noise.next_obs``."""
    from stable_baselines3.common.type_aliases import ReplayBufferSamples

    samples = ReplayBufferSamples(
        observations=batch.obs[0],
        actions=batch.action[0],
        next_observations=batch.next_obs[0],
        dones=batch.terminated[0][:, None],
        rewards=batch.reward[0][:, None],
    )
    queue = [noise.obs[0], noise.next_obs[0]]  # SB3: actions_pi for the current states first

    def rsample(self: torch.distributions.Normal, sample_shape: Any = torch.Size()) -> torch.Tensor:  # noqa: B008
        return self.loc + self.scale * queue.pop(0)

    with monkeypatch.context() as m:
        m.setattr(torch.distributions.Normal, "rsample", rsample)
        # SB3 casts Box observations to float32 before its networks; keep float64 for the comparison
        m.setattr("stable_baselines3.common.policies.preprocess_obs", lambda obs, *args, **kwargs: obs)
        m.setattr(model.replay_buffer, "sample", lambda *args, **kwargs: samples)
        model.train(gradient_steps=1, batch_size=N)
    assert not queue, "SB3 drew a different number of samples than expected"


def _pairs(agent: MultiTaskSAC, model: Any) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, ours, SB3's) for every parameter, mapped back into SB3's layout."""
    actor = model.actor
    linears = [m for m in agent.actor.net.trunk if isinstance(m, torch.nn.Linear)]
    theirs = [m for m in actor.latent_pi if isinstance(m, torch.nn.Linear)]
    for i, (mine, ref) in enumerate(zip(linears, theirs, strict=True)):
        yield f"actor.trunk{i}.weight", mine.weight, ref.weight
        yield f"actor.trunk{i}.bias", mine.bias, ref.bias
    w, b = agent.actor.net.heads.weight[0], agent.actor.net.heads.bias[0, 0]
    yield "actor.mu.weight", w[:, :A].T, actor.mu.weight
    yield "actor.mu.bias", b[:A], actor.mu.bias
    yield "actor.log_std.weight", w[:, A:].T, actor.log_std.weight
    yield "actor.log_std.bias", b[A:], actor.log_std.bias
    for label, critic, ref_critic in (("critic", agent.critic, model.critic), ("target", agent.critic_target,
                                                                                model.critic_target)):  # fmt: skip
        for k, (q, qf) in enumerate(((critic.q1, ref_critic.qf0), (critic.q2, ref_critic.qf1))):
            mine_l = [m for m in q.trunk if isinstance(m, torch.nn.Linear)]
            ref_l = [m for m in qf if isinstance(m, torch.nn.Linear)]
            for i, (mine, ref) in enumerate(zip(mine_l, ref_l[:-1], strict=True)):
                yield f"{label}.q{k}.{i}.weight", mine.weight, ref.weight
                yield f"{label}.q{k}.{i}.bias", mine.bias, ref.bias
            yield f"{label}.q{k}.head.weight", q.heads.weight[0].T, ref_l[-1].weight
            yield f"{label}.q{k}.head.bias", q.heads.bias[0, 0], ref_l[-1].bias
    yield "log_alpha", agent.log_alpha_T, model.log_ent_coef


def test_update_equals_stable_baselines3_sac_train(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    agent = _ours()
    model = _sb3_like(agent)
    for name, mine, ref in _pairs(agent, model):
        assert torch.equal(mine.detach(), ref.detach()), f"{name} differs before any update"
    rng = np.random.default_rng(0)
    moved = 0.0
    for _ in range(5):  # several updates: Adam's moments must agree too
        batch = _batch(rng)
        noise = UpdateNoise(
            next_obs=torch.as_tensor(rng.normal(size=(1, N, A))),
            obs=torch.as_tensor(rng.normal(size=(1, N, A))),
        )
        before = agent.actor.net.heads.weight.detach().clone()
        agent.update(batch, with_metrics=False, noise=noise)
        _sb3_update(model, batch, noise, monkeypatch)
        moved = max(moved, float((agent.actor.net.heads.weight.detach() - before).abs().max()))
        for name, mine, ref in _pairs(agent, model):
            scale = max(1.0, float(ref.detach().abs().max()))
            err = float((mine.detach() - ref.detach()).abs().max()) / scale
            assert err < 1e-12, f"{name}: ours and SB3's differ by {err:.2e} (relative) after an update"
    assert moved > 1e-5  # the updates did move the weights (the check is not vacuous)
    assert not torch.equal(agent.log_alpha_T.detach(), torch.zeros(1, dtype=torch.float64))


def test_temperature_gradient_is_taken_with_respect_to_log_alpha() -> None:
    agent = _ours()
    with torch.no_grad():
        agent.log_alpha_T.fill_(math.log(0.2))
    log_prob = torch.tensor([[-1.0, -3.0, 2.0]], dtype=torch.float64)
    agent.log_alpha_T.grad = None
    agent.alpha_losses(log_prob).sum().backward()
    expected = -(log_prob + agent.target_entropy).mean()  # ∂/∂ log α of −log α (log π + H̄): α does not enter
    assert agent.log_alpha_T.grad is not None
    torch.testing.assert_close(agent.log_alpha_T.grad[0], expected)


def test_critic_loss_is_half_the_sum_of_the_twin_mean_squared_errors() -> None:
    q1 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    q2 = torch.tensor([[0.0, 4.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    loss = MultiTaskSAC._td_losses(q1, q2, y)
    torch.testing.assert_close(loss, torch.tensor([0.5 * ((0 + 1) / 2 + (1 + 9) / 2)], dtype=torch.float64))


@pytest.mark.parametrize("mode", ["one_hot", "embedding"])
def test_task_inputs_widen_the_first_layer_and_only_embeddings_are_task_parameters(mode: str) -> None:
    T, hidden = 3, (8,)
    actor = Actor(T, O, A, hidden, task_input=mode, embedding_dim=5)  # type: ignore[arg-type]
    critic = TwinCritic(T, O, A, hidden, task_input=mode, embedding_dim=5)  # type: ignore[arg-type]
    extra = T if mode == "one_hot" else 5
    assert actor.net.trunk[0].in_features == O + extra
    assert critic.q1.trunk[0].in_features == O + A + extra
    embeddings = [p for p in actor.task_parameters() if p.dim() == 2]
    assert len(embeddings) == (1 if mode == "embedding" else 0)
    assert len(critic.task_parameters()) == 4 + (2 if mode == "embedding" else 0)  # two tables: twin critics
    obs = torch.randn(T, 2, O)
    action, log_prob = actor(obs)
    assert action.shape == (T, 2, A) and log_prob.shape == (T, 2)
    if mode == "embedding":  # row t of the table reaches only task t's outputs
        (q1, _) = critic(obs, action.detach())
        q1[1].sum().backward()
        grad = critic.input1.embedding_TD.grad
        assert grad is not None and grad[1].abs().sum() > 0
        assert grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0
