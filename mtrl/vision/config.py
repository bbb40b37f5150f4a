"""Typed configuration of a supervised dense multi-task run (``scripts/train_vision.py``).

Frozen dataclasses with a documented default on every field; presets in ``configs/vision/*.yaml``;
loaded with :func:`mtrl.config.load_config` (``key=value`` / ``section.key=value`` overrides, unknown keys
fail at start-up). Defaults follow the MTAN-line protocol where one exists (Adam, lr 1e-4, StepLR halving).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from mtrl.config import ConfigError

__all__ = ["BalancerConfig", "DataConfig", "ModelConfig", "OptimConfig", "VisionConfig"]


@dataclass(frozen=True)
class DataConfig:
    #: data set key of ``mtrl.vision.data.make_dataset``: synthetic, dense_digits, nyuv2, cityscapes.
    name: Literal["synthetic", "dense_digits", "nyuv2", "cityscapes"] = "synthetic"
    #: folder of the real sets (``{root}/{train,val}/{image,label,depth,normal}/{i}.npy``); None for generated sets.
    root: str | None = None
    #: ``[H, W]`` of generated sets (synthetic, dense_digits); None = the data set's default. Real sets keep their size.
    size: tuple[int, ...] | None = None
    #: training batch size (MTAN protocol NYUv2: 2, Cityscapes: 8; LibMTL: 8 / 64).
    batch_size: int = 16
    #: evaluation batch size.
    eval_batch_size: int = 32
    #: DataLoader worker processes (0 = load in the main process).
    workers: int = 0
    #: random scale-crop + horizontal flip on the training split (real sets).
    augment: bool = False
    #: number of training / validation samples of generated sets (None = the data set's default).
    train_length: int | None = None
    val_length: int | None = None
    #: keep generated samples in memory after the first pass (synthetic renders each sample on the fly;
    #: effective with workers=0, each worker process would keep its own copy).
    cache: bool = False
    #: extra keyword arguments of the data set (synthetic knobs: depth_scale, loss_scales, conflict, hole_rate, ...;
    #: generated sets take their data seed from here, default 0, independent of the run seed).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    #: small (CPU), segnet_mtan (MTAN-line protocol), resnet50_aspp (LibMTL protocol).
    name: Literal["small", "segnet_mtan", "resnet50_aspp"] = "small"
    #: base channels; None = the model default (small 16, segnet_mtan 64, resnet50_aspp 64).
    width: int | None = None
    #: resnet50_aspp only: LOCAL torchvision-layout ResNet-50 state dict (never downloaded); None = from scratch.
    pretrained_path: str | None = None
    #: segnet_mtan only: share the attention-path convs across tasks as MTAN's code does (True), or give each
    #: task its own copy (False), which representation-level balancers (mgda_ub, aligned_mtl_ub, imtl) need.
    share_attention_convs: bool = True


@dataclass(frozen=True)
class OptimConfig:
    #: Adam learning rate (MTAN line and LibMTL: 1e-4).
    lr: float = 1e-4
    #: Adam weight decay (LibMTL: 1e-5; MTAN line: 0).
    weight_decay: float = 0.0
    #: training length in epochs; 0 = use ``steps``.
    epochs: int = 0
    #: training length in optimizer steps (used when ``epochs`` is 0).
    steps: int = 300
    #: StepLR period, in epochs when ``epochs`` > 0 else in steps; 0 = constant learning rate.
    lr_decay_every: int = 0
    #: StepLR factor (both protocols halve the learning rate at epoch 100 of 200).
    lr_gamma: float = 0.5


@dataclass(frozen=True)
class BalancerConfig:
    #: balancer key of ``mtrl.balancers.BALANCERS`` (e.g. ew, pcgrad, nash_mtl, aligned_mtl_ub, dgr).
    name: str = "ew"
    #: hyper-parameters of the balancer (``mtrl.balancers.balancer_hparams(name)`` lists them).
    hparams: dict[str, Any] = field(default_factory=dict)
    #: engine strategy: auto picks "representation" for representation-level balancers, else "batched" on
    #: accelerators and "reference" on the CPU (where the vmapped backward is no faster).
    strategy: Literal["auto", "reference", "batched", "representation"] = "auto"
    #: compute G (grad norms, cosines, condition number) for loss weightings such as ew at EVERY step (T extra
    #: backwards each); the trainer always computes them at its log steps (every ``log_every`` steps).
    diagnostics: bool = False

    def __post_init__(self) -> None:
        if self.name == "alpha_weights":  # its weights come from SAC's per-task temperatures
            raise ConfigError(
                "bad value 'alpha_weights' for 'balancer.name': it weighs the tasks by SAC's temperatures, which "
                "the vision trainer does not have; pick another balancer (e.g. 'ew')"
            )


@dataclass(frozen=True)
class VisionConfig:
    #: config keys (dotted) that may differ when a run is resumed: training length, where/how it runs and logs,
    #: and the Δm baseline (only read when the results are written). Anything else changes the run.
    RESUME_MAY_CHANGE: ClassVar[frozenset[str]] = frozenset(
        {"optim.steps", "optim.epochs", "logdir", "run_name", "device", "resume", "progress", "threads",
         "data.workers", "log_every", "image_samples", "baseline"}
    )  # fmt: skip

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    #: None = all tasks; a task name = train that task alone (the single-task references of Δm; uses ew).
    single_task: str | None = None
    #: seed of the model init, data order and balancer randomness.
    seed: int = 0
    #: "auto" (cuda when available, else cpu) or a torch device string ("cpu", "cuda", "cuda:1").
    device: str = "auto"
    #: mixed precision on CUDA: auto = bf16 where supported else fp16 (+ GradScaler); off on CPU always.
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    #: channels-last memory format on CUDA (ignored on CPU).
    channels_last: bool = True
    #: CPU threads for torch (0 = leave torch's default).
    threads: int = 0
    #: evaluate on the whole validation split every this many steps (and at the end); 0 = once per epoch.
    eval_every: int = 100
    #: Δm selection rule: mean of the last k evaluations (never the best evaluation on the test split).
    last_k: int = 3
    #: log training scalars every this many steps.
    log_every: int = 10
    #: validation samples shown in the TensorBoard image panels at each evaluation (0 = none).
    image_samples: int = 2
    #: parent folder of run directories.
    logdir: str = "runs/vision"
    #: run directory name under ``logdir``; None = "{data}_{balancer or single-task}_s{seed}".
    run_name: str | None = None
    #: continue from ``{run_dir}/checkpoint.pt`` when it exists.
    resume: bool = False
    #: Δm baseline: results.json files (or run dirs) of single-task runs, one per task, or one named reference of
    #: ``mtrl.vision.delta.REFERENCE_BASELINES`` (e.g. cagrad_nyuv2_stl); empty = no Δm.
    baseline: tuple[str, ...] = ()
    #: show a tqdm progress bar.
    progress: bool = True

    def resolve(self) -> VisionConfig:
        """This config checked, as :func:`mtrl.config.load_config` returns it (the vision counterpart of
        ``agents.config.TrainConfig.resolve``): every value that can be judged without building the data or the
        model is checked here, so a bad one is a one-line :class:`~mtrl.config.ConfigError` at load, before the
        trainer is built. Idempotent. It fills nothing: the device stays as written (the trainer resolves
        ``auto`` on the machine it runs on; ``results.json`` keeps the configuration as given)."""
        _check(self)
        return self


#: (dotted key, value) pairs of :func:`_check` that must be positive integers / integers >= 0 / floats > 0.
_Numbers = list[tuple[str, Any]]


def _check(cfg: VisionConfig) -> None:
    """The checks of :meth:`VisionConfig.resolve`."""
    from mtrl.balancers import BALANCERS, balancer_hparams
    from mtrl.device import check_device_name
    from mtrl.vision.data.registry import DATASETS

    positive: _Numbers = [("data.batch_size", cfg.data.batch_size), ("data.eval_batch_size", cfg.data.eval_batch_size),
                          ("last_k", cfg.last_k), ("log_every", cfg.log_every)]  # fmt: skip
    if cfg.optim.epochs == 0:
        positive.append(("optim.steps", cfg.optim.steps))
    positive += [(f"data.{key}", value) for key, value in (("train_length", cfg.data.train_length),
                 ("val_length", cfg.data.val_length)) if value is not None]  # fmt: skip
    positive += [(f"data.size[{i}]", side) for i, side in enumerate(cfg.data.size or ())]
    if cfg.model.width is not None:  # null = the model's default width
        positive.append(("model.width", cfg.model.width))
    for key, value in positive:
        if value < 1:
            raise ConfigError(f"bad value {value!r} for {key!r}: expected a positive integer")
    non_negative: _Numbers = [("data.workers", cfg.data.workers), ("optim.epochs", cfg.optim.epochs),
                              ("optim.lr_decay_every", cfg.optim.lr_decay_every), ("eval_every", cfg.eval_every),
                              ("image_samples", cfg.image_samples), ("threads", cfg.threads), ("seed", cfg.seed),
                              ("optim.weight_decay", cfg.optim.weight_decay)]  # fmt: skip
    for key, value in non_negative:
        if value < 0:
            raise ConfigError(f"bad value {value!r} for {key!r}: expected a number >= 0")
    for key, value in (("optim.lr", cfg.optim.lr), ("optim.lr_gamma", cfg.optim.lr_gamma)):
        if not value > 0:
            raise ConfigError(f"bad value {value!r} for {key!r}: expected a number > 0")
    if cfg.data.size is not None and len(cfg.data.size) != 2:
        raise ConfigError(f"bad value {list(cfg.data.size)!r} for 'data.size': expected [H, W] (or null)")
    if DATASETS[cfg.data.name][1] and cfg.data.root is None:
        raise ConfigError(
            f"data set {cfg.data.name!r} is read from files: set data.root=<the folder holding train/ and val/>"
        )
    check_device_name(cfg.device)
    if cfg.single_task is None:  # a single-task reference trains with ew, whatever balancer.name says
        if cfg.balancer.name not in BALANCERS:
            raise ConfigError(
                f"bad value {cfg.balancer.name!r} for 'balancer.name'; valid choices: {', '.join(sorted(BALANCERS))}"
            )
        valid = balancer_hparams(cfg.balancer.name)
        unknown = sorted(set(cfg.balancer.hparams) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown balancer.hparams {unknown} for balancer {cfg.balancer.name!r}; valid ones (with defaults): "
                + (", ".join(f"{key}={value!r}" for key, value in valid.items()) or "none")
            )
