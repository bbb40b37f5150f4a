"""Loader of the MTAN/LibMTL preprocessed ``.npy`` layout shared by NYUv2 and Cityscapes.

Layout (Liu et al., MTAN, CVPR 2019, arXiv 1803.10704; LibMTL ``examples/nyu/create_dataset.py``)::

    {root}/{train,val}/image/{i}.npy    (H, W, 3) float   -> "image"  (3, H, W) float32
    {root}/{train,val}/label/{i}.npy    (H, W)    float   -> "seg"    (H, W) int64, -1 = ignore
    {root}/{train,val}/depth/{i}.npy    (H, W, 1) float   -> "depth"  (1, H, W) float32, 0 = invalid
    {root}/{train,val}/normal/{i}.npy   (H, W, 3) float   -> "normal" (3, H, W) float32, all-zero = invalid

with ``i = 0 … N−1``. Cityscapes has no ``normal`` folder; its labels are in ``label/`` (LibMTL
``examples/cityscapes/create_dataset.py``) or ``label_7/`` (the MTAN-line copies: MTAN, Nash-MTL, FAMO
``experiments/cityscapes/data.py``), tried in that order (:attr:`NpyLayoutDataset.seg_folders`).

Every sample is checked when the data set is built, before a run starts: each file's shape (the image
``(H, W, 3)`` of sample 0's size, the task maps of the image's size) and every label, which must be −1
(ignore) or a class in ``[0, C)``; other ignore conventions (e.g. 255) raise a
:class:`~mtrl.config.ConfigError` naming the file (and so its index), not a failure mid-run. A passed check
is recorded beside the data (:mod:`mtrl.vision.data.check_cache`), so an unchanged data set is read once,
not at every start. Labels are checked again when a sample is read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mtrl.config import ConfigError
from mtrl.vision.data.augment import DEFAULT_SCALES, augment_sample
from mtrl.vision.data.check_cache import check_key, has_passed, record_pass
from mtrl.vision.seeds import mix_seed
from mtrl.vision.tasks import TaskSpec

__all__ = ["SPLITS", "NpyLayoutDataset"]

SPLITS: tuple[str, ...] = ("train", "val")
_FOLDER = {"seg": "label", "depth": "depth", "normal": "normal"}
_LAYOUT = "the MTAN/LibMTL preprocessed layout {root}/{train,val}/{image,label,depth,normal}/{i}.npy"
_INDEX_FILE = re.compile(r"^(\d+)\.npy$")


class NpyLayoutDataset(Dataset[dict[str, Tensor]]):
    """Samples ``{"image", <task names>…}`` read from the preprocessed ``.npy`` layout.

    Args:
        root: data set folder holding ``train/`` and ``val/``.
        split: ``"train"`` or ``"val"``.
        tasks: the tasks to load (``seg`` from ``label/``, ``depth`` from ``depth/``, ``normal`` from ``normal/``);
            None = the class's ``default_tasks`` (NYUv2, Cityscapes).
        augment: random scale-crop and horizontal flip (:mod:`mtrl.vision.data.augment`).
        seed: seed of the augmentation; sample ``i`` of epoch ``e`` uses the generator seeded with
            ``(seed, e, i)``, so runs and DataLoader workers agree. Call :meth:`set_epoch` each epoch.
        scales: crop scales of the augmentation.
    """

    #: tasks loaded when ``tasks`` is not given (set by the data set subclasses).
    default_tasks: ClassVar[tuple[TaskSpec, ...]] = ()
    #: candidate folders of the segmentation labels, in order of preference (the first that exists is used).
    seg_folders: ClassVar[tuple[str, ...]] = ("label",)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: tuple[TaskSpec, ...] | None = None,
        *,
        augment: bool = False,
        seed: int = 0,
        scales: tuple[float, ...] = DEFAULT_SCALES,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; valid splits: {SPLITS}")
        self.root = Path(root)
        self.split = split
        if tasks is None:
            tasks = self.default_tasks
        if not tasks:
            raise ValueError("NpyLayoutDataset needs tasks= (a tuple of TaskSpec) or a subclass with default_tasks")
        self.tasks = tasks
        self.augment = augment
        self.seed = seed
        self.scales = scales
        self.epoch = 0
        self._dir = self.root / split
        self._seg_folder = next((f for f in self.seg_folders if (self._dir / f).is_dir()), self.seg_folders[0])
        self._length = self._check_layout()

    def _folder(self, kind: str) -> str:
        """Folder of a task kind (the segmentation folder found among :attr:`seg_folders`)."""
        return self._seg_folder if kind == "seg" else _FOLDER[kind]

    def _folders(self) -> dict[str, str]:
        """Sample key → folder name, image first."""
        return {"image": "image", **{t.name: self._folder(t.kind) for t in self.tasks}}

    def _check_layout(self) -> int:
        """Number of samples; raises ``FileNotFoundError``/``ValueError`` saying what was expected where."""
        first = self._dir / "image" / "0.npy"
        if not first.is_file():
            found = sorted(p.name for p in self._dir.iterdir()) if self._dir.is_dir() else "no such folder"
            raise FileNotFoundError(f"expected {first} ({_LAYOUT}); got {self._dir}: {found}")
        counts = {}
        for key, folder in self._folders().items():
            path = self._dir / folder
            indices = sorted(int(m.group(1)) for p in path.glob("*.npy") if (m := _INDEX_FILE.match(p.name)))
            if not indices or indices != list(range(len(indices))):
                head = indices[:5] if indices else "none"
                alternatives = (
                    f" (labels are looked for in {' or '.join(f'{self._dir}/{f}/' for f in self.seg_folders)})"
                    if folder == self._seg_folder and len(self.seg_folders) > 1
                    else ""
                )
                raise FileNotFoundError(
                    f"expected {path}/0.npy … {path}/{{N-1}}.npy for {key!r} ({_LAYOUT}){alternatives}; "
                    f"got indices {head}"
                )
            counts[key] = len(indices)
        if len(set(counts.values())) != 1:
            raise ValueError(f"{self._dir}: folders hold different numbers of samples {counts} ({_LAYOUT})")
        self._check_samples(counts["image"])
        return counts["image"]

    def _load(self, folder: str, index: int, mmap: bool = False) -> np.ndarray:
        """The array of ``{split}/{folder}/{index}.npy`` (memory-mapped: only the header is read until used);
        :class:`~mtrl.config.ConfigError` naming the file when it is not a readable ``.npy`` (e.g. truncated)."""
        path = self._dir / folder / f"{index}.npy"
        try:
            return np.load(path, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as err:
            raise ConfigError(f"cannot read {path} ({err}); re-create it ({_LAYOUT})") from None

    def _check_samples(self, length: int) -> None:
        """Every sample's shapes and labels (:meth:`_check_sample`), skipped when the record of this folder says
        that the same files passed the same check (:mod:`~mtrl.vision.data.check_cache`)."""
        folders = sorted(set(self._folders().values()))
        files = [self._dir / folder / f"{i}.npy" for folder in folders for i in range(length)]
        tasks = ",".join(f"{t.name}:{t.kind}:{t.out_channels}" for t in self.tasks)
        key = check_key(files, f"npy_layout v1|{self._seg_folder}|{tasks}")
        if key is not None and has_passed(self._dir, key):
            return
        hw = self._check_sample(0, None)
        for index in range(1, length):
            self._check_sample(index, hw)
        if key is not None:
            record_pass(self._dir, key)

    def _check_sample(self, index: int, hw: tuple[int, ...] | None) -> tuple[int, ...]:
        """Check sample ``index``: the image ``(H, W, 3)`` with ``(H, W) == hw`` (sample 0's, which a batch needs;
        any for sample 0), each task map of the image's size, every label in range. Returns ``(H, W)``."""
        image_shape = self._load("image", index, mmap=True).shape
        if len(image_shape) != 3 or image_shape[2] != 3 or (hw is not None and image_shape[:2] != hw):
            like = f" like {self._dir}/image/0.npy" if hw is not None else ""
            want_image = f"({hw[0]}, {hw[1]}, 3)" if hw is not None else "(H, W, 3)"
            raise ConfigError(
                f"expected {self._dir}/image/{index}.npy of shape {want_image}{like} ({_LAYOUT}); got {image_shape}"
            )
        hw = image_shape[:2]
        want = {"seg": (*hw,), "depth": (*hw, 1), "normal": (*hw, 3)}
        for spec in self.tasks:
            folder = self._folder(spec.kind)
            array = self._load(folder, index, mmap=True)
            if not (array.shape == want[spec.kind] or (spec.kind == "depth" and array.shape == hw)):
                raise ConfigError(
                    f"expected {self._dir}/{folder}/{index}.npy of shape {want[spec.kind]} "
                    f"(image is {image_shape}); got {array.shape}"
                )
            if spec.kind == "seg":
                self._check_labels(np.rint(array).astype(np.int64), spec, index)
        return hw

    def __len__(self) -> int:
        return self._length

    def _check_labels(self, labels: np.ndarray, spec: TaskSpec, index: int) -> None:
        """Every label must be −1 (ignore) or a class id in ``[0, C)``."""
        bad = (labels < -1) | (labels >= spec.out_channels)
        if bad.any():
            values = sorted({int(v) for v in np.unique(labels[bad])[:5]})
            hint = " (255 is another ignore convention: map it to -1 when preprocessing)" if 255 in values else ""
            raise ConfigError(
                f"{self._dir}/{self._seg_folder}/{index}.npy holds labels {values} outside "
                f"[-1, {spec.out_channels - 1}] for the {spec.out_channels}-class task {spec.name!r} "
                f"(-1 = ignore){hint}"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (no effect without ``augment``)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} samples in {self._dir}")
        image = torch.from_numpy(np.ascontiguousarray(self._load("image", index), dtype=np.float32))
        sample = {"image": image.permute(2, 0, 1).contiguous()}
        for spec in self.tasks:
            array = self._load(self._folder(spec.kind), index)
            if spec.kind == "seg":
                labels = np.rint(array).astype(np.int64)
                self._check_labels(labels, spec, index)
                sample[spec.name] = torch.from_numpy(labels)
            else:
                if array.ndim == 2:
                    array = array[..., None]
                data = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
                sample[spec.name] = data.permute(2, 0, 1).contiguous()
        if self.augment:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))
            sample = augment_sample(sample, self.tasks, generator, self.scales)
        return sample
