"""Turn run directories into tables and plots: balancers × seeds, mean and confidence intervals.

A run directory (written by ``scripts/train.py`` or ``scripts/train_vision.py``) holds
``config.yaml`` (the resolved config; its ``balancer`` and ``seed`` keys group the runs),
``results.json`` (final numbers) and ``metrics.jsonl`` (the logged scalars over time).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

__all__ = ["RunRecord", "Summary", "find_runs", "flatten", "learning_curves", "markdown_table", "summarize"]


@dataclass(frozen=True)
class RunRecord:
    """One finished (or interrupted) run."""

    path: Path
    group: str
    seed: int
    results: dict[str, float]


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and a Student-t confidence half-width over seeds."""

    mean: float
    std: float
    ci: float
    n: int

    def format(self, digits: int = 3) -> str:
        if self.n == 0:
            return "–"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping as ``{"a/b": value}``."""
    flat: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _group_name(cfg: Mapping[str, Any], group_keys: Sequence[str]) -> str:
    parts = []
    for key in group_keys:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and "name" in node:  # the vision config nests {name, hparams}
            node = node["name"]
        if node is not None:
            parts.append(str(node) if len(group_keys) == 1 else f"{key}={node}")
    return ",".join(parts) or "run"


def find_runs(root: str | Path, group_keys: Sequence[str] = ("balancer",)) -> list[RunRecord]:
    """Every directory under ``root`` holding ``config.yaml`` and ``results.json``."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"run root {str(root)!r} does not exist; pass the folder holding the run directories")
    records = []
    for cfg_path in sorted(root.rglob("config.yaml")):
        res_path = cfg_path.parent / "results.json"
        if not res_path.is_file():
            continue
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        records.append(
            RunRecord(
                path=cfg_path.parent,
                group=_group_name(cfg, group_keys),
                seed=int(cfg.get("seed", 0)),
                results=flatten(json.loads(res_path.read_text())),
            )
        )
    return records


def _summary(values: Sequence[float], confidence: float) -> Summary:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    ci = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return Summary(float(arr.mean()), std, ci, n)


def summarize(
    records: Sequence[RunRecord], metrics: Sequence[str], confidence: float = 0.95
) -> dict[str, dict[str, Summary]]:
    """``{group: {metric: Summary}}`` over the seeds of each group."""
    by_group: dict[str, list[RunRecord]] = defaultdict(list)
    for rec in records:
        by_group[rec.group].append(rec)
    return {
        group: {m: _summary([r.results.get(m, math.nan) for r in recs], confidence) for m in metrics}
        for group, recs in sorted(by_group.items())
    }


def markdown_table(summary: Mapping[str, Mapping[str, Summary]], metrics: Sequence[str], digits: int = 3) -> str:
    """A Markdown table: one row per group, ``mean ± std (n)`` per metric."""
    lines = ["| run | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for group, row in summary.items():
        lines.append(f"| {group} | " + " | ".join(row[m].format(digits) for m in metrics) + " |")
    return "\n".join(lines)


def learning_curves(records: Sequence[RunRecord], metric: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per group: ``(steps, mean, ci95)`` of ``metric`` read from each run's ``metrics.jsonl``.

    Seeds are aligned on the steps that every seed of the group logged.
    """
    series: dict[str, list[dict[int, float]]] = defaultdict(list)
    for rec in records:
        path = rec.path / "metrics.jsonl"
        if not path.is_file():
            continue
        points: dict[int, float] = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if metric in row and "step" in row:
                points[int(row["step"])] = float(row[metric])
        if points:
            series[rec.group].append(points)
    curves = {}
    for group, runs in series.items():
        steps = sorted(set.intersection(*(set(r) for r in runs)))
        values = np.asarray([[r[s] for s in steps] for r in runs], dtype=np.float64)  # (seeds, steps)
        mean = values.mean(axis=0)
        n = values.shape[0]
        half = (
            stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
        )
        curves[group] = (np.asarray(steps), mean, half)
    return curves
