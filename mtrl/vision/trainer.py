"""Supervised dense multi-task training on the shared balancer core and gradient engine.

One training step (top to bottom in :meth:`VisionTrainer.train_step`)::

    z = model.features(x)                       # shared representation (upcast to float32 under AMP)
    preds = model.decode(z)                     # {task: (B, C_t, H, W)}
    losses = multi_task_losses(tasks, preds, batch)            # (T,) fixed task order
    engine.backward(losses, model.shared_parameters(), model.task_parameters(),
                    features=z   (representation-level balancers: mgda_ub, aligned_mtl_ub, imtl),
                    loss_fn=...  (sgsu, dgr: recompute the losses with substituted parameters))
    optimizer.step(); scheduler.step()
    engine.post_step(losses after the step)     # FAMO only

Only the engine writes ``.grad``. ``single_task=<task>`` trains that task alone with ``ew`` (the Δm
references). Device-agnostic; on CUDA: autocast (bf16, or fp16 with a GradScaler), channels-last
inputs, pinned-memory loaders.

Mixed precision (:mod:`mtrl.vision.amp`): under autocast the representation is upcast, ``z =
model.features(x).float()``, so the representation-level Gramians come from float32 ``∇_z``. fp16 needs a
GradScaler, which hands the engine ``S·L`` and divides the ``.grad`` it writes by ``S``; that is exact only
for scale-equivariant balancers (``d(S·L) = S·d(L)``), so ``amp=fp16`` with any other balancer is refused
at start-up and ``amp=auto`` then runs in full precision where bf16 is unavailable (logged as text
``amp``). ``amp=bf16``/``fp16`` also work on the CPU (CPU autocast), which is how the AMP path is tested.

Reproducibility: data order is a per-epoch permutation seeded by ``(seed, epoch)``; the DataLoaders draw
their worker seeds from private generators seeded per ``(seed, epoch)`` (never from the global RNG), and
the global RNGs (dropout) are checkpointed, so a run resumed mid-epoch continues bit for bit. Resuming
with a changed configuration is refused, except for the keys in :data:`RESUME_MAY_CHANGE`.

Run directory: ``config.yaml``, TensorBoard events + ``metrics.jsonl`` (``train/loss/<task>``,
``balancer/encoder/...`` from the engine report, ``eval/<task>/<metric>``, image panels ``images/<task>``),
``checkpoint.pt`` (model, optimizer, scheduler, balancer state, GradScaler, RNG, evaluation history) and
``results.json`` (final metrics, the mean of the last ``last_k`` evaluations, Δm vs the baseline).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mtrl.balancers import Balancer, make_balancer
from mtrl.config import MISSING, ConfigError, config_to_dict, load_config, save_config
from mtrl.config import config_differences as nested_differences
from mtrl.device import resolve_device
from mtrl.engine import (
    BalanceReport,
    GradientEngine,
    LossClosure,
    Strategy,
    StrategyNames,
    choose_strategy,
    core_balancer,
    make_loss_fn,
    needs_loss_fn,
)
from mtrl.logger import JsonlWriter, Logger, TensorBoardWriter, truncate_jsonl
from mtrl.vision.amp import make_grad_scaler, resolve_amp
from mtrl.vision.config import VisionConfig
from mtrl.vision.data import DATASETS, make_dataset
from mtrl.vision.delta import REFERENCE_BASELINES, Baseline, delta_m, higher_is_better_of
from mtrl.vision.losses import multi_task_losses
from mtrl.vision.metrics import MultiTaskMetrics
from mtrl.vision.models import MultiTaskDenseModel, make_model
from mtrl.vision.tasks import TaskSpec
from mtrl.vision.visualize import task_panels

__all__ = [
    "RESUME_MAY_CHANGE",
    "BalancedStep",
    "EpochSampler",
    "VisionTrainer",
    "resolve_device",
    "strategy_problem",
    "train",
]

#: config keys (dotted) that may differ when a run is resumed: training length, where/how it runs and logs,
#: and the Δm baseline (only read when the results are written). Anything else changes the run.
RESUME_MAY_CHANGE: frozenset[str] = frozenset(
    {"optim.steps", "optim.epochs", "logdir", "run_name", "device", "resume", "progress", "threads",
     "data.workers", "log_every", "image_samples", "baseline"}
)  # fmt: skip
#: data-config keys that must agree between a run and the single-task runs used as its Δm baseline.
BASELINE_DATA_KEYS: tuple[str, ...] = ("name", "size", "train_length", "val_length", "augment", "options")


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


#: how the vision configuration spells the settings named in strategy errors.
STRATEGY_NAMES = StrategyNames("balancer.strategy", "balancer.hparams.representation_level=false")


def strategy_problem(balancer: Balancer, strategy: str) -> str | None:
    """Why ``strategy`` cannot run ``balancer`` on a dense model, which always provides ``z`` (None when it
    can): the engine's rules (:func:`mtrl.engine.choose_strategy`), with no parameter-level fallback of a
    representation-level balancer (an explicit ``balancer.hparams.representation_level=false`` says so)."""
    try:
        choose_strategy(balancer, strategy, features=True, capture=False, allow_fallback=False, names=STRATEGY_NAMES)
    except ValueError as err:
        return str(err)
    return None


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by ``(seed, epoch)``, starting at batch ``start_batch``.

    Resumable by construction: the permutation depends only on ``(seed, epoch)``, and skipping the first
    ``start_batch × batch_size`` indices costs nothing (no sample is loaded).
    """

    def __init__(self, length: int, seed: int, batch_size: int) -> None:
        self.length, self.seed, self.batch_size = length, seed, batch_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.length, generator=gen)
        usable = (self.length // self.batch_size) * self.batch_size  # drop_last
        return iter(perm[self.start_batch * self.batch_size : usable].tolist())

    def __len__(self) -> int:
        return max(0, self.length // self.batch_size - self.start_batch) * self.batch_size


class _Cached(Dataset[dict[str, Tensor]]):
    """Keeps samples of a deterministic (generated, un-augmented) data set in memory after first use."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.tasks = base.tasks
        self._store: dict[int, dict[str, Tensor]] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if index not in self._store:
            self._store[index] = self.base[index]
        return self._store[index]


def _results_path(path: str) -> Path:
    p = Path(path)
    return p / "results.json" if p.is_dir() else p


def config_differences(old: VisionConfig, new: VisionConfig, allowed: frozenset[str] = frozenset()) -> list[str]:
    """``["key: old -> new", ...]`` for every dotted config key that differs, except those in ``allowed``
    (a key only one side has shows ``None`` on the other)."""
    changed = nested_differences(config_to_dict(old), config_to_dict(new), allowed)
    return [f"{key}: {_shown(a)!r} -> {_shown(b)!r}" for key, a, b in changed]


def _shown(value: Any) -> Any:
    return None if value is MISSING else value


class BalancedStep:
    """One balanced optimisation step of a multi-task dense model: the seam where the engine plugs in.

    ``step(x (B,3,H,W), targets {task: target}) -> (losses (T,) detached, BalanceReport)``: forward through
    ``features``/``decode``, per-task losses, one ``engine.backward`` (features ``z`` for representation-level
    balancers, a loss closure for sgsu/dgr), ``optimizer.step()``, and FAMO's ``post_step``.

    Under autocast (``amp_dtype``) ``z`` is upcast to float32 before decoding, so ``∇_z`` (the
    representation-level Jacobian) is float32 while the convolutions still run in ``amp_dtype``. With a
    ``scaler`` (fp16) the engine receives ``scaler.scale(losses)``: only correct for scale-equivariant
    balancers (:func:`mtrl.vision.amp.fp16_refusal`; the trainer refuses the others).
    """

    def __init__(
        self,
        model: MultiTaskDenseModel,
        tasks: Sequence[TaskSpec],
        balancer: Balancer,
        optimizer: torch.optim.Optimizer,
        *,
        strategy: Strategy = "auto",
        diagnostics: bool = False,
        amp_dtype: torch.dtype | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model, self.tasks, self.balancer, self.optimizer = model, tuple(tasks), balancer, optimizer
        self.amp_dtype, self.scaler = amp_dtype, scaler
        core = core_balancer(balancer)
        self.representation = core.representation_level
        self.needs_closure = needs_loss_fn(balancer)
        if self.representation and not getattr(model, "representation_exact", True):
            raise ValueError(
                f"balancer {balancer.name!r} differentiates w.r.t. the shared representation, but "
                f"{type(model).__name__} applies shared parameters after it (SegNet-MTAN's shared attention convs); "
                "use a parameter-level balancer (e.g. 'mgda', 'aligned_mtl', 'imtl_g') "
                "or model.share_attention_convs=false"
            )
        problem = strategy_problem(balancer, strategy)
        if problem is not None:
            raise ValueError(problem)
        #: pass z to the engine: representation-level balancers, or diagnostics placed on z
        self.pass_features = self.representation or strategy == "representation"
        self.engine = GradientEngine(balancer, strategy=strategy, diagnostics=diagnostics)
        self.needs_post_step = self.engine.needs_post_step_losses
        self.shared = model.shared_parameters()
        self.task_params = model.task_parameters()
        self.heads = model.head_modules()

    def autocast(self) -> AbstractContextManager[Any]:
        """Mixed-precision context (a no-op without an AMP dtype)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.shared[0].device.type, dtype=self.amp_dtype)

    def losses(self, preds: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
        """Per-task losses ``(T,)`` in float32, fixed task order."""
        return multi_task_losses(self.tasks, {k: v.float() for k, v in preds.items()}, targets)

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(z, preds)``: the shared representation (float32 under autocast) and the per-task predictions."""
        with self.autocast():
            z = self.model.features(x)
            if self.amp_dtype is not None and z.is_floating_point():
                z = z.float()  # ∇_z in float32: representation-level Gramians are not built from bf16/fp16
            preds = self.model.decode(z)
        return z, preds

    def loss_fn(self, x: Tensor, targets: dict[str, Tensor]) -> LossClosure:
        """LossClosure ``(shared_values, task_values) -> (T,)`` on this batch (``torch.func.functional_call``)."""

        def compute(forward: Callable[..., Any]) -> Tensor:
            with self.autocast():
                preds = forward(x)
            return self.losses(preds, targets)

        return make_loss_fn(self.model, self.shared, self.task_params, compute)

    def __call__(
        self, x: Tensor, targets: dict[str, Tensor], diagnostics: bool | None = None
    ) -> tuple[Tensor, BalanceReport]:
        """One step; ``diagnostics=True`` asks the engine for G statistics of loss weightings too (log steps)."""
        self.model.train()
        z, preds = self.forward(x)
        losses = self.losses(preds, targets)  # (T,)
        report = self.engine.backward(
            self.scaler.scale(losses) if self.scaler is not None else losses,
            self.shared,
            self.task_params,
            features=z if self.pass_features else None,
            loss_fn=self.loss_fn(x, targets) if self.needs_closure else None,
            heads=self.heads,
            diagnostics=diagnostics,
        )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.needs_post_step:
            with torch.no_grad(), self.autocast():
                self.engine.post_step(self.losses(self.model(x), targets))
        return losses.detach(), report


class VisionTrainer:
    """Builds data, model, balancer, engine, optimizer and logger from a :class:`VisionConfig`; :meth:`run` trains.

    Configuration problems (incompatible balancer/strategy/model/amp choices, data options a data set does
    not take, a resumed run whose configuration changed) raise :class:`ConfigError` here, before training.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)

        self.train_set, self.val_set = self._datasets()
        all_tasks: tuple[TaskSpec, ...] = tuple(self.train_set.tasks)
        if cfg.single_task is not None:
            names = [t.name for t in all_tasks]
            if cfg.single_task not in names:
                raise ValueError(f"single_task={cfg.single_task!r} is not a task of {cfg.data.name!r}; valid: {names}")
            all_tasks = tuple(t for t in all_tasks if t.name == cfg.single_task)
        self.tasks = all_tasks
        self.task_names = [t.name for t in self.tasks]
        self.balancer_name = "ew" if cfg.single_task is not None else cfg.balancer.name
        hparams = {} if cfg.single_task is not None else dict(cfg.balancer.hparams)
        self.balancer = make_balancer(self.balancer_name, len(self.tasks), **hparams)
        self._check_balancer_config()
        self.amp = resolve_amp(cfg.amp, self.device, self.balancer)
        self.amp_dtype = self.amp.dtype

        pin = self.device.type == "cuda"
        self.sampler = EpochSampler(len(self.train_set), cfg.seed, cfg.data.batch_size)
        self.steps_per_epoch = len(self.train_set) // cfg.data.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"batch_size={cfg.data.batch_size} exceeds the {len(self.train_set)} training samples")
        workers = cfg.data.workers
        # Private generators: a DataLoader draws its workers' base seed from ``generator`` (the global torch RNG
        # when None) each time an iterator is created; seeded per (seed, epoch) / evaluation, that draw neither
        # depends on nor changes the global RNG, so a run resumed mid-epoch replays the same dropout masks.
        self.train_generator = torch.Generator()
        self.val_generator = torch.Generator()
        self.train_loader = DataLoader(
            self.train_set, batch_size=cfg.data.batch_size, sampler=self.sampler, num_workers=workers,
            pin_memory=pin, generator=self.train_generator,
        )  # fmt: skip
        self.val_loader = DataLoader(
            self.val_set, batch_size=cfg.data.eval_batch_size, shuffle=False, num_workers=workers, pin_memory=pin,
            generator=self.val_generator,
        )  # fmt: skip

        self.model: MultiTaskDenseModel = make_model(
            cfg.model.name,
            self.tasks,
            width=cfg.model.width,
            pretrained_path=cfg.model.pretrained_path,
            share_attention_convs=cfg.model.share_attention_convs,
        ).to(self.device)
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

        name = cfg.run_name or f"{cfg.data.name}_{cfg.single_task or self.balancer_name}_s{cfg.seed}"
        self.run_dir = Path(cfg.logdir) / name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        if cfg.baseline:
            self.baseline()  # fail before training, not after: missing files, other data, another last_k
        if cfg.resume and self.checkpoint_path.is_file():
            self._check_resume_config()
            self.load_checkpoint(self.checkpoint_path)
        resumed = cfg.resume and self.checkpoint_path.is_file()
        save_config(cfg, self.run_dir / "config.yaml")
        # Logs: a fresh run starts clean; a resumed one drops what was logged after its checkpoint
        # (mtrl.logger's module docstring).
        metrics_path = self.run_dir / "metrics.jsonl"
        truncate_jsonl(metrics_path, self.step if resumed else None)
        tensorboard = TensorBoardWriter(self.run_dir, purge_step=self.step + 1 if resumed else 0)
        self.logger = Logger([tensorboard, JsonlWriter(metrics_path)])
        self.logger.text("amp", self.amp.note, self.step)

    # --- configuration checks -----------------------------------------------------------------------
    def _check_balancer_config(self) -> None:
        problem = strategy_problem(self.balancer, self.cfg.balancer.strategy)
        if problem is not None:
            raise ConfigError(problem)

    def _check_resume_config(self) -> None:
        """Refuse to continue a run whose saved ``config.yaml`` differs outside :data:`RESUME_MAY_CHANGE`."""
        saved = self.run_dir / "config.yaml"
        if not saved.is_file():
            return
        old = load_config(VisionConfig, saved)
        changed = config_differences(old, self.cfg, RESUME_MAY_CHANGE)
        if changed:
            raise ConfigError(
                f"resume=true but the configuration differs from the one {str(self.run_dir)!r} was trained with: "
                f"{'; '.join(changed)}. Resume with the same settings (only {sorted(RESUME_MAY_CHANGE)} may "
                "change) or start a new run (another run_name)"
            )

    # --- data ---------------------------------------------------------------------------------------
    def _datasets(self) -> tuple[Any, Any]:
        """Train/val sets. Real sets get ``augment`` (train only) and the run seed for it; generated sets get
        ``size``/``length`` and keep their own data seed (``data.options.seed``), so every run sees the same data."""
        d = self.cfg.data
        params = inspect.signature(DATASETS[d.name][0]).parameters
        fixed = {"root", "split", "augment", "length"} | ({"seed"} if "augment" in params else set())
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        valid_options = sorted(k for k in params if k not in fixed and k != "self")
        bad_options = sorted(k for k in d.options if k in fixed or (k not in params and not takes_any))
        if bad_options:
            raise ConfigError(
                f"data.options {bad_options} are not options of data set {d.name!r}; valid: {valid_options}"
            )
        unsupported = [
            f"data.{key}" for key, value, arg in (("size", d.size, "size"), ("train_length", d.train_length, "length"),
                                                  ("val_length", d.val_length, "length"))
            if value is not None and arg not in params
        ]  # fmt: skip
        if unsupported:
            raise ConfigError(
                f"{', '.join(unsupported)} only apply to generated data sets (synthetic, dense_digits); "
                f"{d.name!r} reads its files at their own size and length: remove them (set them to null)"
            )
        kwargs: dict[str, Any] = dict(d.options)
        if d.size is not None:
            kwargs["size"] = tuple(d.size)
        if "augment" in params:
            kwargs["seed"] = self.cfg.seed
        elif d.augment:
            raise ConfigError(f"data set {d.name!r} has no augmentation; set data.augment=false")
        sets = []
        for split, length in (("train", d.train_length), ("val", d.val_length)):
            extra = dict(kwargs)
            if length is not None:
                extra["length"] = length
            if "augment" in params:
                extra["augment"] = d.augment and split == "train"
            ds = make_dataset(d.name, root=d.root, split=split, **extra)
            sets.append(_Cached(ds) if d.cache and not (d.augment and split == "train") else ds)
        return sets[0], sets[1]

    def _to_device(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x = batch["image"].to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = {n: batch[n].to(self.device, non_blocking=True) for n in self.task_names}
        return x, targets

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
        self.val_generator.manual_seed(_mix_seed(self.cfg.seed, self.step, 1))
        for batch in self.val_loader:
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
        returns the results record (also written to ``results.json`` when training completed)."""
        from tqdm.auto import tqdm

        end = self.total_steps if stop_at is None else min(stop_at, self.total_steps)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.cfg.progress, desc=self.run_dir.name)
        start_time, start_step = time.perf_counter(), self.step
        self._run_started = start_time
        while self.step < end:
            epoch, offset = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, offset)
            set_epoch = getattr(self.train_set, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
            self.train_generator.manual_seed(_mix_seed(self.cfg.seed, epoch, 0))
            for batch in self.train_loader:
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
                if self.step >= end:
                    break
        bar.close()
        self.train_time_s, self._run_started = self._elapsed(), None
        if self.step < self.total_steps:
            self.save_checkpoint(self.checkpoint_path)
            self.logger.close()
            return {"step": self.step, "finished": False}
        results = self.results()
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=2))
        metrics = {f"hparam/{k}": v for k, v in results["selected"].items() if math.isfinite(v)}
        self.logger.scalars(metrics, self.step)
        self.logger.hparams(
            {"balancer": self.balancer_name, "single_task": str(self.cfg.single_task), "seed": self.cfg.seed},
            metrics,
        )
        self.logger.close()
        return results

    # --- results ------------------------------------------------------------------------------------
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
            record["delta_m"] = self._delta_m()
        return record

    def baseline(self) -> Baseline:
        """The Δm baseline: a named reference (``REFERENCE_BASELINES``), or a list of single-task ``results.json``
        files / run dirs (each contributing its own task's selected metrics), or YAML/JSON files of reference
        metric values (``{"seg/miou": 0.38, ...}`` or ``{"name": ..., "values": {...}, "source": ...}``).

        Single-task runs must have used the same data (:data:`BASELINE_DATA_KEYS` of ``data``) and the same
        selection rule (``last_k``); otherwise Δm would compare different things and a ``ConfigError`` says
        which settings differ."""
        if len(self.cfg.baseline) == 1 and self.cfg.baseline[0] in REFERENCE_BASELINES:
            return REFERENCE_BASELINES[self.cfg.baseline[0]]
        values: dict[str, float] = {}
        names, sources = [], []
        for path in self.cfg.baseline:
            p = _results_path(path)
            if not p.is_file():
                raise ConfigError(
                    f"baseline {path!r}: no file at {str(p)!r}; give single-task runs (single_task=<task>), YAML/JSON "
                    f"files of reference metric values, or one of the named references {sorted(REFERENCE_BASELINES)}"
                )
            other = yaml.safe_load(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
            if not isinstance(other, dict):
                raise ConfigError(f"baseline {str(p)!r} must hold a mapping, got {type(other).__name__}")
            if "selected" in other:  # a results.json of a (single-task) run
                self._check_baseline_run(p, other)
                names.append(other.get("run", p.parent.name))
                sources.append("mean of the last k evaluations of each run")
                values.update({k: v for k, v in other["selected"].items() if not k.startswith("loss/")})
            else:
                ref = other.get("values", other)
                if not isinstance(ref, dict) or not ref:
                    raise ConfigError(f"baseline {str(p)!r}: expected a mapping of metric keys to numbers")
                for key, value in ref.items():
                    try:
                        higher_is_better_of(str(key))
                    except ValueError as err:
                        raise ConfigError(f"baseline {str(p)!r}: {err}") from err
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                        raise ConfigError(f"baseline {str(p)!r}: {key!r} must be a finite number, got {value!r}")
                    values[str(key)] = float(value)
                names.append(str(other.get("name", p.stem)))
                sources.append(str(other.get("source", f"reference values from {p}")))
        kind = "single-task runs " if all(s.startswith("mean of") for s in sources) else "reference "
        return Baseline(kind + ", ".join(names), values, "; ".join(dict.fromkeys(sources)))

    def _check_baseline_run(self, path: Path, other: Mapping[str, Any]) -> None:
        """Refuse a baseline run trained on other data or selected by another rule than this run."""
        theirs = other.get("config", {})
        mine = config_to_dict(self.cfg)
        diffs = [
            f"data.{key}: {theirs.get('data', {}).get(key)!r} (baseline) vs {mine['data'][key]!r} (this run)"
            for key in BASELINE_DATA_KEYS
            if theirs.get("data", {}).get(key) != mine["data"][key]
        ]
        if theirs.get("last_k") != mine["last_k"]:
            diffs.append(f"last_k: {theirs.get('last_k')!r} (baseline) vs {mine['last_k']!r} (this run)")
        if diffs:
            raise ConfigError(
                f"baseline run {str(path)!r} does not match this run: {'; '.join(diffs)}. Δm needs single-task "
                "references trained on the same data and selected by the same rule; rerun them with these settings"
            )

    def _delta_m(self) -> dict[str, Any]:
        base = self.baseline()
        history = [{k: v for k, v in e.items() if k != "step" and not k.startswith("loss/")} for e in self.evals]
        missing = sorted(set(history[-1]) - set(base.values))
        if missing:
            raise ConfigError(
                f"the baseline {base.name!r} lacks metrics {missing}; give one single-task run per task "
                "(or reference values for every metric)"
            )
        return dataclasses.asdict(delta_m(history, base, k=self.cfg.last_k))

    def _elapsed(self) -> float:
        running = time.perf_counter() - self._run_started if self._run_started is not None else 0.0
        return self.train_time_s + running

    # --- checkpoints --------------------------------------------------------------------------------
    def save_checkpoint(self, path: Path) -> None:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "balancer": self.balancer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "evals": self.evals,
            "train_time_s": self._elapsed(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.evals = list(state["evals"])
        self.train_time_s = float(state["train_time_s"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])


def train(cfg: VisionConfig) -> dict[str, Any]:
    """Build a :class:`VisionTrainer` from ``cfg`` and train it to the end; returns the results record."""
    return VisionTrainer(cfg).run()
