"""Δm%: the relative multi-task performance change against a named baseline, in both published forms.

For metrics ``m`` with values ``M_m`` (method) and ``B_m`` (baseline) and direction ``h_m`` (1 = higher is better),
the relative drop is ``r_m = (−1)^{h_m} · (M_m − B_m) / B_m`` (positive = worse than the baseline).

- **metric-weighted** (MTAN line: CAGrad, Nash-MTL ``experiments/nyuv2/utils.py::delta_fn``, FAMO, Aligned-MTL):
  ``Δm = 100 · mean_m r_m``; lower is better. On NYUv2 normals carry 5 of the 9 metrics.
- **task-weighted** (Aligned-MTL, Senushkin et al., CVPR 2023, arXiv 2305.19000; LibMTL ``count_improvement``
  up to the sign): ``Δm = 100 · mean_t mean_{m∈t} r_m``; lower is better. (LibMTL/DB-MTL's Δp is its negative.)

The method's values are selected by a rule stated in the result: by default the mean of the last ``k`` evaluations
(the MTAN-line protocol, k = 10 epochs); the best evaluation on the test set is never used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mtrl.vision.metrics import HIGHER_IS_BETTER

__all__ = [
    "CAGRAD_NYUV2_STL",
    "DBMTL_CITYSCAPES_STL",
    "DBMTL_NYUV2_STL",
    "FAMO_CITYSCAPES_STL",
    "REFERENCE_BASELINES",
    "Baseline",
    "DeltaResult",
    "delta_m",
    "higher_is_better_of",
    "relative_drops",
    "select_last_k",
]


@dataclass(frozen=True)
class Baseline:
    """Reference metric values with a name saying where they come from (single-task runs, a paper, …)."""

    name: str
    values: Mapping[str, float]
    source: str = ""


#: NYUv2 single-task (SegNet) numbers hard-coded as ``BASE`` in the CAGrad/Nash-MTL/FAMO ``delta_fn`` ("from CAGrad").
CAGRAD_NYUV2_STL = Baseline(
    "cagrad_nyuv2_stl",
    {
        "seg/miou": 0.3830,
        "seg/pix_acc": 0.6376,
        "depth/abs_err": 0.6754,
        "depth/rel_err": 0.2780,
        "normal/mean": 25.01,
        "normal/median": 19.21,
        "normal/within_11.25": 0.3014,
        "normal/within_22.5": 0.5720,
        "normal/within_30": 0.6915,
    },
    "Nash-MTL/FAMO experiments/nyuv2/utils.py BASE (protocol b: SegNet-MTAN, 288x384, from scratch)",
)
#: Cityscapes single-task base of FAMO ``experiments/cityscapes``; rel_err as published (the source's units).
FAMO_CITYSCAPES_STL = Baseline(
    "famo_cityscapes_stl",
    {"seg/miou": 0.7401, "seg/pix_acc": 0.9316, "depth/abs_err": 0.0125, "depth/rel_err": 27.77},
    "FAMO experiments/cityscapes base (protocol b: SegNet-MTAN, 128x256, 7 classes)",
)
#: DB-MTL (Lin et al., arXiv 2308.12029) Table 1 STL rows (protocol a: ResNet-50-D8 + ASPP, pretrained), as fractions.
DBMTL_NYUV2_STL = Baseline(
    "dbmtl_nyuv2_stl",
    {
        "seg/miou": 0.5350,
        "seg/pix_acc": 0.7539,
        "depth/abs_err": 0.3926,
        "depth/rel_err": 0.1605,
        "normal/mean": 21.99,
        "normal/median": 15.16,
        "normal/within_11.25": 0.3904,
        "normal/within_22.5": 0.6500,
        "normal/within_30": 0.7516,
    },
    "DB-MTL arXiv 2308.12029 Table 1, STL (protocol a: LibMTL HPS ResNet-50-D8 + ASPP)",
)
#: DB-MTL Table 2 Cityscapes STL row; rel_err as published.
DBMTL_CITYSCAPES_STL = Baseline(
    "dbmtl_cityscapes_stl",
    {"seg/miou": 0.6906, "seg/pix_acc": 0.9154, "depth/abs_err": 0.01282, "depth/rel_err": 43.53},
    "DB-MTL arXiv 2308.12029 Table 2, STL (protocol a)",
)
REFERENCE_BASELINES: dict[str, Baseline] = {
    b.name: b for b in (CAGRAD_NYUV2_STL, FAMO_CITYSCAPES_STL, DBMTL_NYUV2_STL, DBMTL_CITYSCAPES_STL)
}


def higher_is_better_of(key: str) -> bool:
    """Direction of a flat metric key ``"<task>/<metric>"`` from :data:`mtrl.vision.metrics.HIGHER_IS_BETTER`."""
    metric = key.rsplit("/", 1)[-1]
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r} in key {key!r}; known: {sorted(HIGHER_IS_BETTER)}")
    return HIGHER_IS_BETTER[metric]


def select_last_k(history: Sequence[Mapping[str, float]], k: int = 10) -> dict[str, float]:
    """Mean of each metric over the last ``k`` evaluations (all of them when fewer than ``k``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not history:
        raise ValueError("empty evaluation history")
    window = history[-k:]
    keys = set(window[0])
    for record in window:
        if set(record) != keys:
            raise ValueError(f"evaluations disagree on metric keys: {sorted(keys)} vs {sorted(record)}")
    return {key: math.fsum(r[key] for r in window) / len(window) for key in sorted(keys)}


def relative_drops(
    values: Mapping[str, float], baseline: Mapping[str, float], higher_is_better: Mapping[str, bool] | None = None
) -> dict[str, float]:
    """``r_m = (−1)^{h_m} (M_m − B_m)/B_m`` for every key of ``baseline`` (positive = worse)."""
    missing = sorted(set(baseline) - set(values))
    if missing:
        raise ValueError(f"metrics {missing} of the baseline are missing from the results {sorted(values)}")
    out = {}
    for key, base in baseline.items():
        if base == 0:
            raise ValueError(f"baseline value of {key!r} is 0; relative change undefined")
        higher = higher_is_better[key] if higher_is_better is not None else higher_is_better_of(key)
        sign = -1.0 if higher else 1.0
        out[key] = sign * (values[key] - base) / base
    return out


@dataclass(frozen=True)
class DeltaResult:
    """Both Δm% forms (lower is better) with everything needed to reproduce them."""

    metric_weighted: float
    task_weighted: float
    baseline: str
    selection: str
    values: dict[str, float]
    relative: dict[str, float] = field(default_factory=dict)
    #: the baseline's values of the metrics that enter Δm (what any other evaluation can be compared with)
    baseline_values: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "delta_m_metric_weighted": self.metric_weighted,
            "delta_m_task_weighted": self.task_weighted,
            "baseline": self.baseline,
            "selection": self.selection,
            "values": dict(self.values),
            "relative_drop": dict(self.relative),
            "baseline_values": dict(self.baseline_values),
        }


