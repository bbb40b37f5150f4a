"""Dense multi-task metrics accumulated over a whole evaluation set (LibMTL ``examples/nyu/utils.py`` definitions).

- Segmentation: confusion matrix ``C[g, p]`` over pixels with ``g != -1``; pixel accuracy ``Σ_c C[c,c] / ΣC``;
  IoU_c = ``C[c,c] / (Σ_p C[c,p] + Σ_g C[g,c] − C[c,c])``; **mIoU averages IoU over the classes present in the
  ground truth or in the prediction** (union > 0). A class absent from both is skipped rather than counted as
  0 or 1. (LibMTL averages over all classes, which gives NaN when a class is never seen.)
- Depth (valid = target ≠ 0): ``abs_err = Σ|p − g| / N_valid`` and ``rel_err = Σ|p − g|/g / N_valid`` over all
  valid pixels of the set (equal to LibMTL's per-batch means weighted by each batch's valid-pixel count).
- Normals (valid = target not all-zero; LibMTL tests channel sum ≠ 0, which differs only on exact cancellations):
  angle ``acos(clamp(⟨p̂, g⟩, −1, 1))`` in degrees with ``p̂ = p/‖p‖``;
  ``mean``, ``median`` (``numpy.median`` convention, as LibMTL) and the fractions ``within_11.25``, ``within_22.5``,
  ``within_30``. The median is read from a histogram of ``1/HIST_BINS_PER_DEGREE`` = 0.01° bins (bin centres,
  error ≤ 0.005°), so memory stays constant over the set; the mean and the fractions are exact.

All fractions (mIoU, pixel accuracy, within-t) are in [0, 1], angles in degrees, depth errors in target units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mtrl.vision.tasks import TaskSpec

__all__ = [
    "HIGHER_IS_BETTER",
    "DepthMetric",
    "MultiTaskMetrics",
    "NormalMetric",
    "SegMetric",
]

#: metric name → True when higher is better
#: (LibMTL ``task_dict[...]["weight"]``: seg [1,1], depth [0,0], normal [0,0,1,1,1]).
HIGHER_IS_BETTER: dict[str, bool] = {
    "miou": True,
    "pix_acc": True,
    "abs_err": False,
    "rel_err": False,
    "mean": False,
    "median": False,
    "within_11.25": True,
    "within_22.5": True,
    "within_30": True,
}
NORMAL_THRESHOLDS: tuple[float, ...] = (11.25, 22.5, 30.0)
HIST_BINS_PER_DEGREE = 100


class SegMetric:
    """mIoU and pixel accuracy from a confusion matrix over the evaluation set.

    ``update(pred, target)``: ``pred`` is logits ``(B,C,H,W)`` or labels ``(B,H,W)``;
    ``target (B,H,W)`` int64, −1 = ignore.
    """

    names: tuple[str, ...] = ("miou", "pix_acc")

    def __init__(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.confusion: Tensor | None = None  # (C, C) int64, rows = ground truth

    def reset(self) -> None:
        self.confusion = None

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        labels = pred.argmax(dim=1) if pred.dim() == target.dim() + 1 else pred
        if labels.shape != target.shape:
            raise ValueError(f"prediction labels {tuple(labels.shape)} do not match target {tuple(target.shape)}")
        valid = target != -1
        gt, pr = target[valid].long(), labels[valid].long()
        out_of_range = (gt < 0) | (gt >= self.num_classes) | (pr < 0) | (pr >= self.num_classes)
        if bool(out_of_range.any()):
            raise ValueError(f"labels outside 0..{self.num_classes - 1} (and -1 = ignore in the target)")
        counts = torch.bincount(gt * self.num_classes + pr, minlength=self.num_classes**2)
        confusion = counts.reshape(self.num_classes, self.num_classes)
        self.confusion = confusion if self.confusion is None else self.confusion + confusion

    def iou(self) -> Tensor:
        """Per-class IoU ``(C,)`` float64; NaN for classes absent from both ground truth and prediction."""
        if self.confusion is None:
            raise ValueError("SegMetric.compute() before any update()")
        conf = self.confusion.double()
        inter = conf.diag()
        union = conf.sum(0) + conf.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))

    def compute(self) -> dict[str, float]:
        iou = self.iou()
        conf = self.confusion
        assert conf is not None
        total = int(conf.sum())
        return {
            "miou": float(iou.nanmean()) if bool((~iou.isnan()).any()) else float("nan"),
            "pix_acc": float(conf.diag().sum()) / total if total else float("nan"),
        }


class DepthMetric:
    """Absolute and relative depth error over valid pixels (target ≠ 0); ``pred``/``target`` ``(B,1,H,W)``."""

    names: tuple[str, ...] = ("abs_err", "rel_err")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape:
            raise ValueError(f"depth prediction {tuple(pred.shape)} does not match target {tuple(target.shape)}")
        valid = target != 0
        err = (pred[valid].double() - target[valid].double()).abs()
        self.abs_sum += float(err.sum())
        self.rel_sum += float((err / target[valid].double().abs()).sum())
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"abs_err": float("nan"), "rel_err": float("nan")}
        return {"abs_err": self.abs_sum / self.count, "rel_err": self.rel_sum / self.count}


class NormalMetric:
    """Angle error (degrees) statistics over valid pixels (target not all-zero); ``pred``/``target`` ``(B,3,H,W)``."""

    names: tuple[str, ...] = ("mean", "median", *(f"within_{t:g}" for t in NORMAL_THRESHOLDS))

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hist: Tensor | None = None  # (180·HIST_BINS_PER_DEGREE,) int64
        self.angle_sum = 0.0
        self.within = [0] * len(NORMAL_THRESHOLDS)
        self.count = 0

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"normal prediction {tuple(pred.shape)} and target {tuple(target.shape)} must be (B,3,H,W)"
            )
        valid = (target != 0).any(dim=1)  # (B,H,W)
        cos = (F.normalize(pred.double(), dim=1) * target.double()).sum(dim=1)[valid]
        angle = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
        self.angle_sum += float(angle.sum())
        self.count += int(angle.numel())
        for i, threshold in enumerate(NORMAL_THRESHOLDS):
            self.within[i] += int((angle < threshold).sum())
        n_bins = 180 * HIST_BINS_PER_DEGREE
        bins = (angle * HIST_BINS_PER_DEGREE).long().clamp(0, n_bins - 1)
        hist = torch.bincount(bins, minlength=n_bins)
        self.hist = hist if self.hist is None else self.hist + hist

    def _order_statistic(self, k: int) -> float:
        """The ``k``-th smallest angle (1-based), as the centre of its histogram bin."""
        assert self.hist is not None
        cdf = self.hist.cumsum(0)
        b = int(torch.searchsorted(cdf, torch.tensor([k], dtype=cdf.dtype, device=cdf.device))[0])
        return (b + 0.5) / HIST_BINS_PER_DEGREE

    def _median(self) -> float:
        """``numpy.median`` convention: the middle angle, or the mean of the two middle ones for an even count."""
        if self.count % 2:
            return self._order_statistic((self.count + 1) // 2)
        return 0.5 * (self._order_statistic(self.count // 2) + self._order_statistic(self.count // 2 + 1))

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return dict.fromkeys(self.names, float("nan"))
        out = {"mean": self.angle_sum / self.count, "median": self._median()}
        for threshold, hits in zip(NORMAL_THRESHOLDS, self.within, strict=True):
            out[f"within_{threshold:g}"] = hits / self.count
        return out


_Metric = SegMetric | DepthMetric | NormalMetric


class MultiTaskMetrics:
    """One accumulator per task; flat results ``{"<task>/<metric>": value}`` (``seg/miou``, ``normal/within_11.25``).

    ``update(preds, batch)`` takes dicts keyed by task name (predictions as the model outputs them: seg logits
    ``(B,C,H,W)``, depth ``(B,1,H,W)``, normals ``(B,3,H,W)``, unnormalised is fine).
    """

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        self.tasks = tuple(tasks)
        self.metrics: dict[str, _Metric] = {}
        for spec in self.tasks:
            if spec.kind == "seg":
                self.metrics[spec.name] = SegMetric(spec.out_channels)
            elif spec.kind == "depth":
                self.metrics[spec.name] = DepthMetric()
            else:
                self.metrics[spec.name] = NormalMetric()

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def update(self, preds: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        for name, metric in self.metrics.items():
            if name not in preds or name not in batch:
                raise ValueError(f"task {name!r} missing; preds: {sorted(preds)}, batch: {sorted(batch)}")
            metric.update(preds[name].detach(), batch[name])

    def compute(self) -> dict[str, float]:
        return {
            f"{name}/{key}": value for name, metric in self.metrics.items() for key, value in metric.compute().items()
        }

    def higher_is_better(self) -> dict[str, bool]:
        """Direction of every key of :meth:`compute` (True = higher is better)."""
        return {f"{name}/{key}": HIGHER_IS_BETTER[key] for name, metric in self.metrics.items() for key in metric.names}
