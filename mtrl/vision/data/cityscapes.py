"""Cityscapes (Cordts et al., CVPR 2016) as preprocessed by MTAN: 2975 train / 500 val images, 128×256.

Tasks: 7-class segmentation (−1 = ignore) and depth (0 = invalid); no normals.
"""

from __future__ import annotations

from mtrl.vision.data.npy_layout import NpyLayoutDataset
from mtrl.vision.tasks import TaskSpec

__all__ = ["CITYSCAPES_TASKS", "Cityscapes"]

CITYSCAPES_TASKS: tuple[TaskSpec, ...] = (TaskSpec("seg", "seg", 7), TaskSpec("depth", "depth", 1))


class Cityscapes(NpyLayoutDataset):
    """Cityscapes seg (7 classes) + depth from ``{root}/{train,val}/{image,label,depth}/{i}.npy``.

    Labels come from ``label/`` (LibMTL) or, when that folder is absent, ``label_7/`` (the MTAN-line
    preprocessing used by MTAN, Nash-MTL and FAMO, which also ships ``label_19/``, not read here).
    ``native_size`` is the published resolution; files of another size load unchanged.
    """

    native_size: tuple[int, int] = (128, 256)

    default_tasks = CITYSCAPES_TASKS
    seg_folders = ("label", "label_7")
