"""Task descriptions of the dense vision data sets.

A data set lists its tasks as a tuple of :class:`TaskSpec`; a sample dict holds the target of task
``spec`` under the key ``spec.name`` (``"seg"``, ``"depth"``, ``"normal"`` for NYUv2/Cityscapes; the
synthetic set's optional conflict task is ``"pseudo_depth"`` of kind ``"depth"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["TASK_KINDS", "TaskKind", "TaskSpec"]

TaskKind = Literal["seg", "depth", "normal"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)


@dataclass(frozen=True)
class TaskSpec:
    """One dense prediction task.

    Args:
        name: key of the target in a sample dict and prefix of the task's metrics (``"seg/miou"``).
        kind: ``"seg"`` (target ``(H,W)`` int64, −1 = ignore; prediction ``(B,C,H,W)`` logits),
            ``"depth"`` (target ``(1,H,W)``, 0 = invalid) or ``"normal"`` (target ``(3,H,W)`` unit
            vectors, all-zero = invalid).
        out_channels: channels the model's head predicts (number of classes for ``"seg"``, 1 for
            ``"depth"``, 3 for ``"normal"``).
        loss_scale: multiplier applied to this task's loss by :mod:`mtrl.vision.losses` (1.0 = the
            published loss); the task-imbalance knob of the synthetic set.
    """

    name: str
    kind: TaskKind
    out_channels: int
    loss_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"TaskSpec {self.name!r}: kind={self.kind!r}; valid kinds: {TASK_KINDS}")
        fixed = {"depth": 1, "normal": 3}
        if self.kind in fixed and self.out_channels != fixed[self.kind]:
            raise ValueError(
                f"TaskSpec {self.name!r}: kind {self.kind!r} needs out_channels={fixed[self.kind]}, "
                f"got {self.out_channels}"
            )
        if self.kind == "seg" and self.out_channels < 2:
            raise ValueError(f"TaskSpec {self.name!r}: a segmentation task needs >= 2 classes, got {self.out_channels}")
        if not self.loss_scale > 0:
            raise ValueError(f"TaskSpec {self.name!r}: loss_scale must be > 0, got {self.loss_scale}")
