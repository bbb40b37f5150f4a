"""Per-task dense losses (LibMTL ``examples/nyu/utils.py`` conventions), each masked to valid pixels.

- seg: cross-entropy over pixels whose label is not −1.
- depth: L1 over pixels whose target is non-zero, ``Σ|p − g|·m / Σm``.
- normal: ``1 − Σ⟨p̂, g⟩·m / Σm`` with ``p̂ = p / ‖p‖`` and ``m`` = target not all-zero.

A batch without any valid pixel for a task gives a loss of 0 (still attached to the graph), never NaN.
Every loss is multiplied by ``spec.loss_scale``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mtrl.vision.tasks import TaskSpec

__all__ = ["depth_l1_loss", "multi_task_losses", "normal_cosine_loss", "seg_ce_loss", "task_loss"]


def seg_ce_loss(logits_BCHW: Tensor, target_BHW: Tensor) -> Tensor:
    """Mean cross-entropy over pixels with ``target != -1``; logits ``(B,C,H,W)``, target ``(B,H,W)`` int64."""
    total = F.cross_entropy(logits_BCHW, target_BHW, ignore_index=-1, reduction="sum")
    count = (target_BHW != -1).sum().clamp_min(1)
    return total / count


def depth_l1_loss(pred_B1HW: Tensor, target_B1HW: Tensor) -> Tensor:
    """Masked L1 ``Σ|p − g|·m / Σm`` with ``m = (g != 0)``; both ``(B,1,H,W)``."""
    mask = (target_B1HW != 0).to(pred_B1HW.dtype)
    return ((pred_B1HW - target_B1HW).abs() * mask).sum() / mask.sum().clamp_min(1)


def normal_cosine_loss(pred_B3HW: Tensor, target_B3HW: Tensor) -> Tensor:
    """``1 − mean cos`` over valid pixels (target not all-zero); the prediction is L2-normalised; ``(B,3,H,W)``."""
    mask_B1HW = (target_B3HW != 0).any(dim=1, keepdim=True).to(pred_B3HW.dtype)
    unit = F.normalize(pred_B3HW, dim=1)
    cos_sum = (unit * target_B3HW * mask_B1HW).sum()
    return 1 - cos_sum / mask_B1HW.sum().clamp_min(1)


def task_loss(spec: TaskSpec, pred: Tensor, target: Tensor) -> Tensor:
    """The scalar loss of task ``spec`` (kind-dispatched, times ``spec.loss_scale``)."""
    if spec.kind == "seg":
        loss = seg_ce_loss(pred, target)
    elif spec.kind == "depth":
        loss = depth_l1_loss(pred, target)
    elif spec.kind == "normal":
        loss = normal_cosine_loss(pred, target)
    else:  # TaskSpec validates kind; kept for type narrowing of subclasses.
        raise ValueError(f"task {spec.name!r}: unknown kind {spec.kind!r}; valid: seg, depth, normal")
    return loss * spec.loss_scale if spec.loss_scale != 1.0 else loss


def multi_task_losses(tasks: Sequence[TaskSpec], preds: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> Tensor:
    """The ``(T,)`` per-task losses in the order of ``tasks``; ``preds``/``batch`` are keyed by ``spec.name``."""
    missing = [t.name for t in tasks if t.name not in preds or t.name not in batch]
    if missing:
        raise ValueError(f"no prediction or target for tasks {missing}; preds: {sorted(preds)}, batch: {sorted(batch)}")
    return torch.stack([task_loss(t, preds[t.name], batch[t.name]) for t in tasks])
