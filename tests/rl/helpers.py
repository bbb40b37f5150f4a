"""Shared pieces of the agent tests: a seeded random replay batch and a snapshot of an agent's parameters."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from agents.networks import polyak_update
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


def interrupt_once_logged(
    cmd: list[str], cwd: Path, metrics: Path, marker: str, timeout: float, signum: int = signal.SIGINT
) -> tuple[int, str]:
    """Start ``cmd`` (one OpenMP thread) with ``signum`` at its default disposition (a test run under ``nohup``
    would pass SIGHUP on ignored), send it ``signum`` (SIGINT) once ``metrics`` contains ``marker`` (or after
    ``timeout`` s), wait for it to exit; returns ``(returncode, stderr)``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and marker in metrics.read_text()):
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def hand_written_sac_update(agent: MultiTaskSAC, batch: Batch, w_T: torch.Tensor | None = None) -> None:
    """Hand-written multi-task SAC (CleanRL ``sac_continuous_action.py`` order) on the sum of per-task losses,
    with stable-baselines3's loss forms: ``½ Σ_k MSE`` for the critics, the temperature loss in ``log α``;
    with ``w_T`` the critic and actor losses of task ``t`` are weighted by ``w_T[t]`` (not the temperature's)."""
    T = agent.log_alpha_T.shape[0]
    w_T = torch.ones(T, device=batch.obs.device) if w_T is None else w_T
    cfg = agent.cfg
    alpha_T1 = agent.log_alpha_T.detach().exp()[:, None]
    with torch.no_grad():
        next_a, next_logp = agent.actor(batch.next_obs)
        q1_t, q2_t = agent.critic_target(batch.next_obs, next_a)
        y = batch.reward + (1 - batch.terminated) * cfg.gamma * (torch.min(q1_t, q2_t) - alpha_T1 * next_logp)
    q1, q2 = agent.critic(batch.obs, batch.action)
    critic_T = torch.stack([0.5 * (F.mse_loss(q1[t], y[t]) + F.mse_loss(q2[t], y[t])) for t in range(T)])
    qf_loss = (w_T * critic_T).sum()
    agent.critic_opt.zero_grad()
    qf_loss.backward()
    agent.critic_opt.step()
    pi, logp = agent.actor(batch.obs)
    q1_pi, q2_pi = agent.critic(batch.obs, pi)
    actor_T = torch.stack([(alpha_T1[t] * logp[t] - torch.min(q1_pi[t], q2_pi[t])).mean() for t in range(T)])
    actor_loss = (w_T * actor_T).sum()
    agent.actor_opt.zero_grad()
    actor_loss.backward()
    agent.actor_opt.step()
    alpha_loss = torch.stack(
        [(-agent.log_alpha_T[t] * (logp[t].detach() + agent.target_entropy)).mean() for t in range(T)]
    ).sum()
    agent.alpha_opt.zero_grad()
    alpha_loss.backward()
    agent.alpha_opt.step()
    polyak_update(agent.critic.parameters(), agent.critic_target.parameters(), cfg.tau)
