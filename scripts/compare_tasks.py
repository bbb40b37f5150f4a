"""Per-task evaluation curves of several RL runs side by side: a Markdown table and a plot.

    python scripts/compare_tasks.py runs/mt10_cpu_long runs/stl_cpu_long --labels "MT-SAC (ours)" "SB3 per task" \
        --plot runs/mt10_vs_stl.png

Each argument is a run directory of ``scripts/train.py`` (a multi-task run: one curve per task) or
``scripts/train_stl.py`` (one SB3 SAC per task). Steps are environment steps per task, so a
multi-task run and the single-task reference line up at equal transitions per task. The table has
one row per task and run with the success at every evaluation step both runs have; the plot has
one panel per task plus the mean over tasks. Unfinished runs are read as far as they got. Runs given
the same label are merged (a single-task reference split into several ``train_stl.py`` runs over
disjoint tasks, to use both cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtrl.analysis import run_history


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (train.py or train_stl.py)")
    p.add_argument(
        "--labels", nargs="+", default=None, help="one label per run; repeated labels merge runs (default: names)"
    )
    p.add_argument("--metric", default="success", choices=["success", "return"], help="what to compare")
    p.add_argument("--plot", type=Path, default=None, help="PNG with one panel per task")
    args = p.parse_args(argv)
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        p.error(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    histories = {}
    for label, run in zip(labels, args.runs, strict=True):
        try:
            hist = run_history(run, finished_only=False)
        except ValueError as err:
            p.error(str(err))
        if not hist:
            p.error(f"{run}: no results.json with evaluations (is it a run directory of train.py or train_stl.py?)")
        merged = histories.setdefault(label, {})
        clash = sorted(set(merged) & set(hist))
        if clash:
            p.error(f"{run}: tasks {clash} are already in another run labelled {label!r}")
        merged.update(hist)  # runs sharing a label are one run split over tasks (e.g. two train_stl.py runs)
    tasks = [t for t in next(iter(histories.values())) if all(t in h for h in histories.values())]
    if not tasks:
        p.error("the runs share no task")
    steps = sorted(set.intersection(*(set(h[t]) for h in histories.values() for t in tasks)))
    if not steps:
        p.error("the runs share no evaluation step")
    digits = 2 if args.metric == "success" else 0
    lines = ["| task | run | " + " | ".join(f"{s:,}" for s in steps) + " |", "|---|---|" + "---|" * len(steps)]
    for task in [*tasks, "mean"]:
        for label, hist in histories.items():
            over = tasks if task == "mean" else [task]
            values = [sum(hist[t][s][args.metric] for t in over) / len(over) for s in steps]
            lines.append(f"| {task} | {label} | " + " | ".join(f"{v:,.{digits}f}" for v in values) + " |")
    print(f"evaluation {args.metric} per task at environment steps per task\n")
    print("\n".join(lines))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [*tasks, "mean over tasks"]
        cols = min(4, len(panels))
        rows = -(-len(panels) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False, sharey=True)
        for ax, panel in zip(axes.flat, panels, strict=False):
            for i, (label, hist) in enumerate(histories.items()):
                if panel == "mean over tasks":
                    xs = steps
                    ys = [sum(hist[t][s][args.metric] for t in tasks) / len(tasks) for s in steps]
                else:
                    xs = sorted(hist[panel])
                    ys = [hist[panel][s][args.metric] for s in xs]
                ax.plot(xs, ys, marker="o", ms=3, color=f"C{i}", label=label)
            ax.set_title(panel, fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes.flat[len(panels) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.supxlabel("environment steps per task")
        fig.supylabel(f"evaluation {args.metric}")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
