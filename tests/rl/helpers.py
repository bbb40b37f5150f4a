"""Shared pieces of the agent tests: a seeded random replay batch and a snapshot of an agent's parameters."""

from __future__ import annotations

import torch

from agents.sac import MultiTaskSAC
from mtrl.replay import Batch, MultiTaskReplayBuffer


def random_batch(T: int, O: int, A: int, per_task: int, device: torch.device, seed: int = 0) -> Batch:
    """A stratified batch (``per_task`` rows per task) from 40 seeded random transitions per task."""
    g = torch.Generator().manual_seed(seed)
    buf = MultiTaskReplayBuffer(T, O, A, capacity_total=T * 64, device=device)
    for _ in range(40):
        buf.add(
            torch.randn(T, O, generator=g),
            torch.rand(T, A, generator=g) * 2 - 1,
            torch.rand(T, generator=g),
            torch.randn(T, O, generator=g),
            (torch.rand(T, generator=g) < 0.1).float(),
        )
    return buf.sample(per_task, g)


def agent_params(agent: MultiTaskSAC) -> list[torch.Tensor]:
    """Copies of the actor, critic, target critic and temperature parameters."""
    nets = (agent.actor, agent.critic, agent.critic_target)
    return [p.detach().clone() for net in nets for p in net.parameters()] + [agent.log_alpha_T.detach().clone()]
