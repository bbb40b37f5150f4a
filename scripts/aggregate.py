#!/usr/bin/env python
"""Aggregate a sweep's run directories into reliable statistics: a Markdown report and PNG plots.

    python scripts/aggregate.py runs/sweep/mt10                          # the report (stdout)
    python scripts/aggregate.py runs/sweep/mt10 --compare imtl_g ew --compare pcgrad ew \
        --out runs/sweep/mt10/report.md --plots runs/sweep/mt10/plots
    python scripts/aggregate.py runs/task_input --group sac.task_input   # groups by another config key
    python scripts/aggregate.py runs/sweep/mt10 --metrics summary/reported/last_mean   # mean ± std of keys
    python scripts/aggregate.py runs/bench/mix4 --last 3 --confidence 0.995 --holm 0.05 --compare imtl ew ...

Runs are grouped by their config's ``balancer`` (``--group`` to change). The default report (the
``stats`` extra: rliable) reads the protocol's headline evaluation of each RL run (``final`` or ``best``,
as ``summary.reported_statistic`` says) and its per-task success, or each vision run's Δm% against its
baseline (lower is better), and gives per group IQM, mean, median and (RL) optimality gap with
stratified-bootstrap intervals, tasks as strata; the headline and per-task table; with ``--compare X Y``
the probability that X beats Y. ``--plots DIR`` writes performance profiles and (RL) the IQM over
training steps. Unfinished runs, crashed runs (no ``results.json``) and runs whose ``config.yaml`` or
``results.json`` cannot be read (a truncated write) are skipped, each named with the reason (exit status 1
only when no run is left); a root mixing protocols is refused.
``--last N`` scores each RL run by the mean success of its last N evaluations instead; ``--holm ALPHA`` adds
each comparison's bootstrap p-value and Holm's decision over all of them; ``--confidence`` sets the intervals'
level (the benchmark's report: ``--last 3 --confidence 0.995 --holm 0.05``, docs/benchmark.md).
``--metrics [KEY ...]`` prints mean ± std over seeds of results.json keys instead (all result keys
when none is named, configuration fields never); ``--curve TAG --plot PNG`` draws a metrics.jsonl tag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtrl.analysis import (
    find_runs,
    learning_curves,
    load_sweep,
    markdown_table,
    report_markdown,
    result_keys,
    summarize,
    sweep_report,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder holding run directories (searched recursively)")
    parser.add_argument("--group", nargs="*", default=["balancer"], help="config keys that name a group")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("X", "Y"),
                        help="probability of improvement of group X over group Y (repeatable)")  # fmt: skip
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    parser.add_argument("--plots", default=None, help="folder for profiles.png and sample_efficiency.png")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--last", type=int, default=None, metavar="N",
                        help="RL: score each run by the mean success of its last N evaluations per task")  # fmt: skip
    parser.add_argument("--confidence", type=float, default=0.95, help="level of every interval (default 0.95)")
    parser.add_argument("--holm", type=float, default=None, metavar="ALPHA",
                        help="bootstrap p-value of every --compare and Holm's step-down decision at family-wise "
                        "level ALPHA (e.g. 0.05)")  # fmt: skip
    parser.add_argument("--metrics", nargs="*", default=None,
                        help="instead of the report: mean ± std of these results.json keys (a/b for nested; none "
                        "named: every result key, configuration fields excluded)")  # fmt: skip
    parser.add_argument("--curve", default=None, help="metrics.jsonl tag to plot against steps (with --plot)")
    parser.add_argument("--plot", default=None, help="output PNG for --curve")
    return parser


def _metrics_table(args: argparse.Namespace) -> str:
    skipped: list[str] = []
    records = find_runs(args.root, args.group, skipped)
    for note in skipped:
        print(f"skipped {note}", file=sys.stderr)
    if not records:
        raise ValueError(f"no finished runs (config.yaml + results.json) under {args.root}")
    keys = args.metrics or result_keys(records)
    return markdown_table(summarize(records, keys), keys)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if bool(args.curve) != bool(args.plot):
        parser.error("--curve TAG and --plot PNG go together")
    if args.plots and args.metrics is not None:
        parser.error("--plots draws the report's plots; leave out --metrics")
    if not 0 < args.confidence < 1:
        parser.error(f"--confidence must be in (0, 1), e.g. 0.995; got {args.confidence}")
    if args.holm is not None and not (0 < args.holm < 1 and args.compare):
        parser.error("--holm ALPHA needs 0 < ALPHA < 1 and at least one --compare X Y")
    try:
        if args.metrics is not None:
            text = _metrics_table(args)
        else:
            sweep = load_sweep(args.root, args.group, last=args.last)
            report = sweep_report(sweep, [tuple(pair) for pair in args.compare], reps=args.reps,
                                  confidence=args.confidence, seed=args.seed, holm_alpha=args.holm)  # fmt: skip
            text = report_markdown(report)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text + "\n")
            print(f"wrote {args.out}", file=sys.stderr)
        if args.plots:
            from mtrl.analysis.plots import write_sweep_plots

            for path in write_sweep_plots(report, args.plots, seed=args.seed):
                print(f"wrote {path}", file=sys.stderr)
        if args.curve:
            from mtrl.analysis.plots import plot_learning_curves

            plot_learning_curves(learning_curves(find_runs(args.root, args.group), args.curve), args.plot, args.curve)
            print(f"wrote {args.plot}", file=sys.stderr)
    except (FileNotFoundError, ImportError, ValueError) as err:
        print(f"aggregate.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