def delta_m(
    history: Sequence[Mapping[str, float]],
    baseline: Baseline,
    *,
    k: int = 10,
    higher_is_better: Mapping[str, bool] | None = None,
) -> DeltaResult:
    """Δm% of the mean of the last ``k`` evaluations in ``history`` against ``baseline``.

    ``history`` holds flat metric dicts (``"<task>/<metric>"`` keys) in evaluation order; only the baseline's keys
    enter Δm. Tasks are the key prefixes before ``/``. Directions default to the metric-name table.
    """
    values = select_last_k(history, k)
    relative = relative_drops(values, baseline.values, higher_is_better)
    by_task: dict[str, list[float]] = {}
    for key, drop in relative.items():
        by_task.setdefault(key.rsplit("/", 1)[0], []).append(drop)
    metric_weighted = 100.0 * math.fsum(relative.values()) / len(relative)
    task_weighted = 100.0 * math.fsum(math.fsum(d) / len(d) for d in by_task.values()) / len(by_task)
    used = min(k, len(history))
    selection = (
        f"mean of the last {used} of {len(history)} evaluations (k={k}); never the best evaluation on the test set"
    )
    used_baseline = {key: float(baseline.values[key]) for key in relative}
    return DeltaResult(metric_weighted, task_weighted, baseline.name, selection, values, relative, used_baseline)
