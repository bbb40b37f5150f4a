"""Shared pieces of the agent tests: a seeded random replay batch and a snapshot of an agent's parameters."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

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


def interrupt_once_logged(cmd: list[str], cwd: Path, metrics: Path, marker: str, timeout: float) -> tuple[int, str]:
    """Start ``cmd`` (one OpenMP thread), send SIGINT once ``metrics`` contains ``marker`` (or after
    ``timeout`` s), wait for it to exit; returns ``(returncode, stderr)``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and marker in metrics.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err
