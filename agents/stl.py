"""The "one SAC agent per task" reference row: stable-baselines3 SAC on each Meta-World task alone.

``STLRun(resolve_stl_config(STLConfig(...))).train()`` (what ``scripts/train_stl.py`` runs) gives each
task its own stable-baselines3 SAC (:func:`agents.sb3.make_sb3_sac`) with the network, optimiser and
schedule of a multi-task preset's ``sac`` section (:mod:`agents.stl_config`), on the env our agent
trains on, ``MT1(task, seed)`` (:func:`agents.sb3.make_task_env`), under the chosen protocol.

Tasks are trained in rounds up to every evaluation / checkpoint boundary (one task after the other
within a round), so every task is at the same step whenever the tasks are evaluated and the mean is
logged as it becomes available. Evaluation is :func:`envs.evaluate` under the protocol, exactly as
for the multi-task runs.

The run directory has the layout of ``scripts/train.py`` runs, so ``tensorboard --logdir runs``
shows both side by side (step = environment steps per task = the multi-task runs' vector steps):

* ``config.yaml`` — :func:`agents.stl_config.run_record`: the resolved settings, with the protocol
  stamped as in the multi-task runs; ``balancer: stl`` names the group for ``scripts/aggregate.py``;
* TensorBoard events and ``metrics.jsonl``: ``train/critic_loss/<task>`` (½ the sum of the two
  critics' mean squared TD errors, SB3's loss and the multi-task runs' definition),
  ``train/actor_loss/<task>``, ``train/alpha/<task>``, ``train/alpha_loss/<task>``
  (``−log α (log π + target entropy)``, as the multi-task runs), their means over tasks
  ``train/critic_loss``, ``train/actor_loss``, ``train/alpha_loss`` (once every task logged that
  step), ``eval/success/<task>``, ``eval/return/<task>``, ``eval/success_mean``, ``perf/sps``
  (environment steps per task per second of training, i.e. vector-step equivalents),
  ``perf/updates_per_s`` (SB3 updates of all tasks per second), ``perf/sps/<task>``; text
  ``run/notes`` and ``run/config``; hparams with the config, written at start-up, whose metrics
  ``hparam/success_reported`` and ``hparam/success_<key>`` (:func:`agents.report.hparam_metrics`)
  are logged at every evaluation of all tasks;
* ``checkpoints/<task>/model.zip`` (SB3 ``save``), ``checkpoints/<task>/replay.pkl`` (unless
  ``checkpoint_replay`` is off) and ``checkpoints/state.pt`` (steps per task, evaluation
  history, in the trainers' checkpoint envelope; an earlier release's ``state.json`` is read too),
  written at every ``checkpoint_every`` boundary, when a task finishes, at the end and on
  a stop request (Ctrl-C); a resume reads them back without unpickling anything from them
  (:func:`agents.sb3.load_sb3_sac`, :func:`agents.sb3.load_sb3_replay`);
* ``results.json`` — the shape of the multi-task runs' (``summary`` from ``agents.report.summarize``,
  ``evals`` with ``step``/``success_mean``/``success``), plus the per-task ``history``.

A resumed run (``resume``) skips finished tasks, reloads the task in progress from its checkpoint (its
replay buffer too, when saved; its episode restarts from a reset) and appends to the logs; only
``STLConfig.RESUME_MAY_CHANGE`` may differ from the run's ``config.yaml``. One process at a time writes
a run directory (the lease of :mod:`mtrl.rundir`).

The run directory starts through the run skeleton (:func:`mtrl.skeleton.start_run`: the run-directory rule, the
single-writer lease, the resume check, ``config.yaml``, the logs) and ``results.json`` is written by
:func:`mtrl.skeleton.write_results`. The run's parts live in their own modules: the per-task SB3 models
(:mod:`agents.stl_models`; SB3 is reached only through :mod:`agents.sb3`'s adapter functions), the evaluation
history, training-loss means and results record (:mod:`agents.stl_metrics`) and ``checkpoints/state.pt``
(:mod:`agents.stl_state`); :class:`STLRun` is the round loop that drives them.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agents.report import hparam_metrics, log_hparams
from agents.stl_config import ResolvedSTLConfig, STLConfig, run_record
from agents.stl_metrics import EvalHistory, TrainLossMeans, results_record, train_row
from agents.stl_models import build_task_model, save_task_model
from agents.stl_state import STATE_FILE, STATE_FORMAT, read_state, write_state
from mtrl.logger import STL_CHARTS, Layout, Logger, custom_scalars_layout
from mtrl.rundir import LeasedRun, check_resume
from mtrl.runstart import STL, TrainerKind
from mtrl.skeleton import start_run, write_results

__all__ = ["STATE_FORMAT", "STLRun"]


class STLRun(LeasedRun):
    """One run: a SAC per task, trained in rounds, logged and checkpointed in the multi-task layout.

    ``STLRun(settings).train()`` returns the results dict also written to ``results.json``. ``kind`` is how the
    run-directory rule's messages name the options (:data:`mtrl.runstart.STL`: ``resume=true``;
    :data:`mtrl.runstart.STL_FLAGS` for the deprecated ``--resume`` form).

    Raises:
        ImportError: stable-baselines3 is not installed (the message names the extra).
        ConfigError: a resume that finds nothing to resume or a run whose ``config.yaml`` differs in
            a key outside ``STLConfig.RESUME_MAY_CHANGE``; another live process holds the run directory (
            :class:`mtrl.rundir.RunDirBusy`); a fresh start in a directory that has checkpoints.
    """

    def __init__(self, settings: ResolvedSTLConfig, kind: TrainerKind = STL) -> None:
        import torch

        from agents.sb3 import import_sb3

        sb3 = import_sb3()
        self.settings, self.cfg = settings, settings.cfg
        assert self.cfg.protocol is not None  # filled by resolve_stl_config
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_name = self.cfg.run_name or f"STL_{self.cfg.protocol}_s{self.cfg.seed}_{stamp}"
        self.run_dir = Path(self.cfg.logdir) / run_name
        self.device = torch.device(settings.device)  # resolved by resolve_stl_config
        #: The run's settings as written to ``config.yaml``.
        self.record = run_record(settings, sb3.__version__, run_name)
        self.protocol = settings.protocol
        self.tasks: list[str] = list(settings.tasks)
        self.kind = kind
        self.ckpt_dir = self.run_dir / "checkpoints"
        #: The state file (:mod:`agents.stl_state`): what the checkpoints on disk hold.
        self.state_path = self.ckpt_dir / STATE_FILE
        self.notes: list[str] = []
        self.steps = {t: 0 for t in self.tasks}  # env steps done per task (= SB3 num_timesteps)
        self.saved = {t: 0 for t in self.tasks}  # step of each task's checkpoint on disk (0 = none)
        self.history = EvalHistory(self.tasks)
        #: The signal that stopped the last train() call (None: it was not stopped).
        self.stop_signal: int | None = None
        # The run skeleton (mtrl.skeleton): the run-directory rule and the resume check before and again under the
        # lease (one writer per run directory: a second process refuses here, RunDirBusy, before writing
        # anything), then the state file, config.yaml and the logs. A fresh run starts with clean logs; a resumed one
        # appends (tasks stop at different steps, so no single purge step fits them all).
        self.logger = start_run(
            self, self.run_dir, kind, self.cfg.resume,
            check=self._check_resume, restore=self._restore, config=self.record, layout=self._layout,
            opened=lambda logger: log_hparams(logger, self.record, self.protocol), cut_logs=False,
        )  # fmt: skip
        self.models: dict[str, Any] = {}
        self.eval_envs: dict[str, Any] = {}
        self.train_means = TrainLossMeans(len(self.tasks))
        self.updates_done = 0
        self.train_seconds = 0.0
        self._stop = False
        self._bar: Any = None

    # --- public ------------------------------------------------------------------------------
    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Stop at the next environment step, save and write the results (what Ctrl-C or SIGTERM does)."""
        self._stop, self.stop_signal = True, signum

    def train(self) -> dict[str, Any]:
        """Train every task to ``steps`` in rounds; returns (and writes) the results."""
        with self._holding_run_dir():  # held since __init__; taken again if this run already finished once
            return self._train()

    def evals(self) -> list[dict[str, Any]]:
        """The multi-task runs' ``evals``: ``{step, success_mean, success: {task: rate}}`` for every
        step at which all tasks were evaluated, in step order."""
        return self.history.evals()

    # --- start-up (the run skeleton's callbacks) -------------------------------------------------
    def _check_resume(self) -> None:
        """Resume: the saved config matches (:func:`mtrl.rundir.check_resume`). Whether there is a state to resume
        and whether a fresh start would overwrite one is the run-directory rule's
        (:func:`mtrl.runstart.check_run_dir`). Reads only."""
        import yaml

        saved_path = self.run_dir / "config.yaml"
        if self.cfg.resume and saved_path.is_file():
            saved_cfg = yaml.safe_load(saved_path.read_text()) or {}
            check_resume(saved_cfg, self.record, STLConfig.RESUME_MAY_CHANGE, "--resume", saved_path)

    def _restore(self, _: None) -> int:
        """Read the state file (:func:`agents.stl_state.read_state`; its presence checked by the run-directory
        rule; read under the lease); returns the step of the task furthest behind (the logs append from there)."""
        state = read_state(self.ckpt_dir, self.tasks, self.kind)
        self.saved, self.history = state.steps, state.history
        self.steps = dict(self.saved)
        self.notes.append(f"resumed at steps {self.steps}")
        return min(self.steps.values())

    def _layout(self) -> Layout:
        """The custom-scalars layout: the single-task reference's charts, a line per task."""
        return custom_scalars_layout(STL_CHARTS, self.tasks)

    # --- the round loop --------------------------------------------------------------------------
    def _train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        from mtrl.interrupt import install_stop_handler

        total = self.cfg.steps
        self._log_header(self.logger)
        self._bar = tqdm(
            total=len(self.tasks) * total,
            initial=sum(min(s, total) for s in self.steps.values()),
            disable=not self.cfg.progress,
            unit="step",
        )
        self._stop, self.stop_signal = False, None
        restore_sigint = install_stop_handler(self.request_stop, lambda: self._stop)
        try:
            for boundary in self._boundaries():
                self._train_round(boundary)
                if self._stop:
                    break
            if self._stop:
                self._save_on_stop()
        finally:
            self._bar.close()
            restore_sigint()
        return self._finish()

    def _log_header(self, logger: Logger) -> None:
        """``run/notes`` and ``run/config`` at the first step this (possibly resumed) run trains."""
        header = [
            f"protocol: {self.protocol.name}",
            "method: one stable-baselines3 SAC per task (the STL reference row)",
            f"tasks: {', '.join(self.tasks)}",
            *self.notes,
        ]
        start_step = min(self.steps.values())
        logger.text("run/notes", "\n\n".join(header), start_step)
        logger.text("run/config", "```\n" + json.dumps(self.record, indent=2) + "\n```", start_step)

    def _boundaries(self) -> list[int]:
        """Round ends: every evaluation and checkpoint step, and the end."""
        c, marks = self.cfg, {self.cfg.steps}
        for every in (c.eval_every, c.checkpoint_every):
            if every:
                marks.update(range(every, c.steps, every))
        return sorted(marks)

    def _train_round(self, boundary: int) -> None:
        """Advance every task to ``boundary`` (one after the other), then log the round's throughput."""
        seconds_before, steps_before = self.train_seconds, dict(self.steps)
        updates_before = self.updates_done
        for task in self.tasks:
            if self.steps[task] >= boundary:
                if self.steps[task] >= self.cfg.steps and boundary == self.cfg.steps:
                    print(f"{task}: finished ({self.steps[task]} steps), skipped", file=sys.stderr)
                continue
            self._train_chunk(task, boundary)
            if self._stop:
                return
            self._after_boundary(task, boundary)
        elapsed = self.train_seconds - seconds_before
        advanced = sum(self.steps[t] - steps_before[t] for t in self.tasks)
        if advanced and elapsed > 0:
            perf = {
                "perf/sps": advanced / len(self.tasks) / elapsed,
                "perf/updates_per_s": (self.updates_done - updates_before) / elapsed,
            }
            self.logger.scalars(perf, boundary)
            self._bar.set_postfix(sps=f"{perf['perf/sps']:.1f}", success=self.history.latest_mean())

    def _model(self, task: str) -> Any:
        """The task's SB3 SAC: already in memory, reloaded from its checkpoint, or new."""
        if task not in self.models:
            folder = self.ckpt_dir / task
            model, reloaded = build_task_model(
                task, self.settings, str(self.device), folder, self.steps[task], self.notes
            )
            if reloaded:
                self.steps[task] = int(model.num_timesteps)
            self.models[task] = model
        return self.models[task]

    def _train_chunk(self, task: str, boundary: int) -> None:
        """Advance ``task`` to step ``boundary`` (or until a stop is requested)."""
        from agents.sb3 import num_updates, step_callback

        model = self._model(task)
        start_t, start_step, start_updates = time.perf_counter(), self.steps[task], num_updates(model)
        if self.steps[task] < boundary:
            model.learn(
                total_timesteps=boundary - self.steps[task],
                callback=step_callback(lambda step: self._after_env_step(task, step)),
                log_interval=None,  # SB3 never dumps (or clears) its logged values: we read them
                reset_num_timesteps=False,
                progress_bar=False,
            )
        self.steps[task] = int(model.num_timesteps)
        self.updates_done += num_updates(model) - start_updates
        elapsed = time.perf_counter() - start_t
        self.train_seconds += elapsed
        if elapsed > 0 and self.steps[task] > start_step:
            self.logger.scalars({f"perf/sps/{task}": (self.steps[task] - start_step) / elapsed}, self.steps[task])

    def _after_env_step(self, task: str, step: int) -> bool:
        """Called by SB3 after every env step of ``task``; returns False to stop its ``learn``."""
        self.lease.check()  # stop at once if another process took the run directory over
        self.steps[task] = step
        if self._bar is not None:
            self._bar.update(1)
        if step % self.cfg.log_every == 0:
            self._log_train(task, step)
        return not self._stop

    def _log_train(self, task: str, step: int) -> None:
        """``train/*/<task>`` from SB3's latest update, and their task means once every task logged ``step``."""
        from agents.sb3 import last_train_values

        row = train_row(last_train_values(self.models[task]))
        if row is None:  # still warming up: no update yet
            return
        self.logger.scalars({f"train/{k}/{task}": v for k, v in row.items()}, step)
        means = self.train_means.add(task, step, row)
        if means is not None:
            self.logger.scalars(means, step)

    def _after_boundary(self, task: str, boundary: int) -> None:
        """Evaluate and checkpoint ``task`` at a round end as the schedule says."""
        c = self.cfg
        at_end = boundary >= c.steps
        if at_end or (c.eval_every and boundary % c.eval_every == 0):
            self._evaluate(task, boundary)
        if at_end or (c.checkpoint_every and boundary % c.checkpoint_every == 0):
            self._save(task)
            self._write_state()
        if at_end:  # a finished task leaves memory (its checkpoint holds it)
            self.models.pop(task)
            env = self.eval_envs.pop(task, None)
            if env is not None:
                env.close()

    def _evaluate(self, task: str, step: int) -> None:
        """Evaluate ``task`` under the protocol; log its success, and the mean once all tasks have one."""
        from agents.sb3 import SB3EvalAgent, make_task_eval_env
        from envs import evaluate

        if task not in self.eval_envs:
            self.eval_envs[task] = make_task_eval_env(task, self.protocol, self.cfg.seed)
        episodes = self.settings.eval_episodes
        result = evaluate(SB3EvalAgent(self.models[task]), self.eval_envs[task], episodes_per_task=episodes)
        self.history.add(task, step, float(result.success_mean), float(result.return_per_task[0]))
        self.logger.scalars(
            {f"eval/success/{task}": result.success_mean, f"eval/return/{task}": float(result.return_per_task[0])},
            step,
        )
        tqdm_write = getattr(self._bar, "write", print)
        tqdm_write(f"{task} step {step}: success {result.success_mean:.2f}")
        mean = self.history.mean_to_log(step)
        if mean is not None:
            evals = [e for e in self.evals() if e["step"] <= step]
            self.logger.scalars({"eval/success_mean": mean, **hparam_metrics(evals, self.protocol)}, step)
        self.logger.flush()

    # --- checkpoints and results -------------------------------------------------------------------
    def _save_on_stop(self) -> None:
        """After a stop request: checkpoint every task in memory whose checkpoint is behind, and the state."""
        for task in self.models:
            if self.saved[task] != self.steps[task]:
                self._save(task)
        self._write_state()

    def _save(self, task: str) -> None:
        """``task``'s checkpoint (:func:`agents.stl_models.save_task_model`), if this run still holds the lease."""
        self.lease.check()  # never write after another process took the run directory over
        save_task_model(self.models[task], self.ckpt_dir / task, self.cfg.checkpoint_replay)
        self.saved[task] = self.steps[task]

    def _write_state(self) -> None:
        """``checkpoints/state.pt`` (what the checkpoints on disk hold), written atomically."""
        self.lease.check()
        write_state(self.ckpt_dir, self.kind, self.saved, self.history)

    def _finish(self) -> dict[str, Any]:
        """The results (:func:`agents.stl_metrics.results_record`), written to ``results.json``; closes the logs
        and the evaluation envs."""
        results = results_record(
            self.run_dir, self.record, self.protocol, self.cfg.benchmark, self.cfg.seed,
            {t: self.steps[t] for t in self.tasks}, self.cfg.steps, self.history,
        )  # fmt: skip
        write_results(self, self.run_dir, results)
        self.logger.close()
        for env in self.eval_envs.values():
            env.close()
        return results
