"""Run (or aggregate) the synthetic_scenes results table: single-task references + balancers × seeds.

    python scripts/vision_table.py --run --jobs 2                    # run what is missing, then print the table
    python scripts/vision_table.py                                   # aggregate existing run dirs only
    python scripts/vision_table.py --run --seeds 0 1 2 --methods ew pcgrad --logdir runs/vision_table

Each method run ``<logdir>/<method>_s<seed>`` is trained with ``scripts/train_vision.py CONFIG`` (default
``configs/vision/synthetic.yaml``: small model, CPU, one thread per run) and the single-task runs
``<logdir>/stl_<task>_s<seed>`` of the same seed as its Δm baseline. The table gives Δm% (metric-weighted,
MTAN line; task-weighted, LibMTL/Aligned-MTL line; lower is better) and the per-task metrics as mean ± std over
seeds (``mtrl.analysis.summarize``); the jobs and the table are ``mtrl.vision.table``. The runs go through
``mtrl.jobs.run_jobs``: finished ones are skipped, stopped
ones resume from their checkpoint, each run's output is in its ``job.log``. Selection rule: mean of the last
``last_k`` evaluations of each run (never the best).
Method keys: a balancer key, or ``dgr+<base>`` for DGR on top of a base balancer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mtrl.jobs import run_jobs  # noqa: E402
from mtrl.vision.table import METHODS, method_jobs, reference_jobs, table  # noqa: E402


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
        run_jobs(reference_jobs(args.config, logdir, args.seeds, args.overrides), args.jobs, sys.stdout)
        run_jobs(method_jobs(args.config, logdir, args.methods, args.seeds, args.overrides), args.jobs, sys.stdout)
        print(f"total wall time {time.perf_counter() - t0:.0f} s with {args.jobs} parallel run(s)\n")
    print(f"synthetic_scenes, {args.config}, overrides {args.overrides or 'none'};")
    print("Δm vs the single-task runs of the same seed;")
    print("selection: mean of the last k evaluations; seg and within-11.25 in %, lower Δm is better.\n")
    print(table(logdir, args.methods, args.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
