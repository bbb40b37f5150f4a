"""The multi-task SAC training loop: vector envs → replay → balanced updates → eval, logs, checkpoints.

One vector step collects one transition per task (SAME_STEP autoreset: the true final observation
of an ended episode comes from ``info["final_obs"]``; truncations bootstrap, only ``terminated``
stops the bootstrap). The first ``sac.warmup_steps`` vector steps act uniformly at random; after
that the loop does ``sac.updates_per_step`` updates per vector step (CleanRL-style; mtrl instead
does all warm-up updates at once when warm-up ends). Metrics go to TensorBoard under namespaced
keys; the run directory holds ``config.yaml``, the event files, ``metrics.jsonl``,
``checkpoints/`` and ``results.json``.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from agents.checkpoint import capture_rng, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from agents.config import TrainConfig, resolve_balancers
from agents.sac import EvalAgent, MultiTaskSAC
from envs import MultiTaskVecEnv, Protocol, env_state, evaluate, load_env_state, step_transitions
from mtrl.balancers import make_balancer
from mtrl.config import config_to_dict, load_config, save_config
from mtrl.device import resolve_device
from mtrl.logger import JsonlWriter, Logger, TensorBoardWriter, flatten_hparams
from mtrl.replay import MultiTaskReplayBuffer

__all__ = ["Trainer", "build_envs", "resolve_device", "summarize", "train_from_args"]


def build_envs(cfg: TrainConfig, seed: int) -> tuple[MultiTaskVecEnv, list[str]]:
    """The training (or evaluation) vector env of ``cfg.env`` and its task names (env ``i`` = task ``i``)."""
    if cfg.env.benchmark == "toy":
        from envs.toy import make_toy_envs

        envs = make_toy_envs(cfg.env.toy_num_tasks, seed=seed, max_episode_steps=cfg.env.toy_episode_steps)
    else:
        from envs.metaworld import make_mt_envs

        envs = make_mt_envs(
            cfg.env.benchmark, protocol=cfg.env.protocol, seed=seed, vector_strategy=cfg.env.vector_strategy
        )
    return envs, list(envs.task_names)


def summarize(evals: list[dict[str, Any]], protocol: Protocol) -> dict[str, Any]:
    """The protocol's reported numbers (``Protocol.summarize``: final and last-n mean, or best)
    plus the final and the best evaluation with their per-task success."""
    if not evals:
        return {"num_evals": 0}
    means = [e["success_mean"] for e in evals]
    best = int(np.argmax(means))
    return {
        "num_evals": len(evals),
        "report_rule": protocol.report,
        "reported": protocol.summarize(means),
        "final": evals[-1],
        "best": evals[best],
    }


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs (or resumes) the loop.

    ``Trainer(cfg).train()`` returns the results dict also written to ``results.json``.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg, self.notes = resolve_balancers(cfg)
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        name = cfg.run_name or f"{cfg.env.benchmark}_{cfg.critic_balancer}_s{cfg.seed}_{stamp}"
        self.run_dir = Path(cfg.logdir) / name
        if cfg.resume:
            if cfg.run_name is None:
                raise ValueError("resume=true needs run_name=<the run directory's name under logdir>")
            latest_checkpoint(self.run_dir)  # fails clearly when there is nothing to resume
        elif (self.run_dir / "checkpoints").exists():
            raise ValueError(
                f"run directory {str(self.run_dir)!r} already has checkpoints; pass resume=true or a new run_name"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)

        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)

        self.envs, self.task_names = build_envs(cfg, cfg.seed)
        self.eval_envs, _ = build_envs(cfg, cfg.seed)
        self.eval_episodes = cfg.eval_episodes or self.envs.protocol.eval_episodes_per_task
        T = self.envs.num_envs
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        assert isinstance(act_space, gym.spaces.Box) and obs_space.shape is not None
        self.obs_dim = int(obs_space.shape[0]) - T  # observations carry the task one-hot
        self.action_low, self.action_high = act_space.low.astype(np.float64), act_space.high.astype(np.float64)
        action_dim = int(act_space.shape[0])
        sac = cfg.sac
        self.agent = MultiTaskSAC(
            T,
            self.obs_dim,
            action_dim,
            sac,
            make_balancer(cfg.critic_balancer or cfg.balancer, T, **(cfg.critic_balancer_hparams or {})),
            make_balancer(cfg.actor_balancer or cfg.balancer, T, **(cfg.actor_balancer_hparams or {})),
            device=self.device,
            action_low=self.action_low,
            action_high=self.action_high,
            task_names=self.task_names,
        )
        self.buffer = MultiTaskReplayBuffer(T, self.obs_dim, action_dim, sac.buffer_capacity, self.device)
        self.step = 0
        self.evals: list[dict[str, Any]] = []
        self.last_metrics: dict[str, float] = {}
        self.obs, _ = self.envs.reset(seed=cfg.seed)

        if cfg.resume:
            self._load(load_checkpoint(self.run_dir, map_location=self.device))
        save_config(cfg, self.run_dir / "config.yaml")
        self.logger = Logger([TensorBoardWriter(self.run_dir), JsonlWriter(self.run_dir / "metrics.jsonl")])
        header = [
            f"protocol: {cfg.env.protocol}",
            f"critic balancer: {cfg.critic_balancer}",
            f"actor balancer: {cfg.actor_balancer}",
            *self.notes,
        ]
        self.logger.text("run/notes", "\n\n".join(header), self.step)
        self.logger.text("run/config", "```\n" + json.dumps(config_to_dict(cfg), indent=2) + "\n```", self.step)

    # --- loop ----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to ``total_steps``. Ctrl-C (SIGINT) stops at the end of the current vector step, saves a
        checkpoint and the results, and returns; a second Ctrl-C aborts at once."""
        cfg = self.cfg
        bar = tqdm(total=cfg.total_steps, initial=self.step, disable=not cfg.progress, unit="step")
        window_t, window_steps, window_updates = time.perf_counter(), 0, 0
        self._stop = False
        previous = signal.getsignal(signal.SIGINT)
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread:
            signal.signal(signal.SIGINT, self._on_sigint)
        try:
            while self.step < cfg.total_steps and not self._stop:
                updates = self._env_step()
                window_steps, window_updates = window_steps + 1, window_updates + updates
                if self.step % cfg.log_every == 0 or self.step == cfg.total_steps:
                    elapsed = time.perf_counter() - window_t
                    perf = {"perf/sps": window_steps / elapsed, "perf/updates_per_s": window_updates / elapsed}
                    self.logger.scalars({**self.last_metrics, **perf}, self.step)
                    window_t, window_steps, window_updates = time.perf_counter(), 0, 0
                    bar.set_postfix(sps=f"{perf['perf/sps']:.1f}", success=self._latest_success())
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.total_steps:
                    self._evaluate()
                    bar.set_postfix(success=self._latest_success())
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.total_steps:
                    self.save()
                bar.update(1)
            if self._stop:
                print(f"\ninterrupted at step {self.step}: saved {self.save()}", file=sys.stderr)
            else:
                self._evaluate()
                self.save()
        finally:
            bar.close()
            if in_main_thread:
                signal.signal(signal.SIGINT, previous)
        return self._finish()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._stop:  # second Ctrl-C: give up on the clean stop
            raise KeyboardInterrupt
        self._stop = True

    def _env_step(self) -> int:
        """Act, step all sub-envs, store one transition per task, update; returns the update count."""
        cfg, agent, T = self.cfg, self.agent, self.envs.num_envs
        if self.step < cfg.sac.warmup_steps:
            action_TA = self.np_rng.uniform(self.action_low, self.action_high, size=(T, len(self.action_low)))
        else:
            action_TA = agent.act(self.obs)
        res = step_transitions(self.envs, action_TA)  # res.next_obs: final_obs where an episode ended
        O = self.obs_dim
        self.buffer.add(
            self.obs[:, :O], agent.to_policy_action(action_TA), res.reward, res.next_obs[:, :O], res.terminated
        )
        self.obs = res.obs
        self.step += 1
        if self.step <= cfg.sac.warmup_steps:
            return 0
        for k in range(cfg.sac.updates_per_step):
            last = k == cfg.sac.updates_per_step - 1
            log_now = last and (self.step % cfg.log_every == 0 or self.step == cfg.total_steps)
            metrics = agent.update(self.buffer.sample(cfg.sac.batch_per_task, self.sample_gen), with_metrics=log_now)
            if metrics:
                self.last_metrics = metrics
        return cfg.sac.updates_per_step

    def _evaluate(self) -> None:
        result = evaluate(EvalAgent(self.agent), self.eval_envs, episodes_per_task=self.eval_episodes)
        per_task = {name: float(v) for name, v in zip(self.task_names, result.success_per_task, strict=True)}
        self.evals.append({"step": self.step, "success_mean": result.success_mean, "success": per_task})
        self.logger.scalars(result.scalars(self.task_names), self.step)
        self.logger.flush()

    def _latest_success(self) -> str:
        return f"{self.evals[-1]['success_mean']:.2f}" if self.evals else "-"

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "agent": self.agent.state_dict(),
            "rng": capture_rng(self.np_rng, self.sample_gen),
            "env_state": env_state(self.envs),
            "obs": np.array(self.obs, copy=True),
            "evals": self.evals,
            "last_metrics": self.last_metrics,
            "replay": self.buffer.state_dict() if self.cfg.checkpoint_replay else None,
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.agent.load_state_dict(state["agent"])
        restore_rng(state["rng"], self.np_rng, self.sample_gen)
        self.evals, self.last_metrics = list(state["evals"]), dict(state["last_metrics"])
        if state["replay"] is not None:
            self.buffer.load_state_dict(state["replay"])
        else:
            self.notes.append("resumed without a saved replay buffer: the buffer restarts empty")
        # Toy: continues mid-episode (== state["obs"]); Meta-World: restores goals/RNGs and resets.
        self.obs = load_env_state(self.envs, state["env_state"])
        if self.cfg.env.benchmark != "toy":
            self.notes.append("resumed a Meta-World run: the interrupted episodes restart from a reset")

    def save(self) -> Path:
        return save_checkpoint(self.state_dict(), self.run_dir / "checkpoints", self.step)

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        results = {
            "run_dir": str(self.run_dir),
            "protocol": cfg.env.protocol,
            "benchmark": cfg.env.benchmark,
            "critic_balancer": cfg.critic_balancer,
            "actor_balancer": cfg.actor_balancer,
            "seed": cfg.seed,
            "steps": self.step,
            "complete": self.step >= cfg.total_steps,
            "summary": summarize(self.evals, self.envs.protocol),
            "evals": self.evals,
        }
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=2))
        final = self.evals[-1]["success_mean"] if self.evals else math.nan
        self.logger.hparams(flatten_hparams(config_to_dict(cfg)), {"hparam/success_final": final})
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()
        return results


def train_from_args(config_path: str | None, overrides: Sequence[str]) -> dict[str, Any]:
    """``scripts/train.py`` entry: load the preset, apply overrides, train."""
    return Trainer(load_config(TrainConfig, config_path, overrides)).train()
