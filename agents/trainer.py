"""The multi-task SAC training loop: vector envs → replay → balanced updates → eval, logs, checkpoints.

One vector step collects one transition per task (SAME_STEP autoreset: the true final observation
of an ended episode comes from ``info["final_obs"]``; truncations bootstrap, only ``terminated``
stops the bootstrap). The first ``sac.warmup_steps`` vector steps act uniformly at random; after
that the loop does ``sac.updates_per_step`` updates per vector step (CleanRL-style; mtrl instead
does all warm-up updates at once when warm-up ends). Metrics go to TensorBoard under namespaced
keys; the run directory holds ``config.yaml`` (fully resolved: balancers, device, evaluation
episodes, ``protocol_details``), the event files, ``metrics.jsonl``, ``checkpoints/`` and
``results.json``.

Resume (``resume=true``): the checkpoint holds the agent, optimisers, balancer states, replay buffer,
every RNG, and the state of the training AND evaluation envs, so on the toy suite a resumed run gives
exactly the numbers of an uninterrupted one (losses, parameters, evaluations, results.json), from an
interval checkpoint or from a Ctrl-C stop. The logs are cut back to the checkpoint step (TensorBoard
``purge_step``, ``metrics.jsonl`` truncated) so no step appears twice. Meta-World training episodes
in progress continue exactly on sync envs (``envs.episode_state``; the same numbers as an
uninterrupted run, ``tests/rl/test_resume.py``) and restart from a reset on async envs.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from agents.checkpoint import checkpoint_candidates, load_checkpoint, save_checkpoint
from agents.config import TrainConfig, balancer_notes
from agents.report import final_report, hparam_metrics, log_hparams, summarize  # final_report, summarize re-exported
from agents.rollouts import RolloutStats
from agents.sac import EvalAgent, build_agent
from agents.step import training_step
from envs import (
    MultiTaskVecEnv,
    continues_episodes,
    env_state,
    evaluate,
    load_env_state,
    restore_env_state,
)
from mtrl.config import ConfigError, config_to_dict, load_config
from mtrl.device import resolve_device  # re-exported (agents.trainer.resolve_device)
from mtrl.interrupt import install_stop_handler
from mtrl.logger import RL_CHARTS, Layout, Logger, custom_scalars_layout
from mtrl.replay import MultiTaskReplayBuffer
from mtrl.rng import capture_rng, restore_rng
from mtrl.rundir import LeasedRun, check_resume
from mtrl.runstart import RL, NothingToResume
from mtrl.skeleton import report_notes, restore_newest, start_run, write_results

__all__ = ["Trainer", "build_envs", "final_report", "resolve_device", "summarize", "train_from_args"]


def build_envs(cfg: TrainConfig, seed: int) -> tuple[MultiTaskVecEnv, list[str]]:
    """The training (or evaluation) vector env of a resolved ``cfg`` and its task names (env ``i`` =
    task ``i``); Meta-World envs get the config's :attr:`~agents.config.TrainConfig.protocol` object."""
    if cfg.env.benchmark == "toy":
        from envs.toy import make_toy_envs

        envs = make_toy_envs(cfg.env.toy_num_tasks, seed=seed, max_episode_steps=cfg.env.toy_episode_steps)
    else:
        from envs.metaworld import make_mt_envs

        envs = make_mt_envs(
            cfg.env.benchmark,
            protocol=cfg.protocol,
            seed=seed,
            vector_strategy=cfg.env.vector_strategy,
            tasks=cfg.env.tasks or None,
        )
    return envs, list(envs.task_names)


