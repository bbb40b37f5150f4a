"""The synthetic-scenes results table (``scripts/vision_table.py``): the runs it needs, as :mod:`mtrl.jobs` jobs,
and the table of their results as mean ± std over seeds (:func:`mtrl.analysis.summarize`).

Each method run ``<logdir>/<method>_s<seed>`` is a ``scripts/train_vision.py CONFIG`` run with the single-task runs
``<logdir>/stl_<task>_s<seed>`` of the same seed as its Δm baseline. The table gives Δm% (metric-weighted, MTAN
line; task-weighted, LibMTL/Aligned-MTL line; lower is better) and the per-task metrics. Method keys: a balancer
key, or ``dgr+<base>`` for DGR on top of a base balancer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mtrl.analysis import RunRecord, summarize
from mtrl.config import with_defaults
from mtrl.jobs import Job

__all__ = [
    "COLUMNS",
    "METHODS",
    "SHOWN",
    "TASKS",
    "method_jobs",
    "method_overrides",
    "reference_jobs",
    "table",
    "table_job",
]  # fmt: skip

#: ``scripts/train_vision.py``, which every run of the table trains with.
TRAIN_VISION = Path(__file__).resolve().parents[2] / "scripts" / "train_vision.py"
METHODS = ["ew", "pcgrad", "cagrad", "nash_mtl", "imtl", "aligned_mtl", "aligned_mtl_ub", "dgr+ew", "sgsu",
           "task_tensioner"]  # fmt: skip
TASKS = ["seg", "depth", "normal"]
#: metrics shown per task (the metric names of mtrl.vision.metrics), in table order.
SHOWN = ["seg/miou", "seg/pix_acc", "depth/abs_err", "depth/rel_err", "normal/mean", "normal/within_11.25"]
#: the table's columns after method and seeds: (heading, how a run's results.json gives it, digits).
COLUMNS: list[tuple[str, str, int]] = [
    ("Δm% metric-w. ↓", "metric_weighted", 2),
    ("Δm% task-w. ↓", "task_weighted", 2),
    *((key, key, 3 if key.startswith("depth/") else 2) for key in SHOWN),
    ("s/run", "train_time_s", 0),
]


def method_overrides(method: str) -> list[str]:
    """The overrides of one method key: a balancer key, or ``dgr+<base>`` for DGR on top of a base balancer."""
    if method.startswith("dgr+"):
        return ["balancer.name=dgr", f"balancer.hparams={{base: {method[4:]}}}"]
    return [f"balancer.name={method}"]


def _command(config: str, logdir: Path, name: str, seed: int, extra: list[str]) -> list[str]:
    settings = with_defaults(["threads=1", "progress=false", "device=cpu"], extra)  # the user's device=cuda wins
    return [sys.executable, str(TRAIN_VISION), config, f"logdir={logdir}", f"run_name={name}",
            f"seed={seed}", *settings]  # fmt: skip


def table_job(config: str, logdir: Path, name: str, seed: int, extra: list[str]) -> Job:
    """The run ``<logdir>/<name>`` as a :class:`mtrl.jobs.Job`: resumed from its checkpoint when it left one,
    skipped when finished, its output in ``<logdir>/<name>/job.log``."""
    return Job(name, logdir / name, tuple(_command(config, logdir, name, seed, extra)), ("resume=true",))


def _load(logdir: Path, name: str) -> dict[str, Any] | None:
    p = logdir / name / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _values(results: dict[str, Any]) -> dict[str, float]:
    """The table's values of one run (seg and within-11.25 in %; a single-task reference has Δm 0)."""
    delta = results.get("delta_m") or ({"metric_weighted": 0.0, "task_weighted": 0.0} if results["single_task"] else {})
    out = {key: float(delta[key]) for key in ("metric_weighted", "task_weighted") if key in delta}
    for key in SHOWN:
        if key in results["selected"]:
            percent = key.startswith("seg/") or "within" in key
            out[key] = (100.0 if percent else 1.0) * float(results["selected"][key])
    if "train_time_s" in results:
        out["train_time_s"] = float(results["train_time_s"])
    return out


def table(logdir: Path, methods: list[str], seeds: list[int]) -> str:
    """The Markdown table of the runs found in ``logdir``: mean ± std over seeds (``mtrl.analysis.summarize``)."""
    rows = [(f"STL {t}", [(f"stl_{t}_s{s}", s) for s in seeds]) for t in TASKS]
    rows += [(m, [(f"{m}_s{s}", s) for s in seeds]) for m in methods]
    records = [
        RunRecord(logdir / name, label, seed, _values(results))
        for label, names in rows
        for name, seed in names
        if (results := _load(logdir, name)) is not None
    ]
    summary = summarize(records, [key for _, key, _ in COLUMNS])
    lines = ["| method | seeds | " + " | ".join(head for head, _, _ in COLUMNS) + " |"]
    lines.append("|" + "---|" * (2 + len(COLUMNS)))
    for label, _ in rows:
        if label in summary:
            seeds_found = sum(record.group == label for record in records)
            cells = [summary[label][key].format(digits) for _, key, digits in COLUMNS]
            lines.append(f"| {label} | {seeds_found} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_jobs(config: str, logdir: Path, seeds: list[int], extra: list[str]) -> list[Job]:
    """The single-task reference runs ``<logdir>/stl_<task>_s<seed>`` (run first: the methods' Δm reads them)."""
    return [table_job(config, logdir, f"stl_{t}_s{s}", s, [f"single_task={t}", *extra]) for s in seeds for t in TASKS]


def method_jobs(config: str, logdir: Path, methods: list[str], seeds: list[int], extra: list[str]) -> list[Job]:
    """The method runs ``<logdir>/<method>_s<seed>``, each with the references of its seed as its Δm baseline."""
    jobs = []
    for s in seeds:
        baseline = "baseline=[" + ", ".join(str(logdir / f"stl_{t}_s{s}") for t in TASKS) + "]"
        jobs += [table_job(config, logdir, f"{m}_s{s}", s, [*method_overrides(m), baseline, *extra]) for m in methods]
    return jobs
