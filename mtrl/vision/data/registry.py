"""The one registry of vision data sets: ``make_dataset(name, root, split, **kwargs)``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mtrl.vision.data.cityscapes import Cityscapes
from mtrl.vision.data.dense_digits import DenseDigits
from mtrl.vision.data.nyuv2 import NYUv2
from mtrl.vision.data.synthetic import SyntheticScenes

__all__ = ["DATASETS", "make_dataset"]

#: name → (class, needs a root folder).
DATASETS: dict[str, tuple[Callable[..., Dataset[Any]], bool]] = {
    "nyuv2": (NYUv2, True),
    "cityscapes": (Cityscapes, True),
    "synthetic": (SyntheticScenes, False),
    "synthetic_scenes": (SyntheticScenes, False),
    "dense_digits": (DenseDigits, False),
}


def make_dataset(name: str, root: str | Path | None = None, split: str = "train", **kwargs: Any) -> Dataset[Any]:
    """Build data set ``name`` for ``split``; ``root`` is required by the file-based sets and ignored otherwise.

    Every returned data set has a ``tasks: tuple[TaskSpec, ...]`` attribute; ``kwargs`` go to its constructor.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid: {sorted(DATASETS)}")
    cls, needs_root = DATASETS[name]
    if needs_root:
        if root is None:
            raise ValueError(f"data set {name!r} needs root= (the folder holding train/ and val/)")
        return cls(root, split, **kwargs)
    return cls(split, **kwargs)
