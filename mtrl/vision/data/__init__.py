"""Vision data sets: NYUv2/Cityscapes (preprocessed ``.npy``), procedural ``synthetic_scenes`` and ``dense_digits``."""

from mtrl.vision.data.augment import augment_sample, hflip, scale_crop
from mtrl.vision.data.cityscapes import CITYSCAPES_TASKS, Cityscapes
from mtrl.vision.data.dense_digits import DENSE_DIGITS_TASKS, DenseDigits
from mtrl.vision.data.npy_layout import NpyLayoutDataset
from mtrl.vision.data.nyuv2 import NYUV2_TASKS, NYUv2
from mtrl.vision.data.registry import DATASETS, make_dataset
from mtrl.vision.data.synthetic import CLASS_NAMES, SyntheticScenes, render_scene

__all__ = [
    "CITYSCAPES_TASKS",
    "CLASS_NAMES",
    "DATASETS",
    "DENSE_DIGITS_TASKS",
    "NYUV2_TASKS",
    "Cityscapes",
    "DenseDigits",
    "NYUv2",
    "NpyLayoutDataset",
    "SyntheticScenes",
    "augment_sample",
    "hflip",
    "make_dataset",
    "render_scene",
    "scale_crop",
]
