"""The training loop of a dense multi-task run: :class:`VisionTrainer` builds a run from a :class:`VisionConfig`
and trains it; :func:`train` does both.

The loop's parts live in their own modules: the balanced step, where the engine plugs in
(:mod:`mtrl.vision.step`), data sets, loaders and the resumable data order (:mod:`mtrl.vision.loading`), the
Δm baseline (:mod:`mtrl.vision.baseline`), and the run directory: checkpoints, the resume check, log purging,
``results.json`` (:mod:`mtrl.vision.run_state`). Each step is ``BalancedStep`` (forward, per-task losses, one
``engine.backward``, ``optimizer.step()``) then ``scheduler.step()``; every ``log_every`` steps the losses, the
engine's report and the learning rate are logged; every ``eval_every`` steps (default: one epoch) the whole
validation split is evaluated and the run checkpointed.

``single_task=<task>`` trains that task alone with ``ew`` (the Δm references). Device-agnostic; on CUDA:
autocast (bf16, or fp16 with a GradScaler; :mod:`mtrl.vision.amp`), channels-last inputs, pinned-memory
loaders. ``amp=fp16`` with a balancer that is not scale-equivariant is refused at start-up and ``amp=auto``
then runs in full precision where bf16 is unavailable (logged as text ``amp``). ``amp=bf16``/``fp16`` also
work on the CPU (CPU autocast), which is how the AMP path is tested.

Reproducibility: the data order and the loaders' worker seeds depend only on ``(seed, epoch)``
(:mod:`mtrl.vision.loading`) and the global RNGs (dropout) are checkpointed, so a run resumed mid-epoch
continues bit for bit. Resuming with a changed configuration is refused, except for the keys in
``VisionConfig.RESUME_MAY_CHANGE``. One process at a time writes a run directory (the lease of
:mod:`mtrl.rundir`).

Logged tags: ``train/loss/<task>``, ``balancer/encoder/...`` from the engine report, ``eval/<task>/<metric>``,
image panels ``images/<task>``. ``results.json`` holds the final metrics, the mean of the last ``last_k``
evaluations, and Δm vs the baseline.
"""

from __future__ import annotations

import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers import make_balancer
from mtrl.config import ConfigError, config_to_dict
from mtrl.device import resolve_device_name
from mtrl.engine import BalanceReport, core_balancer
from mtrl.interrupt import install_stop_handler
from mtrl.logger import VISION_CHARTS, Layout, Logger, custom_scalars_layout
from mtrl.rundir import LeasedRun
from mtrl.runstart import VISION
from mtrl.skeleton import restore_newest, start_run, write_results
from mtrl.vision.amp import make_grad_scaler, resolve_amp
from mtrl.vision.baseline import baseline_delta_m, load_baseline
from mtrl.vision.config import VisionConfig
from mtrl.vision.loading import make_datasets, make_loaders, to_device
from mtrl.vision.metrics import MultiTaskMetrics
from mtrl.vision.models import MultiTaskDenseModel, make_model
from mtrl.vision.run_state import (
    CHECKPOINT,
    Progress,
    Stateful,
    load_checkpoint,
    resume_checkpoint,
    run_dir_of,
    save_checkpoint,
)
from mtrl.vision.step import BalancedStep, strategy_problem
from mtrl.vision.tasks import TaskSpec
from mtrl.vision.visualize import task_panels

__all__ = ["VisionTrainer", "train"]


