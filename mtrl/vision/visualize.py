"""Image panels for TensorBoard: input | prediction | target, one panel per task.

Colour maps: segmentation by a fixed palette (ignored pixels black), depth normalised to the valid
range of the target (invalid pixels black), normals as ``(n + 1) / 2`` (invalid black). Output panels are
``(H, 3·W, 3)`` uint8, ready for :meth:`mtrl.logger.Logger.image`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mtrl.vision.tasks import TaskSpec

__all__ = ["colorize", "task_panels"]

_PALETTE = torch.tensor(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
     [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40],
     [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128]],
    dtype=torch.float32,
) / 255.0  # fmt: skip


def colorize(kind: str, value: Tensor, reference: Tensor | None = None) -> Tensor:
    """RGB ``(3, H, W)`` in [0, 1] of one map. ``value``: seg ``(H, W)`` labels or ``(C, H, W)`` logits,
    depth ``(1, H, W)``, normal ``(3, H, W)``; ``reference`` (the target) fixes the depth range."""
    value = value.detach().float().cpu()
    if kind == "seg":
        labels = value.argmax(0) if value.dim() == 3 else value.long()
        rgb = _PALETTE[labels.clamp_min(0) % len(_PALETTE)].permute(2, 0, 1)
        return rgb * (labels >= 0)
    if kind == "depth":
        ref = (reference if reference is not None else value).detach().float().cpu()
        valid = ref[ref != 0]
        lo, hi = (valid.min(), valid.max()) if valid.numel() else (value.min(), value.max())
        gray = ((value - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
        mask = (value != 0) if reference is None else torch.ones_like(value, dtype=torch.bool)
        return (gray * mask).expand(3, -1, -1)
    if kind == "normal":
        valid = (value != 0).any(0, keepdim=True)
        return (F.normalize(value, dim=0) + 1) / 2 * valid
    raise ValueError(f"unknown task kind {kind!r}; valid: seg, depth, normal")


def task_panels(
    image: Tensor, preds: Mapping[str, Tensor], sample: Mapping[str, Tensor], tasks: Sequence[TaskSpec]
) -> dict[str, np.ndarray]:
    """``{task: (H, 3W, 3) uint8}`` panels [input | prediction | target] for one sample.

    ``image (3, H, W)``; ``preds[task]`` the model output for that sample ``(C_t, H, W)``; ``sample[task]``
    the target (seg ``(H, W)``, depth ``(1, H, W)``, normal ``(3, H, W)``).
    """
    img = image.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-6)
    panels = {}
    for t in tasks:
        target = sample[t.name]
        row = torch.cat([img, colorize(t.kind, preds[t.name], target), colorize(t.kind, target)], dim=2)
        panels[t.name] = (row.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return panels
