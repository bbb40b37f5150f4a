"""Run (or aggregate) the synthetic_scenes results table: single-task references + balancers × seeds.

    python scripts/vision_table.py --run --jobs 2                    # run what is missing, then print the table
    python scripts/vision_table.py                                   # aggregate existing run dirs only
    python scripts/vision_table.py --run --seeds 0 1 2 --methods ew pcgrad --logdir runs/vision_table

Each method run ``<logdir>/<method>_s<seed>`` is trained with ``scripts/train_vision.py CONFIG`` (default
``configs/vision/synthetic.yaml``: small model, CPU, one thread per run) and the single-task runs
``<logdir>/stl_<task>_s<seed>`` of the same seed as its Δm baseline. The table gives Δm% (metric-weighted,
MTAN line; task-weighted, LibMTL/Aligned-MTL line; lower is better) and the per-task metrics as mean ± std over
seeds (``mtrl.analysis.summarize``). The runs go through ``mtrl.jobs.run_jobs``: finished ones are skipped, stopped
ones resume from their checkpoint, each run's output is in its ``job.log``. Selection rule: mean of the last
``last_k`` evaluations of each run (never the best).
Method keys: a balancer key, or ``dgr+<base>`` for DGR on top of a base balancer.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtrl.analysis import RunRecord, summarize  # noqa: E402
from mtrl.jobs import Job, run_jobs  # noqa: E402

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


def _method_overrides(method: str) -> list[str]:
    if method.startswith("dgr+"):
        return ["balancer.name=dgr", f"balancer.hparams={{base: {method[4:]}}}"]
    return [f"balancer.name={method}"]


def _command(config: str, logdir: Path, name: str, seed: int, extra: list[str]) -> list[str]:
    from mtrl.config import with_defaults

    settings = with_defaults(["threads=1", "progress=false", "device=cpu"], extra)  # the user's device=cuda wins
    return [sys.executable, str(ROOT / "scripts" / "train_vision.py"), config, f"logdir={logdir}", f"run_name={name}",
            f"seed={seed}", *settings]  # fmt: skip


def _job(config: str, logdir: Path, name: str, seed: int, extra: list[str]) -> Job:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "vision" / "synthetic.yaml"))
    ap.add_argument("--logdir", default="runs/vision_table")
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--run", action="store_true", help="train the runs whose results.json is missing")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each uses one CPU thread)")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (e.g. optim.steps=200)")
    args = ap.parse_args(argv)
    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    if args.run:
        t0 = time.perf_counter()
        stl = [_job(args.config, logdir, f"stl_{t}_s{s}", s, [f"single_task={t}", *args.overrides])
               for s in args.seeds for t in TASKS]  # fmt: skip
        run_jobs(stl, args.jobs, sys.stdout)  # the references first: the methods' Δm reads them
        mtl = []
        for s in args.seeds:
            baseline = "baseline=[" + ", ".join(str(logdir / f"stl_{t}_s{s}") for t in TASKS) + "]"
            for m in args.methods:
                extra = [*_method_overrides(m), baseline, *args.overrides]
                mtl.append(_job(args.config, logdir, f"{m}_s{s}", s, extra))
        run_jobs(mtl, args.jobs, sys.stdout)
        print(f"total wall time {time.perf_counter() - t0:.0f} s with {args.jobs} parallel run(s)\n")
    print(f"synthetic_scenes, {args.config}, overrides {args.overrides or 'none'};")
    print("Δm vs the single-task runs of the same seed;")
    print("selection: mean of the last k evaluations; seg and within-11.25 in %, lower Δm is better.\n")
    print(table(logdir, args.methods, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