class VisionTrainer(LeasedRun):
    """Builds data, model, balancer, engine, optimizer and logger from a :class:`VisionConfig`; :meth:`run` trains.

    Configuration problems (incompatible balancer/strategy/model/amp choices, data options a data set does
    not take, a resumed run whose configuration changed) raise :class:`ConfigError` here, before training.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(resolve_device_name(cfg.device))  # ConfigError for a device this machine lacks
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

        self.train_set, self.val_set = make_datasets(cfg)
        all_tasks: tuple[TaskSpec, ...] = tuple(self.train_set.tasks)
        if cfg.single_task is not None:
            names = [t.name for t in all_tasks]
            if cfg.single_task not in names:
                raise ConfigError(f"single_task={cfg.single_task!r} is not a task of {cfg.data.name!r}; valid: {names}")
            all_tasks = tuple(t for t in all_tasks if t.name == cfg.single_task)
        self.tasks = all_tasks
        self.task_names = [t.name for t in self.tasks]
        self.balancer_name = "ew" if cfg.single_task is not None else cfg.balancer.name
        hparams = {} if cfg.single_task is not None else dict(cfg.balancer.hparams)
        try:
            self.balancer = make_balancer(self.balancer_name, len(self.tasks), **hparams)
        except ValueError as err:  # a hyper-parameter value the balancer refuses for these tasks
            raise ConfigError(f"balancer {self.balancer_name!r}: {err}") from None
        problem = strategy_problem(self.balancer, cfg.balancer.strategy)
        if problem is not None:
            raise ConfigError(problem)
        self.amp = resolve_amp(cfg.amp, self.device, self.balancer)
        self.amp_dtype = self.amp.dtype

        self.loaders = make_loaders(self.train_set, self.val_set, cfg.data, cfg.seed, self.device.type == "cuda")
        self.sampler, self.train_loader, self.val_loader = self.loaders.sampler, self.loaders.train, self.loaders.val
        self.steps_per_epoch = self.loaders.steps_per_epoch

        try:
            model = make_model(
                cfg.model.name,
                self.tasks,
                width=cfg.model.width,
                pretrained_path=cfg.model.pretrained_path,
                share_attention_convs=cfg.model.share_attention_convs,
            )
        except (ValueError, OSError) as err:  # a width, a pretrained_path the model cannot take
            raise ConfigError(f"model.name={cfg.model.name!r}: {err}") from None
        self.model: MultiTaskDenseModel = model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        representation = core_balancer(self.balancer).representation_level
        if representation and not getattr(self.model, "representation_exact", True):
            raise ConfigError(
                f"balancer.name={self.balancer_name!r} differentiates w.r.t. the shared representation, but "
                f"model.name={cfg.model.name!r} with model.share_attention_convs=true applies shared parameters "
                "after it; set model.share_attention_convs=false or use a parameter-level balancer (mgda, "
                "aligned_mtl, imtl_g)"
            )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scaler = make_grad_scaler(self.amp, self.device)
        self.stepper = BalancedStep(
            self.model, self.tasks, self.balancer, self.optimizer, strategy=cfg.balancer.strategy,
            diagnostics=cfg.balancer.diagnostics, amp_dtype=self.amp_dtype, scaler=self.scaler,
        )  # fmt: skip
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch if cfg.optim.epochs > 0 else cfg.optim.steps
        decay = cfg.optim.lr_decay_every * (self.steps_per_epoch if cfg.optim.epochs > 0 else 1)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=decay if decay > 0 else 1, gamma=cfg.optim.lr_gamma if decay > 0 else 1.0
        )
        self.eval_every = cfg.eval_every if cfg.eval_every > 0 else self.steps_per_epoch
        self.step = 0
        self.train_time_s = 0.0  # wall time of run() calls, summed over resumes (evaluations included)
        self._run_started: float | None = None
        self.evals: list[dict[str, Any]] = []
        #: Notes on the resume (a checkpoint skipped as unreadable), logged as the text ``run/notes``.
        self.notes: list[str] = []

        self.run_dir = run_dir_of(cfg, f"{cfg.data.name}_{cfg.single_task or self.balancer_name}_s{cfg.seed}")
        self.checkpoint_path = self.run_dir / CHECKPOINT
        if cfg.baseline:
            load_baseline(cfg)  # fail before training, not after: missing files, other data, another last_k
        #: The signal that stopped the last run() call (None: it was not stopped).
        self.stop_signal: int | None = None
        self._stop = False
        # The run skeleton (mtrl.skeleton): the run-directory rule and the resume check before and again under the
        # lease (one writer per run directory: a second process refuses here, RunDirBusy, before writing
        # anything), then the checkpoint, config.yaml and the logs.
        self.logger = start_run(
            self, self.run_dir, VISION, cfg.resume,
            check=lambda: resume_checkpoint(self.run_dir, cfg), restore=self._resume, config=cfg,
            layout=self._layout, opened=self._log_start,
        )  # fmt: skip

    def _layout(self) -> Layout:
        """The custom-scalars layout: the vision charts, a line per task."""
        return custom_scalars_layout(VISION_CHARTS, self.task_names)

    def _log_start(self, logger: Logger) -> None:
        """The texts ``amp`` and (after a resume that skipped a checkpoint) ``run/notes`` of a (re)started run."""
        logger.text("amp", self.amp.note, self.step)
        if self.notes:
            logger.text("run/notes", "\n\n".join(self.notes), self.step)

    def _to_device(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return to_device(batch, self.task_names, self.device, self.channels_last)

    def train_step(self, batch: dict[str, Tensor], log: bool = True) -> tuple[Tensor, BalanceReport]:
        """One balanced step on ``batch`` (+ the scheduler step); returns the losses ``(T,)`` and the report.

        ``log``: this step is logged, so the engine also computes the Gramian statistics of loss
        weightings such as ``ew`` (``T`` extra backward passes on this step only; the update is the same).
        """
        x, targets = self._to_device(batch)
        losses, report = self.stepper(x, targets, diagnostics=True if log else None)
        self.scheduler.step()
        self.step += 1
        return losses, report

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Metrics over the whole validation split (``{task}/{metric}``) plus mean losses (``loss/{task}``)."""
        self.model.eval()
        metrics = MultiTaskMetrics(self.tasks)
        loss_sum = torch.zeros(len(self.tasks), dtype=torch.float64)
        batches = 0
        panels: dict[str, np.ndarray] = {}
        for batch in self.loaders.validation(self.step):
            x, targets = self._to_device(batch)
            with self.stepper.autocast():
                preds = {k: v.float() for k, v in self.model(x).items()}
            metrics.update(preds, targets)
            loss_sum += self.stepper.losses(preds, targets).double().cpu()
            batches += 1
            if not panels and self.cfg.image_samples > 0:
                for i in range(min(self.cfg.image_samples, x.shape[0])):
                    for name, img in task_panels(
                        x[i], {k: v[i] for k, v in preds.items()}, {k: v[i] for k, v in targets.items()}, self.tasks
                    ).items():
                        panels[name] = img if name not in panels else np.concatenate([panels[name], img], axis=0)
        for name, img in panels.items():
            self.logger.image(f"images/{name}", img, self.step)
        values = {k: float(v) for k, v in metrics.compute().items()}
        values.update({f"loss/{n}": float(v) for n, v in zip(self.task_names, loss_sum / max(batches, 1), strict=True)})
        return values

    def run(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps`` (or stop after ``stop_at`` steps, checkpointed, to simulate an interruption);
        returns the results record (also written to ``results.json`` when training completed). Ctrl-C (SIGINT) or
        SIGTERM stops after the current step with a checkpoint (:attr:`stop_signal` says which signal); a second
        signal aborts at once."""
        with self._holding_run_dir():  # held since __init__; taken again if this trainer already ran once
            self._stop, self.stop_signal = False, None
            restore = install_stop_handler(self.request_stop, lambda: self._stop)
            try:
                return self._run(stop_at)
            finally:
                restore()

    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Stop cleanly after the current step, with a checkpoint (what the first Ctrl-C or SIGTERM does)."""
        self._stop, self.stop_signal = True, signum

    def _run(self, stop_at: int | None) -> dict[str, Any]:
        from tqdm.auto import tqdm

        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.cfg.progress, desc=self.run_dir.name)
        start_time, start_step = time.perf_counter(), self.step
        self._run_started = start_time
        while self.step < end and not self._stop:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            for batch in self.loaders.epoch(epoch, offset):
                self.lease.check()  # stop at once if another process took the run directory over
                log = (self.step + 1) % self.cfg.log_every == 0 or self.step + 1 == end
                losses, report = self.train_step(batch, log)
                bar.update(1)
                if log:
                    scalars = report.scalars("balancer/encoder", self.task_names)
                    scalars.update({f"train/loss/{n}": float(v) for n, v in zip(self.task_names, losses, strict=True)})
                    scalars["train/loss_sum"] = float(losses.sum())
                    scalars["train/lr"] = float(self.scheduler.get_last_lr()[0])
                    scalars["perf/steps_per_s"] = (self.step - start_step) / (time.perf_counter() - start_time)
                    self.logger.scalars(scalars, self.step)
                    bar.set_postfix(loss=f"{float(losses.sum()):.3f}")
                if self.step % self.eval_every == 0 or self.step == self.total_steps:
                    values = self.evaluate()
                    self.evals.append({"step": self.step, **values})
                    self.logger.scalars({f"eval/{k}": v for k, v in values.items()}, self.step)
                    self.save_checkpoint(self.checkpoint_path)
                if self.step >= end or self._stop:
                    break
        bar.close()
        self.train_time_s, self._run_started = self._elapsed(), None
        if self.step < self.total_steps:
            self.save_checkpoint(self.checkpoint_path)
            self.logger.close()
            return {"step": self.step, "finished": False}
        results = self.results()
        write_results(self, self.run_dir, results)
        metrics = {f"hparam/{k}": v for k, v in results["selected"].items() if math.isfinite(v)}
        self.logger.scalars(metrics, self.step)
        self.logger.hparams(
            {"balancer": self.balancer_name, "single_task": str(self.cfg.single_task), "seed": self.cfg.seed},
            metrics,
        )
        self.logger.close()
        return results

    def results(self) -> dict[str, Any]:
        """The results record: final metrics, mean of the last k evaluations, Δm vs the baseline."""
        if not self.evals:
            raise ValueError("no evaluation was run; set eval_every or train for at least one step")
        k = min(self.cfg.last_k, len(self.evals))
        last = self.evals[-k:]
        keys = [key for key in self.evals[-1] if key != "step"]
        selected = {key: float(np.mean([e[key] for e in last])) for key in keys}
        record: dict[str, Any] = {
            "run": self.run_dir.name,
            "data": self.cfg.data.name,
            "model": self.cfg.model.name,
            "balancer": self.balancer_name,
            "single_task": self.cfg.single_task,
            "tasks": self.task_names,
            "seed": self.cfg.seed,
            "steps": self.step,
            "train_time_s": self.train_time_s,
            "final": {key: float(self.evals[-1][key]) for key in keys},
            "selected": selected,
            "selection_rule": f"mean of the last {k} evaluations on the val split (steps {[e['step'] for e in last]})",
            "evals": self.evals,
            "config": config_to_dict(self.cfg),
        }
        if self.cfg.baseline:
            record["delta_m"] = baseline_delta_m(self.cfg, self.evals)
        return record

    def _elapsed(self) -> float:
        running = time.perf_counter() - self._run_started if self._run_started is not None else 0.0
        return self.train_time_s + running

    # --- checkpoints (format and atomic write: mtrl.vision.run_state) ---------------------------------
    def _stateful(self) -> dict[str, Stateful | None]:
        """The checkpointed parts of the run, by checkpoint key."""
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "balancer": self.balancer,
            "scaler": self.scaler,
        }

    def save_checkpoint(self, path: Path) -> None:
        """Checkpoint the run (its parts, progress and the global RNGs) to ``path``."""
        self.lease.check()  # never write after another process took the run directory over
        save_checkpoint(path, self._stateful(), Progress(self.step, self.evals, self._elapsed()))

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a :meth:`save_checkpoint` file."""
        progress = load_checkpoint(path, self._stateful(), self.device)
        self.step, self.evals, self.train_time_s = progress.step, progress.evals, progress.train_time_s

    def _resume(self, candidates: list[Path]) -> int:
        """Continue from the newest intact of ``candidates`` (an unreadable ``checkpoint.pt`` is named in a note,
        printed and logged as the text ``run/notes``, and ``checkpoint.prev.pt`` is used); returns the step."""
        restore_newest(candidates, self.load_checkpoint, self.notes)
        return self.step


def train(cfg: VisionConfig) -> dict[str, Any]:
    """Build a :class:`VisionTrainer` from ``cfg`` and train it to the end; returns the results record."""
    return VisionTrainer(cfg).run()
