"""sgsu and dgr in multi-task SAC: loss closures for the critic and actor groups.

Properties: sgsu with inner lr 0 is ew (the meta-gradient of an un-stepped copy is the plain
gradient); dgr with λ = 0 is ew exactly; dgr with λ > 0 leaves the heads' gradients untouched and
moves only the shared trunk; the closures reproduce the losses the update differentiated; a few
updates with each run and change the parameters; both work through the trainer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.config import SACConfig
from agents.sac import MultiTaskSAC
from agents.trainer import train_from_args
from mtrl.balancers import make_balancer
from mtrl.replay import Batch
from tests.rl.helpers import agent_params, random_batch

T, O, A, N = 3, 5, 2, 8
CFG = SACConfig(hidden_sizes=(16, 16), batch_per_task=N, init_temperature=0.5)
ROOT = Path(__file__).resolve().parents[2]


def _agent(
    device: torch.device, balancer: str, cfg: SACConfig = CFG, seed: int = 0, **hparams: Any
) -> MultiTaskSAC:
    torch.manual_seed(seed)
    return MultiTaskSAC(
        T, O, A, cfg, make_balancer(balancer, T, **hparams), make_balancer(balancer, T, **hparams), device=device
    )


def _batch(device: torch.device, seed: int = 0) -> Batch:
    return random_batch(T, O, A, N, device, seed)


_params = agent_params


def _grads(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for p in params:
        assert p.grad is not None
        out.append(p.grad.detach().clone())
    return out


def _cos(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    x, y = torch.cat([g.flatten() for g in a]), torch.cat([g.flatten() for g in b])
    return float(x @ y / (x.norm() * y.norm()))


def test_noise_argument_matches_the_default_draw(device: torch.device) -> None:
    """The update draws ε explicitly for closures; it must be the draw ``randn_like`` would make."""
    agent = _agent(device, "ew")
    obs = torch.randn(T, N, O, device=device)
    torch.manual_seed(3)
    a_default, lp_default = agent.actor(obs)
    torch.manual_seed(3)
    noise = torch.randn(T, N, A, device=device)
    a_noise, lp_noise = agent.actor(obs, noise)
    assert torch.equal(a_default, a_noise) and torch.equal(lp_default, lp_noise)


def test_closures_reproduce_the_update_losses(device: torch.device) -> None:
    agent = _agent(device, "sgsu")
    batch = _batch(device)
    alpha_T = agent.log_alpha_T.detach().exp()
    target_TN = torch.randn(T, N, device=device)
    critic_fn = agent.critic_loss_fn(batch, target_TN)
    torch.testing.assert_close(critic_fn(None, None), agent.critic_losses(batch, target_TN), rtol=0, atol=0)
    noise = torch.randn(T, N, A, device=device)
    actor_fn = agent.actor_loss_fn(batch, alpha_T, noise)
    action, log_prob = agent.actor(batch.obs, noise)
    direct = agent._actor_losses(action, log_prob, batch.obs, alpha_T)
    torch.testing.assert_close(actor_fn(None, None), direct, rtol=0, atol=0)
    # substituted trunk values change the losses (the closure really uses them)
    shifted = [p.detach() + 0.1 for p in agent.critic_shared]
    assert not torch.allclose(critic_fn(shifted, None), critic_fn(None, None))


def test_sgsu_with_zero_inner_lr_equals_ew(device: torch.device) -> None:
    # lr 1e-12 keeps the critics (and so the actor's losses) equal to float precision between the
    # two agents; the comparison is of the directions the engines write.
    cfg = SACConfig(hidden_sizes=(16, 16), batch_per_task=N, init_temperature=0.5, lr=1e-12)
    ew, sgsu = _agent(device, "ew", cfg), _agent(device, "sgsu", cfg, inner_lr=0.0)
    for step in range(2):
        batch = _batch(device, seed=step)
        torch.manual_seed(100 + step)
        ew.update(batch, with_metrics=False)
        torch.manual_seed(100 + step)
        report = sgsu.update(batch)
        assert np.isfinite(report["balancer/critic/cos_min"])  # sgsu reports its inner Gramian
        for group in ("critic", "actor"):
            shared_a = _grads(getattr(ew, f"{group}_shared"))
            shared_b = _grads(getattr(sgsu, f"{group}_shared"))
            for a, b in zip(shared_a, shared_b, strict=True):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
            for a, b in zip(_grads(getattr(ew, f"{group}_task")), _grads(getattr(sgsu, f"{group}_task")), strict=True):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_sgsu_updates_run_and_move_towards_ew(device: torch.device) -> None:
    ew, sgsu = _agent(device, "ew"), _agent(device, "sgsu", inner_lr=1e-2)
    before = _params(sgsu)
    batch = _batch(device)
    torch.manual_seed(5)
    ew.update(batch, with_metrics=False)
    torch.manual_seed(5)
    metrics = sgsu.update(batch)
    # one virtual step of 1e-2 bends the direction but keeps it a descent direction of Σ L
    cos = _cos(_grads(ew.critic_shared), _grads(sgsu.critic_shared))
    assert 0.5 < cos < 1.0 - 1e-9, cos
    for step in range(1, 3):
        metrics = sgsu.update(_batch(device, seed=step))
    assert all(np.isfinite(v) for v in metrics.values())
    changed = [not torch.equal(a, b) for a, b in zip(before, _params(sgsu), strict=True)]
    assert all(changed), "every network and the temperatures move"


def test_dgr_with_zero_lambda_equals_ew_exactly(device: torch.device) -> None:
    ew, dgr = _agent(device, "ew"), _agent(device, "dgr", lam=0.0)
    for step in range(3):
        batch = _batch(device, seed=step)
        torch.manual_seed(200 + step)
        ew.update(batch, with_metrics=False)
        torch.manual_seed(200 + step)
        dgr.update(batch, with_metrics=False)
        for a, b in zip(_params(ew), _params(dgr), strict=True):
            assert torch.equal(a, b)


def test_dgr_over_famo_runs_famos_post_step(device: torch.device) -> None:
    """``balancer=dgr`` with base ``famo`` on the critic: FAMO's post-step update runs (the agent asks the engine,
    which looks through dgr), so with λ = 0 the run is plain FAMO's, logits and parameters bit for bit."""
    agents = []
    for critic in (make_balancer("famo", T), make_balancer("dgr", T, base="famo", lam=0.0)):
        torch.manual_seed(0)
        agents.append(MultiTaskSAC(T, O, A, CFG, critic, make_balancer("ew", T), device=device))
    famo, dgr = agents
    for step in range(3):
        batch = _batch(device, seed=step)
        for agent in agents:
            torch.manual_seed(300 + step)
            agent.update(batch, with_metrics=False)
    base = dgr.critic_balancer.base  # type: ignore[attr-defined]
    assert base.prev_log_losses is None  # consumed by post_step after every update
    assert float(base.logits.detach().abs().max()) > 0  # ξ moves only in post_step
    assert torch.equal(base.logits.detach(), famo.critic_balancer.logits.detach())  # type: ignore[attr-defined]
    for a, b in zip(_params(famo), _params(dgr), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("group", ["critic", "actor"])
def test_dgr_regularises_only_the_shared_trunk(device: torch.device, group: str) -> None:
    """dgr on one group, ew on the other: from the same state, the real heads of the dgr group get
    exactly ew's gradient and only its shared trunk gets the extra ``λ ∇θ R``."""
    torch.manual_seed(0)
    ew = MultiTaskSAC(T, O, A, CFG, make_balancer("ew", T), make_balancer("ew", T), device=device)
    torch.manual_seed(0)
    pair = {"critic": make_balancer("ew", T), "actor": make_balancer("ew", T)}
    pair[group] = make_balancer("dgr", T, lam=1.0)
    dgr = MultiTaskSAC(T, O, A, CFG, pair["critic"], pair["actor"], device=device)
    batch = _batch(device)
    torch.manual_seed(7)
    ew.update(batch, with_metrics=False)
    torch.manual_seed(7)
    metrics = dgr.update(batch)
    assert metrics[f"balancer/{group}/dgr_reg"] > 0
    for a, b in zip(_grads(getattr(ew, f"{group}_task")), _grads(getattr(dgr, f"{group}_task")), strict=True):
        assert torch.equal(a, b), "real heads get the base (ew) gradient only"
    diff = sum(
        float((b - a).abs().sum())
        for a, b in zip(_grads(getattr(ew, f"{group}_shared")), _grads(getattr(dgr, f"{group}_shared")), strict=True)
    )
    assert diff > 0
    before = _params(dgr)
    for step in range(1, 3):
        metrics = dgr.update(_batch(device, seed=step))
    assert all(np.isfinite(v) for v in metrics.values())
    assert all(not torch.equal(a, b) for a, b in zip(before, _params(dgr), strict=True))


@pytest.mark.parametrize("balancer", ["sgsu", "dgr"])
def test_closure_balancers_train_through_the_trainer(tmp_path: Path, balancer: str) -> None:
    results = train_from_args(
        str(ROOT / "configs" / "toy_sac.yaml"),
        [
            f"logdir={tmp_path}",
            f"balancer={balancer}",
            "total_steps=140",
            "sac.warmup_steps=100",
            "sac.hidden_sizes=[16, 16]",
            "sac.batch_per_task=8",
            "log_every=20",
            "eval_every=0",
            "eval_episodes=1",
            "progress=false",
        ],
    )
    assert results["steps"] == 140 and results["critic_balancer"] == results["actor_balancer"] == balancer
    rows = [json.loads(line) for line in (Path(results["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/critic_loss" in r]
    assert [r["step"] for r in logged] == [120, 140]
    assert all(np.isfinite(r["train/critic_loss"]) and np.isfinite(r["balancer/actor/cos_min"]) for r in logged)