class Trainer(LeasedRun):
    """Builds everything from a resolved :class:`TrainConfig` and runs (or resumes) the loop.

    ``Trainer(load_config(TrainConfig, ...)).train()`` returns the results dict also written to
    ``results.json``. The config comes resolved from :func:`~mtrl.config.load_config`; a ``TrainConfig(...)``
    built in Python is resolved here, once (:meth:`TrainConfig.resolve`). Every configuration error (bad
    balancer hyper-parameters, unavailable device, resume mismatch) raises
    :class:`~mtrl.config.ConfigError` before the run directory or any env is created.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        cfg = cfg if cfg.is_resolved else cfg.resolve()
        #: Notes on automatic choices (balancers, resume), logged in the ``run/notes`` text.
        self.notes = balancer_notes(cfg)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        name = cfg.run_name or f"{cfg.env.benchmark}_{cfg.critic_balancer}_s{cfg.seed}_{stamp}"
        self.run_dir = Path(cfg.logdir) / name
        if cfg.resume and cfg.run_name is None:
            raise ConfigError("resume=true needs run_name=<the run directory's name under logdir>")
        self.device = torch.device(cfg.device)  # resolved (checked against this machine) with the config
        #: The signal that stopped the last train() call (None: it was not stopped), and the checkpoint it saved.
        self.stop_signal: int | None = None
        self.saved_at: Path | None = None
        self._lookup_notes: list[str] = []
        # (a resume names its run, so the saved config.yaml compares with the config as given)
        self.cfg = cfg = dataclasses.replace(cfg, run_name=name)
        # The run skeleton (mtrl.skeleton): the run-directory rule and the resume check before and again under the
        # lease (one writer per run directory: a second process refuses, RunDirBusy, before it writes anything),
        # then envs and agent, the checkpoint, config.yaml and the logs; the lease is released when the run ends
        # (train()) or fails to start.
        self.logger = start_run(
            self, self.run_dir, RL, cfg.resume,
            check=lambda: self._check_resume(cfg), build=lambda: self._build(cfg), restore=self._resume,
            config=cfg, layout=self._layout, opened=self._log_start,
        )  # fmt: skip

    def _check_resume(self, cfg: TrainConfig) -> list[Path]:
        """The checkpoints a resume may continue from, newest first (its saved config checked against ``cfg``),
        or ``[]`` for a fresh start (the run-directory rule, :func:`mtrl.runstart.check_run_dir`, has checked
        that a resume has checkpoints and that a fresh start overwrites none). Reads only."""
        if not cfg.resume:
            return []
        saved_path = self.run_dir / "config.yaml"
        if saved_path.is_file():
            # Read through TrainConfig: keys added since the run was saved compare at their defaults.
            saved = config_to_dict(load_config(TrainConfig, saved_path, resolve=False))
            check_resume(saved, config_to_dict(cfg), TrainConfig.RESUME_MAY_CHANGE, "resume=true", saved_path)
        candidates, notes = checkpoint_candidates(self.run_dir)
        if not candidates:  # checkpoints/last.txt naming a file that is gone, and no step_*.pt
            raise NothingToResume(f"resume=true: nothing to resume in {str(self.run_dir)!r} (no checkpoints/step_*.pt)")
        self._lookup_notes = notes
        return candidates

    def _resume(self, candidates: list[Path]) -> int:
        """Load the newest intact of ``candidates`` (an unreadable newer one is named in a note, printed and
        kept in the run notes); returns the step it continues from."""
        report_notes(self._lookup_notes, self.notes)
        path, state = restore_newest(candidates, lambda p: load_checkpoint(p, map_location=self.device), self.notes)
        self._load(state)
        self.notes.append(f"resumed from {path.name} at step {self.step}")
        return self.step

    def _build(self, cfg: TrainConfig) -> None:
        """Everything built once the run directory is held: seeds, envs, agent, buffer."""
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)

        self.envs, self.task_names = build_envs(cfg, cfg.seed)
        self.eval_envs, _ = build_envs(cfg, cfg.seed)
        self.protocol = cfg.protocol  # the resolved config's protocol (that of the envs)
        assert cfg.eval_episodes is not None  # filled by TrainConfig.resolve
        self.eval_episodes = cfg.eval_episodes
        T = self.envs.num_envs
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        assert isinstance(act_space, gym.spaces.Box) and obs_space.shape is not None
        self.obs_dim = int(obs_space.shape[0]) - T  # observations carry the task one-hot
        self.action_low, self.action_high = act_space.low.astype(np.float64), act_space.high.astype(np.float64)
        action_dim = int(act_space.shape[0])
        sac = cfg.sac
        self.agent = build_agent(cfg, self.envs, self.device)
        self.buffer = MultiTaskReplayBuffer(T, self.obs_dim, action_dim, sac.buffer_capacity, self.device)
        self.step = 0
        self.evals: list[dict[str, Any]] = []
        self.last_metrics: dict[str, float] = {}
        self.rollouts = RolloutStats(self.task_names)  # the training episodes' return and success per task
        self.obs, _ = self.envs.reset(seed=cfg.seed)
        self._stop = False

    def _layout(self) -> Layout:
        """The custom-scalars layout: the RL charts, a line per task."""
        return custom_scalars_layout(RL_CHARTS, self.task_names)

    def _log_start(self, logger: Logger) -> None:
        """The hparams, ``run/notes`` (protocol, balancers, device, notes) and ``run/config`` of a (re)started run."""
        cfg = self.cfg
        log_hparams(logger, config_to_dict(cfg), self.protocol)
        reported = self.protocol.reported_statistic
        header = [
            f"protocol: {cfg.env.protocol} — " + ", ".join(f"{k}={v}" for k, v in cfg.protocol_details.items()),
            f"reported statistic: '{reported}' of the evaluation mean success (hparam/success_reported; "
            f"report rule {self.protocol.report!r})",
            f"critic balancer: {cfg.critic_balancer} {cfg.critic_balancer_hparams}",
            f"actor balancer: {cfg.actor_balancer} {cfg.actor_balancer_hparams}",
            f"device: {cfg.device}",
            *self.notes,
        ]
        logger.text("run/notes", "\n\n".join(header), self.step)
        logger.text("run/config", "```\n" + json.dumps(config_to_dict(cfg), indent=2) + "\n```", self.step)
        logger.flush()

    # --- loop ----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to ``total_steps``. Ctrl-C (SIGINT) or SIGTERM stops at the end of the current vector step, saves
        a checkpoint and the results (``"complete": false``), records the signal in :attr:`stop_signal` and
        returns; a second signal aborts at once."""
        with self._holding_run_dir():  # held since __init__; taken again if this trainer already finished once
            return self._train()

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        bar = tqdm(total=cfg.total_steps, initial=self.step, disable=not cfg.progress, unit="step")
        postfix: dict[str, str] = {"success": self._latest_success()}
        # perf/* window: env steps and updates only (evaluation and checkpoint time is left out).
        window_t, window_steps, window_updates, paused = time.perf_counter(), 0, 0, 0.0
        self._stop, self.stop_signal = False, None
        restore_sigint = install_stop_handler(self.request_stop, lambda: self._stop)
        try:
            while self.step < cfg.total_steps and not self._stop:
                self.lease.check()  # stop at once if another process took the run directory over
                updates = self.env_step()
                window_steps, window_updates = window_steps + 1, window_updates + updates
                if self.step % cfg.log_every == 0 or self.step == cfg.total_steps:
                    elapsed = max(time.perf_counter() - window_t - paused, 1e-9)
                    perf = {"perf/sps": window_steps / elapsed, "perf/updates_per_s": window_updates / elapsed}
                    self.logger.scalars({**self.last_metrics, **perf}, self.step)
                    window_t, window_steps, window_updates, paused = time.perf_counter(), 0, 0, 0.0
                    postfix["sps"] = f"{perf['perf/sps']:.1f}"
                    bar.set_postfix(postfix)
                if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.total_steps:
                    t0 = time.perf_counter()
                    self._evaluate()
                    paused += time.perf_counter() - t0
                    postfix["success"] = self._latest_success()
                    bar.set_postfix(postfix)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.total_steps:
                    t0 = time.perf_counter()
                    self.save()
                    paused += time.perf_counter() - t0
                bar.update(1)
            if self._stop:
                self.saved_at = self.save()
            else:
                if not (self.evals and self.evals[-1]["step"] == self.step):  # a finished run resumed: no re-eval
                    self._evaluate()
                self.save()
        finally:
            bar.close()
            self.logger.flush()
            restore_sigint()
        return self._finish()

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Ask the loop to stop cleanly after the current vector step (what the first Ctrl-C or SIGTERM does)."""
        self._stop = True
        self.stop_signal = signum

    def env_step(self) -> int:
        """One vector step of the loop (:func:`agents.step.training_step`): act (uniform random actions during the
        warm-up), step every sub-env, store one transition per task, update (not during the warm-up; the last
        update of a logging step computes the metrics); returns the number of updates."""
        cfg, T = self.cfg, self.envs.num_envs
        random_TA = None  # the policy acts
        if self.step < cfg.sac.warmup_steps:
            random_TA = self.np_rng.uniform(self.action_low, self.action_high, size=(T, len(self.action_low)))
        step = self.step + 1
        updates = cfg.sac.updates_per_step if step > cfg.sac.warmup_steps else 0
        res, metrics = training_step(
            self.agent, self.envs, self.buffer, self.obs,
            action_TA=random_TA, updates=updates, batch_per_task=cfg.sac.batch_per_task,
            sample_gen=self.sample_gen, metrics=step % cfg.log_every == 0 or step == cfg.total_steps,
        )  # fmt: skip
        self.obs, self.step = res.obs, step
        if metrics:
            self.last_metrics = metrics
        ended = self.rollouts.record(res)
        if ended:
            self.logger.scalars(ended, step)
        return updates

    def _evaluate(self) -> None:
        result = evaluate(EvalAgent(self.agent), self.eval_envs, episodes_per_task=self.eval_episodes)
        per_task = {name: float(v) for name, v in zip(self.task_names, result.success_per_task, strict=True)}
        returns = {name: float(v) for name, v in zip(self.task_names, result.return_per_task, strict=True)}
        self.evals.append(
            {"step": self.step, "success_mean": result.success_mean, "success": per_task, "return": returns}
        )
        scalars = {**result.scalars(self.task_names), **hparam_metrics(self.evals, self.protocol)}
        self.logger.scalars(scalars, self.step)
        self.logger.flush()

    def _latest_success(self) -> str:
        return f"{self.evals[-1]['success_mean']:.2f}" if self.evals else "-"

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "agent": self.agent.state_dict(),
            "rng": capture_rng({"np_rng": self.np_rng}, {"sample_gen": self.sample_gen}),
            "env_state": env_state(self.envs),
            "eval_env_state": env_state(self.eval_envs, episodes=False),  # evaluations start with a reset
            "obs": np.array(self.obs, copy=True),
            "evals": self.evals,
            "last_metrics": self.last_metrics,
            "rollouts": self.rollouts.state_dict(),
            "replay": self.buffer.state_dict() if self.cfg.checkpoint_replay else None,
        }

    def _load(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.agent.load_state_dict(state["agent"])
        restore_rng(state["rng"], {"np_rng": self.np_rng}, {"sample_gen": self.sample_gen})
        self.evals, self.last_metrics = list(state["evals"]), dict(state["last_metrics"])
        if "rollouts" in state:  # checkpoints of earlier releases: the episodes in progress restart their sums
            self.rollouts.load_state_dict(state["rollouts"])
        if state["replay"] is not None:
            self.buffer.load_state_dict(state["replay"])
        else:
            self.notes.append("resumed without a saved replay buffer: the buffer restarts empty")
        # Toy and sync Meta-World envs continue mid-episode (== state["obs"]); async Meta-World envs
        # restore goals/RNGs and reset.
        continues = continues_episodes(self.envs, state["env_state"])
        self.obs = load_env_state(self.envs, state["env_state"])
        if "eval_env_state" in state:  # the next evaluation draws what it would have drawn uninterrupted
            restore_env_state(self.eval_envs, state["eval_env_state"])
        else:
            self.notes.append("checkpoint without eval-env state: evaluations after the resume may differ")
        if not continues:
            self.notes.append(
                "resumed a Meta-World run on async envs (or from a checkpoint without episodes): "
                "the interrupted episodes restart from a reset"
            )

    def save(self) -> Path:
        self.lease.check()  # never write after another process took the run directory over
        return save_checkpoint(self.state_dict(), self.run_dir / "checkpoints", self.step)

    def _finish(self) -> dict[str, Any]:
        cfg = self.cfg
        results = {
            "run_dir": str(self.run_dir),
            "protocol": cfg.env.protocol,
            "protocol_details": cfg.protocol_details,
            "benchmark": cfg.env.benchmark,
            "critic_balancer": cfg.critic_balancer,
            "actor_balancer": cfg.actor_balancer,
            "seed": cfg.seed,
            "steps": self.step,
            "complete": self.step >= cfg.total_steps,
            "summary": summarize(self.evals, self.protocol),
            "evals": self.evals,
        }
        write_results(self, self.run_dir, results)
        self.logger.close()
        self.envs.close()
        self.eval_envs.close()
        return results


def train_from_args(config_path: str | None, overrides: Sequence[str]) -> dict[str, Any]:
    """``scripts/train.py`` entry: load the preset, apply overrides, resolve (:func:`load_config`), train."""
    return Trainer(load_config(TrainConfig, config_path, overrides)).train()
