#!/usr/bin/env python
"""Aggregate run directories into a Markdown table (mean ± std over seeds) and a learning-curve plot.

    python scripts/aggregate.py runs/sweep/mt10 --metrics eval/success_mean/final --curve eval/success_mean \
        --plot runs/sweep/mt10/curves.png

Runs are grouped by their config's ``balancer`` (``--group`` to change). The plot (matplotlib, the
``plot`` extra) shows the mean with a 95% Student-t confidence band.
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
    args = parser.parse_args(argv)

    records = find_runs(args.root, args.group)
    if not records:
        print(f"no finished runs (config.yaml + results.json) under {args.root}", file=sys.stderr)
        return 1
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
