"""A small CPU encoder–decoder for tests and the synthetic benchmark.

Shared encoder: five 3×3 conv blocks (``w, 2w, 2w, 4w, 4w`` channels, two stride-2 convs, the last
block dilated ×2), output stride 4. Per-task decoder: ``conv3×3(4w→2w) → norm → ReLU →
conv3×3(2w→2w) → norm → ReLU → conv1×1(2w→C_t)``, then bilinear upsampling to the input size.
With ``width=16``: about 0.07 M shared and 0.03 M parameters per task.

Normalisation is GroupNorm (or none), never BatchNorm, on purpose:
- GroupNorm keeps every sample independent and has no running buffers, so the loss closures of
  ``sgsu``/``dgr`` (which re-run the forward with substituted parameters) have no side effect and
  train/eval behave identically;
- the representation-level strategy differentiates w.r.t. ``z``; with BatchNorm in the encoder that is
  still exact, but BatchNorm inside a *decoder* couples the samples of ``z`` per task in a way that
  differs between train and eval mode — avoided here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from mtrl.vision.models.base import MultiTaskDenseModel, TaskLike

__all__ = ["SmallDenseNet", "conv_block"]

Norm = Literal["group", "none"]


def _norm(channels: int, norm: Norm) -> nn.Module:
    if norm == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; valid choices: 'group', 'none'")


def conv_block(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1, norm: Norm = "group") -> nn.Sequential:
    """``conv3×3 → norm → ReLU`` keeping the spatial size (``/stride``)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=norm == "none"),
        _norm(c_out, norm),
        nn.ReLU(inplace=True),
    )


class SmallDenseNet(MultiTaskDenseModel):
    """Small shared conv encoder (output stride 4) with one light conv decoder per task.

    ``features(x (B,3,H,W)) -> z (B, 4w, ⌈H/4⌉, ⌈W/4⌉)``; ``forward(x) -> {task: (B, C_t, H, W)}``.
    """

    def __init__(self, tasks: Sequence[TaskLike], width: int = 16, norm: Norm = "group") -> None:
        super().__init__(tasks)
        if width < 1:
            raise ValueError(f"width must be a positive int, got {width}")
        _norm(width, norm)  # validates ``norm``
        w = width
        self.encoder = nn.Sequential(
            conv_block(3, w, norm=norm),
            conv_block(w, 2 * w, stride=2, norm=norm),
            conv_block(2 * w, 2 * w, norm=norm),
            conv_block(2 * w, 4 * w, stride=2, norm=norm),
            conv_block(4 * w, 4 * w, dilation=2, norm=norm),
        )
        self.decoders = nn.ModuleDict(
            {
                t.name: nn.Sequential(
                    conv_block(4 * w, 2 * w, norm=norm),
                    conv_block(2 * w, 2 * w, norm=norm),
                    nn.Conv2d(2 * w, int(t.out_channels), 1),
                )
                for t in tasks
            }
        )
