"""The multi-task dense model interface: one shared encoder, one decoder per task.

Shapes: input ``x (B, 3, H, W)``; predictions ``{task: (B, C_task, H, W)}`` at the input size, with
``C_task`` the task's ``out_channels`` (classes for segmentation, 1 for depth, 3 for normals).

The gradient engine needs to know which parameters are shared: :meth:`shared_parameters` (the
encoder, ``θ``) receive the balanced direction ``d``; :meth:`task_parameters` (the decoders, ``φ_t``)
receive their own task's gradient. Representation-level balancers (``mgda_ub``, ``aligned_mtl_ub``,
feature-level ``imtl``) differentiate w.r.t. the shared representation ``z = features(x)``; the
forward used for the losses must therefore be ``decode(features(x))`` with that very ``z``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiTaskDenseModel", "TaskLike", "upsample_to"]


class TaskLike(Protocol):
    """What a model needs from a task description (``mtrl.vision.tasks.TaskSpec`` satisfies it)."""

    @property
    def name(self) -> str: ...

    @property
    def out_channels(self) -> int: ...


def upsample_to(pred: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of ``pred (B, C, h, w)`` to ``(B, C, *size)`` (identity when already there)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred, size=size, mode="bilinear", align_corners=False)


class MultiTaskDenseModel(nn.Module):
    """Shared ``encoder`` + ``decoders: nn.ModuleDict`` (one per task, in task order).

    Subclasses build ``self.encoder`` and ``self.decoders`` and may override :meth:`features` /
    :meth:`decode` when the representation is not simply ``encoder(x)`` (SegNet-MTAN).
    """

    encoder: nn.Module
    decoders: nn.ModuleDict

    def __init__(self, tasks: Sequence[TaskLike]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a multi-task dense model needs at least one task, got an empty task list")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        for t in tasks:
            if int(t.out_channels) < 1:
                raise ValueError(f"task {t.name!r} has out_channels={t.out_channels}; expected a positive int")
        self.task_names: tuple[str, ...] = tuple(names)
        self.out_channels: dict[str, int] = {t.name: int(t.out_channels) for t in tasks}
        self._input_size: tuple[int, int] | None = None

    # --- forward ----------------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """Shared representation ``z`` (e.g. ``(B, D, h, w)``) of ``x (B, 3, H, W)``."""
        self._input_size = (int(x.shape[-2]), int(x.shape[-1]))
        return self.encoder(x)  # type: ignore[no-any-return]

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        """Per-task predictions ``{task: (B, C_task, H, W)}`` from ``z``, upsampled to the input size
        recorded by the last :meth:`features` call."""
        if self._input_size is None:
            raise ValueError("decode(z) needs the input size: call features(x) first (or use forward(x))")
        return {name: upsample_to(self.decoders[name](z), self._input_size) for name in self.task_names}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.decode(self.features(x))

    # --- parameter partition ----------------------------------------------------------------------
    def shared_parameters(self) -> list[nn.Parameter]:
        """``θ``: every parameter of the shared encoder."""
        return list(self.encoder.parameters())

    def task_parameters(self) -> list[nn.Parameter]:
        """``φ``: every task-specific parameter, flat, in task order."""
        return [p for name in self.task_names for p in self.decoders[name].parameters()]

    def head_modules(self) -> list[nn.Module]:
        """The task heads (the decoders, task order): their parameters are :meth:`task_parameters`."""
        return [self.decoders[name] for name in self.task_names]

    def task_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``φ_t`` grouped per task (task order)."""
        return {name: list(self.decoders[name].parameters()) for name in self.task_names}
