#!/usr/bin/env python
"""Aggregate run directories into a Markdown table (mean ± std over seeds) and a learning-curve plot.

    python scripts/aggregate.py runs/sweep/mt10 --metrics eval/success_mean/final --curve eval/success_mean \
        --plot runs/sweep/mt10/curves.png

    python scripts/aggregate.py runs/task_input --group sac.task_input --per-task   # IQM over seeds x tasks

Runs are grouped by their config's ``balancer`` (``--group`` to change). The plot (matplotlib, the
``plot`` extra) shows the mean with a 95% Student-t confidence band. ``--per-task`` reads each run's
final success per task and prints the IQM and mean over runs × tasks with stratified-bootstrap 95%
intervals (rliable, the ``stats`` extra), and the per-task means.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtrl.analysis import find_runs, learning_curves, markdown_table, summarize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder holding run directories (searched recursively)")
    parser.add_argument("--metrics", nargs="*", default=None, help="results.json keys (a/b for nested); default all")
    parser.add_argument("--group", nargs="*", default=["balancer"], help="config keys that name a group")
    parser.add_argument("--curve", default=None, help="metrics.jsonl key to plot against steps")
    parser.add_argument("--plot", default=None, help="output PNG for --curve")
    parser.add_argument(
        "--per-task",
        nargs="?",
        const="summary/final/success/",
        default=None,
        help="IQM and mean with stratified-bootstrap CIs over runs x tasks of the results keys <PREFIX><task> "
        "(default prefix: summary/final/success/, each run's final success per task; needs the stats extra)",
    )
    args = parser.parse_args(argv)

    records = find_runs(args.root, args.group)
    if not records:
        print(f"no finished runs (config.yaml + results.json) under {args.root}", file=sys.stderr)
        return 1
    if args.per_task is not None:
        from mtrl.analysis import task_scores, task_table

        try:
            print(task_table(task_scores(records, args.per_task)))
        except (ImportError, ValueError) as err:
            print(f"--per-task: {err}", file=sys.stderr)
            return 1
    if args.metrics is not None or args.per_task is None:
        metrics = args.metrics or sorted({k for r in records for k in r.results})
        print(markdown_table(summarize(records, metrics), metrics))
    if args.curve:
        curves = learning_curves(records, args.curve)
        if args.plot:
            try:
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt
            except ImportError:
                print("plots need matplotlib: pip install -e '.[plot]'", file=sys.stderr)
                return 1
            fig, ax = plt.subplots(figsize=(7, 4))
            for group, (steps, mean, half) in sorted(curves.items()):
                ax.plot(steps, mean, label=group)
                ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
            ax.set_xlabel("step")
            ax.set_ylabel(args.curve)
            ax.legend()
            fig.tight_layout()
            fig.savefig(args.plot, dpi=120)
            print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
