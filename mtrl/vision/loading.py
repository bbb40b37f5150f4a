"""Data of a vision run: the train/val sets a configuration names, their loaders, and a resumable data order.

Reproducibility: the training order is a per-epoch permutation seeded by ``(seed, epoch)``
(:class:`EpochSampler`), and the DataLoaders draw their worker seeds from private generators seeded per
``(seed, epoch)`` and per evaluation (:meth:`Loaders.epoch`, :meth:`Loaders.validation`), never from the
global RNG. A run resumed mid-epoch therefore sees the same batches, and the global RNGs (dropout), which the
trainer checkpoints, are untouched by the loaders.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from mtrl.config import ConfigError
from mtrl.vision.config import DataConfig, VisionConfig
from mtrl.vision.data import DATASETS, make_dataset
from mtrl.vision.seeds import mix_seed

__all__ = ["CachedDataset", "EpochSampler", "Loaders", "make_datasets", "make_loaders", "to_device"]


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by ``(seed, epoch)``, starting at batch ``start_batch``.

    Resumable by construction: the permutation depends only on ``(seed, epoch)``, and skipping the first
    ``start_batch × batch_size`` indices costs nothing (no sample is loaded).
    """

    def __init__(self, length: int, seed: int, batch_size: int) -> None:
        self.length, self.seed, self.batch_size = length, seed, batch_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The next iteration yields ``epoch``'s permutation from batch ``start_batch`` on."""
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.length, generator=gen)
        usable = (self.length // self.batch_size) * self.batch_size  # drop_last
        return iter(perm[self.start_batch * self.batch_size : usable].tolist())

    def __len__(self) -> int:
        return max(0, self.length // self.batch_size - self.start_batch) * self.batch_size


class CachedDataset(Dataset[dict[str, Tensor]]):
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


def make_datasets(cfg: VisionConfig) -> tuple[Any, Any]:
    """Train/val sets of ``cfg.data``. Real sets get ``augment`` (train only) and the run seed for it; generated
    sets get ``size``/``length`` and keep their own data seed (``data.options.seed``), so every run sees the
    same data. ``data.cache`` keeps un-augmented sets in memory (:class:`CachedDataset`).

    Raises:
        ConfigError: ``data.options`` the data set does not take, ``size``/``length`` for a data set read from
            files, ``augment`` for a data set without augmentation, and whatever stops the data set from being
            built (a missing ``data.root`` or files outside its layout, a bad option value, a missing optional
            package).
    """
    d = cfg.data
    params = inspect.signature(DATASETS[d.name][0]).parameters
    fixed = {"root", "split", "augment", "length"} | ({"seed"} if "augment" in params else set())
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    valid_options = sorted(k for k in params if k not in fixed and k != "self")
    bad_options = sorted(k for k in d.options if k in fixed or (k not in params and not takes_any))
    if bad_options:
        raise ConfigError(f"data.options {bad_options} are not options of data set {d.name!r}; valid: {valid_options}")
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
        kwargs["seed"] = cfg.seed
    elif d.augment:
        raise ConfigError(f"data set {d.name!r} has no augmentation; set data.augment=false")
    sets = []
    for split, length in (("train", d.train_length), ("val", d.val_length)):
        extra = dict(kwargs)
        if length is not None:
            extra["length"] = length
        if "augment" in params:
            extra["augment"] = d.augment and split == "train"
        try:
            ds = make_dataset(d.name, root=d.root, split=split, **extra)
        except ConfigError:
            raise  # already one line naming the file or key
        except ImportError as err:  # an optional extra (dense_digits needs scikit-learn: pip install -e '.[digits]')
            raise ConfigError(f"data set {d.name!r} needs a package that is not installed: {err}") from None
        except (ValueError, OSError) as err:  # a missing data.root, files not in the layout, a bad option value
            raise ConfigError(f"data set {d.name!r} ({split} split): {err}") from None
        sets.append(CachedDataset(ds) if d.cache and not (d.augment and split == "train") else ds)
    return sets[0], sets[1]


@dataclass
class Loaders:
    """The train and val loaders of a run, with the sampler and private generators that make them resumable."""

    train_set: Any
    val_set: Any
    sampler: EpochSampler
    train: DataLoader[dict[str, Tensor]]
    val: DataLoader[dict[str, Tensor]]
    #: seeds the train loader's worker seeds, per (seed, epoch)
    train_generator: torch.Generator
    #: seeds the val loader's worker seeds, per (seed, step) of an evaluation
    val_generator: torch.Generator
    seed: int

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per epoch (the last partial batch is dropped)."""
        return len(self.train_set) // self.sampler.batch_size

    def epoch(self, epoch: int, start_batch: int = 0) -> DataLoader[dict[str, Tensor]]:
        """The train loader positioned at batch ``start_batch`` of ``epoch`` (the data set's ``set_epoch``, if it
        has one, reseeds its augmentation)."""
        self.sampler.set_epoch(epoch, start_batch)
        set_epoch = getattr(self.train_set, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        self.train_generator.manual_seed(mix_seed(self.seed, epoch, 0))
        return self.train

    def validation(self, step: int) -> DataLoader[dict[str, Tensor]]:
        """The val loader for an evaluation at ``step``."""
        self.val_generator.manual_seed(mix_seed(self.seed, step, 1))
        return self.val


def make_loaders(train_set: Any, val_set: Any, data: DataConfig, seed: int, pin_memory: bool) -> Loaders:
    """Loaders of ``data.batch_size`` (train, :class:`EpochSampler` order) and ``data.eval_batch_size`` (val,
    in order) with ``data.workers`` workers.

    Raises:
        ValueError: the batch size exceeds the training set.
    """
    sampler = EpochSampler(len(train_set), seed, data.batch_size)
    if len(train_set) // data.batch_size < 1:
        raise ValueError(f"batch_size={data.batch_size} exceeds the {len(train_set)} training samples")
    # Private generators: a DataLoader draws its workers' base seed from ``generator`` (the global torch RNG
    # when None) each time an iterator is created; seeded per (seed, epoch) / evaluation, that draw neither
    # depends on nor changes the global RNG, so a run resumed mid-epoch replays the same dropout masks.
    train_generator, val_generator = torch.Generator(), torch.Generator()
    train = DataLoader(
        train_set, batch_size=data.batch_size, sampler=sampler, num_workers=data.workers, pin_memory=pin_memory,
        generator=train_generator,
    )  # fmt: skip
    val = DataLoader(
        val_set, batch_size=data.eval_batch_size, shuffle=False, num_workers=data.workers, pin_memory=pin_memory,
        generator=val_generator,
    )  # fmt: skip
    return Loaders(train_set, val_set, sampler, train, val, train_generator, val_generator, seed)


def to_device(
    batch: dict[str, Tensor], task_names: list[str], device: torch.device, channels_last: bool = False
) -> tuple[Tensor, dict[str, Tensor]]:
    """``(x, targets)`` of a loader batch on ``device`` (``x`` channels-last if asked)."""
    x = batch["image"].to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    targets = {n: batch[n].to(device, non_blocking=True) for n in task_names}
    return x, targets
