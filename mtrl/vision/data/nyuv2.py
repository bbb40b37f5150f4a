"""NYUv2 (Silberman et al., ECCV 2012) as preprocessed by MTAN: 795 train / 654 val images, 288×384.

Tasks: 13-class segmentation (−1 = ignore), depth (0 = invalid), surface normals (all-zero = invalid).
"""

from __future__ import annotations

from mtrl.vision.data.npy_layout import NpyLayoutDataset
from mtrl.vision.tasks import TaskSpec

__all__ = ["NYUV2_TASKS", "NYUv2"]

NYUV2_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("seg", "seg", 13),
    TaskSpec("depth", "depth", 1),
    TaskSpec("normal", "normal", 3),
)


class NYUv2(NpyLayoutDataset):
    """NYUv2 seg (13 classes) + depth + normals from ``{root}/{train,val}/{image,label,depth,normal}/{i}.npy``.

    ``native_size`` is the published resolution; files of another size load unchanged.
    """

    native_size: tuple[int, int] = (288, 384)

    default_tasks = NYUV2_TASKS
