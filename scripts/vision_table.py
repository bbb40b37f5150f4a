"""Run (or aggregate) the synthetic_scenes results table: single-task references + balancers × seeds.

    python scripts/vision_table.py --run --jobs 2                    # run what is missing, then print the table
    python scripts/vision_table.py                                   # aggregate existing run dirs only
    python scripts/vision_table.py --run --seeds 0 1 2 --methods ew pcgrad --logdir runs/vision_table

Each method run ``<logdir>/<method>_s<seed>`` is trained with ``scripts/train_vision.py CONFIG`` (default
``configs/vision/synthetic.yaml``: small model, CPU, one thread per run) and the single-task runs
``<logdir>/stl_<task>_s<seed>`` of the same seed as its Δm baseline. The table gives Δm% (metric-weighted,
MTAN line; task-weighted, LibMTL/Aligned-MTL line; lower is better) as mean ± std over seeds, and the mean
per-task metrics. Selection rule: mean of the last ``last_k`` evaluations of each run (never the best).
Method keys: a balancer key, or ``dgr+<base>`` for DGR on top of a base balancer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ["ew", "pcgrad", "cagrad", "nash_mtl", "imtl", "aligned_mtl", "aligned_mtl_ub", "dgr+ew", "sgsu",
           "task_tensioner"]  # fmt: skip
TASKS = ["seg", "depth", "normal"]
#: metrics shown per task (the metric names of mtrl.vision.metrics), in table order.
SHOWN = ["seg/miou", "seg/pix_acc", "depth/abs_err", "depth/rel_err", "normal/mean", "normal/within_11.25"]


def _method_overrides(method: str) -> list[str]:
    if method.startswith("dgr+"):
        return ["balancer.name=dgr", f"balancer.hparams={{base: {method[4:]}}}"]
    return [f"balancer.name={method}"]


def _command(config: str, logdir: Path, name: str, seed: int, extra: list[str]) -> list[str]:
    from mtrl.config import with_defaults

    settings = with_defaults(["threads=1", "progress=false", "device=cpu"], extra)  # the user's device=cuda wins
    return [sys.executable, str(ROOT / "scripts" / "train_vision.py"), config, f"logdir={logdir}", f"run_name={name}",
            f"seed={seed}", "resume=true", *settings]  # fmt: skip


def _run_all(jobs: list[tuple[str, list[str]]], workers: int, logdir: Path) -> None:
    def one(job: tuple[str, list[str]]) -> None:
        name, cmd = job
        t0 = time.perf_counter()
        log = (logdir / f"{name}.log").open("w")
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        status = "ok" if rc == 0 else f"FAILED (rc {rc}, see {logdir / name}.log)"
        print(f"{name}: {status} in {time.perf_counter() - t0:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, jobs))


def _load(logdir: Path, name: str) -> dict[str, Any] | None:
    p = logdir / name / "results.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _fmt(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "–"
    arr = np.asarray(values) * scale
    std = f" ± {arr.std(ddof=1):.{digits}f}" if len(arr) > 1 else ""
    return f"{arr.mean():.{digits}f}{std}"


def table(logdir: Path, methods: list[str], seeds: list[int]) -> str:
    """The Markdown table of the runs found in ``logdir``."""
    head = "| method | seeds | Δm% metric-w. ↓ | Δm% task-w. ↓ | " + " | ".join(SHOWN) + " | s/run |"
    lines = [head, "|" + "---|" * (5 + len(SHOWN))]
    rows = [(f"STL {t}", [f"stl_{t}_s{s}" for s in seeds]) for t in TASKS]
    rows += [(m, [f"{m}_s{s}" for s in seeds]) for m in methods]
    for label, names in rows:
        found = [r for r in (_load(logdir, n) for n in names) if r is not None]
        if not found:
            continue
        dm = [r["delta_m"] for r in found if "delta_m" in r]
        cells = [
            label, str(len(found)),
            _fmt([d["metric_weighted"] for d in dm]) if dm else "0 (reference)" if label.startswith("STL") else "–",
            _fmt([d["task_weighted"] for d in dm]) if dm else "0 (reference)" if label.startswith("STL") else "–",
        ]  # fmt: skip
        for key in SHOWN:
            vals = [r["selected"][key] for r in found if key in r["selected"]]
            percent = key.startswith("seg/") or "within" in key
            cells.append(_fmt(vals, 100.0 if percent else 1.0, 3 if key.startswith("depth/") else 2))
        cells.append(_fmt([r["train_time_s"] for r in found if "train_time_s" in r], digits=0))
        lines.append("| " + " | ".join(cells) + " |")
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
        stl = [
            (f"stl_{t}_s{s}", _command(args.config, logdir, f"stl_{t}_s{s}", s, [f"single_task={t}", *args.overrides]))
            for s in args.seeds
            for t in TASKS
        ]
        _run_all([j for j in stl if _load(logdir, j[0]) is None], args.jobs, logdir)
        mtl = []
        for s in args.seeds:
            baseline = "baseline=[" + ", ".join(str(logdir / f"stl_{t}_s{s}") for t in TASKS) + "]"
            for m in args.methods:
                name = f"{m}_s{s}"
                extra = [*_method_overrides(m), baseline, *args.overrides]
                mtl.append((name, _command(args.config, logdir, name, s, extra)))
        _run_all([j for j in mtl if _load(logdir, j[0]) is None], args.jobs, logdir)
        print(f"total wall time {time.perf_counter() - t0:.0f} s with {args.jobs} parallel run(s)\n")
    print(f"synthetic_scenes, {args.config}, overrides {args.overrides or 'none'};")
    print("Δm vs the single-task runs of the same seed;")
    print("selection: mean of the last k evaluations; seg and within-11.25 in %, lower Δm is better.\n")
    print(table(logdir, args.methods, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
