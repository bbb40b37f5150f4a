#!/usr/bin/env python
"""The balancer benchmark's pilot (docs/benchmark.md): ew multi-task SAC against one SAC per task, screened.

    python scripts/bench_pilot.py --jobs 2                     # every setting, seeds 0 1 2, runs/bench/pilot
    python scripts/bench_pilot.py --settings mix4 --jobs 2     # one setting
    python scripts/bench_pilot.py --report-only                # the screen of what has finished
    python scripts/bench_pilot.py --dry-run                    # the command of every run still to do
    python scripts/bench_pilot.py --status                     # how far every run got (no scores)
    python scripts/bench_pilot.py --confirm --settings mix4 --jobs 2   # fresh seeds 100-109, runs/bench
    python scripts/bench_pilot.py --benchmark --settings mix4 --jobs 2 # every method, seeds 100-104, runs/bench

For every setting (``configs/bench/<name>.yaml``) and seed: the ``ew`` run of ``scripts/train.py`` in
``ROOT/<setting>/ew/seed<S>`` (the jobs of ``scripts/sweep.py``, so a balancer sweep over ``ROOT/<setting>``
reuses it) and one ``scripts/train_stl.py`` run per task in ``ROOT/stl/<budget>/<task>/seed<S>``, shared by the
settings with the same task, budget and evaluation (``agents.transfer``). Runs go ``--jobs`` at a time on one
thread each (or to Ray with ``--ray``/``--ray-address``); finished runs are skipped and interrupted ones resume,
so the command can be stopped and started again; every run's seconds go to ``ROOT/ledger.jsonl``.
At the end it prints the pre-stated screen (per setting and seed the score of each side — the mean success of a
run's last 3 evaluations — the medians, the gap, whether the setting qualifies, its core-hours) and writes it to
``ROOT/screen.md``; with ``--confirm`` (one setting, fresh seeds) the confirmation rule instead, to
``ROOT/<setting>/confirmation.md``. With ``--benchmark`` (one setting) it runs the benchmark's methods
(``agents.transfer.BENCHMARK_METHODS``, or ``--methods``) with their published Meta-World hyper-parameters
(``agents.transfer.method_overrides``) into ``ROOT/<setting>/<method>/seed<S>``, beside the confirmation's ``ew``
runs, for ``scripts/aggregate.py ROOT/<setting>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # scripts/sweep.py's jobs

from sweep import config_check, sweep_jobs

from agents.transfer import (
    BENCH_PRESETS,
    BENCHMARK_METHODS,
    BENCHMARK_SEEDS,
    CONFIRM_SEEDS,
    PILOT_SEEDS,
    SETTINGS,
    STL,
    confirmation,
    core_hours,
    load_setting,
    method_overrides,
    record_outcomes,
    screen,
    screen_markdown,
    stl_jobs,
)
from mtrl.config import ConfigError
from mtrl.job_status import job_status, status_table
from mtrl.jobs import Job, JobOutcome, check_jobs, pending_jobs, run_jobs
from mtrl.ray_jobs import add_ray_arguments, ray_options, run_ray_jobs

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), help="preset names under --presets")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help=f"seeds (default {' '.join(map(str, PILOT_SEEDS))}; with --confirm 100-109)")  # fmt: skip
    p.add_argument(
        "--root", type=Path, default=None, help="run folder (default runs/bench/pilot; --confirm: runs/bench)"
    )
    p.add_argument("--presets", type=Path, default=BENCH_PRESETS, help="folder of the settings' presets")
    p.add_argument("--jobs", type=int, default=None, help="parallel local runs, one thread each (default 2)")
    p.add_argument("--report-only", action="store_true", help="run nothing; report what has finished")
    p.add_argument("--dry-run", action="store_true", help="print the command of every unfinished run and stop")
    p.add_argument("--status", action="store_true", help="run nothing; how far every run got (no scores)")
    p.add_argument("--confirm", action="store_true", help="the confirmation on fresh seeds of one setting")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples of the confirmation")
    p.add_argument("--benchmark", action="store_true", help="the benchmark's methods on one setting (seeds 100-104)")
    p.add_argument("--methods", nargs="+", default=list(BENCHMARK_METHODS), help="with --benchmark: which methods")
    add_ray_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        ray = ray_options(args)
        settings = [load_setting(name, args.presets) for name in args.settings]
    except ValueError as err:  # ConfigError included
        p.error(str(err))
    if ray is not None and args.jobs is not None:
        p.error("--jobs is for local runs: on Ray, --num-cpus/--num-gpus and the cluster set how many run at once")
    if args.confirm and args.benchmark:
        p.error("--confirm and --benchmark are separate steps: confirm first, then run the benchmark")
    seeds = args.seeds or list(CONFIRM_SEEDS if args.confirm else BENCHMARK_SEEDS if args.benchmark else PILOT_SEEDS)
    overrides: dict[str, list[str]] = {}
    if args.confirm or args.benchmark:
        step = "--confirm" if args.confirm else "--benchmark"
        if len(settings) != 1:
            p.error(f"{step} takes one setting (--settings NAME): the one the screen chose")
        reused = sorted(set(seeds) & set(PILOT_SEEDS))
        if reused:
            p.error(f"{step} needs fresh seeds; {reused} are the pilot's seeds")
    if args.benchmark:
        try:
            overrides = {m: method_overrides(m) for m in args.methods}
        except ValueError as err:
            p.error(str(err))
    fresh = args.confirm or args.benchmark
    root = (args.root or ROOT / "runs" / "bench" / ("" if fresh else "pilot")).resolve()
    if not args.report_only:
        jobs: dict[Path, Job] = {}  # setting after setting (its ew runs, then its single-task runs), shared once
        for method in args.methods if args.benchmark else []:
            s = settings[0]
            for job in sweep_jobs(root / s.name, str(ROOT / "scripts" / "train.py"), str(s.preset), [method], seeds,
                                  ["progress=false", *overrides[method]]):  # fmt: skip
                jobs.setdefault(job.run_dir, job)
        for s in [] if args.benchmark else settings:
            ew = sweep_jobs(root / s.name, str(ROOT / "scripts" / "train.py"), str(s.preset), ["ew"], seeds,
                            ["progress=false"])  # fmt: skip
            for job in [*ew, *stl_jobs(root, [s], seeds)]:
                jobs.setdefault(job.run_dir, job)
        if args.status:  # where every run stands: no score is read
            statuses = [job_status(j) for j in jobs.values()]
            print(status_table(statuses, {d: core_hours(root, [d]) for d in jobs}, root=root))
            return 0
        try:  # every run's configuration, read as its script reads it, before anything starts
            for script, kind in (("train.py", False), ("train_stl.py", True)):
                check = config_check(script, on_ray=ray is not None)
                if check is not None:
                    check_jobs([j for j in jobs.values() if j.name.startswith(STL) == kind], check)
        except ConfigError as err:
            print(f"bench_pilot.py: config error: {err}", file=sys.stderr)
            return 2
        if args.dry_run:
            for job in pending_jobs(list(jobs.values())):
                print(" ".join(job.argv()))
            return 0
        where = "as Ray tasks" if ray else f"{args.jobs or 2} at a time"
        print(f"{len(jobs)} runs under {root} ({where}); logs in each run's job.log", file=sys.stderr, flush=True)
        try:
            todo = list(jobs.values())

            def record(outcome: JobOutcome) -> None:  # each run's seconds as it ends, stopped runs included
                record_outcomes(root, [outcome])

            outcomes = (
                run_ray_jobs(todo, ray, on_outcome=record) if ray
                else run_jobs(todo, parallel=args.jobs or 2, on_outcome=record)
            )  # fmt: skip
        except KeyboardInterrupt:
            print("stopped: run the same command again to resume", file=sys.stderr)
            return 130
        for o in outcomes:
            if o.failed:
                print(f"FAILED: {o.job.name} (exit {o.returncode}); see {o.log}", file=sys.stderr)
    if args.benchmark:
        print(f"report: .venv/bin/python scripts/aggregate.py {root / settings[0].name}", file=sys.stderr)
        return 0
    if args.confirm:
        setting = settings[0]
        try:
            result, n_stl, n_ew = confirmation(root, setting, seeds, reps=args.reps)
        except ValueError as err:
            print(f"bench_pilot.py: {err}", file=sys.stderr)
            return 1
        text = (
            f"Confirmation on {setting.name}, {n_stl} single-task and {n_ew} ew seeds of {seeds}:\n\n"
            f"- P(one SAC per task > ew) = {result.improvement.format()} (95% stratified bootstrap)\n"
            f"- IQM(one SAC per task) − IQM(ew) = {result.iqm_difference.format()}\n"
            f"- negative transfer confirmed: {'yes' if result.confirmed else 'no'}"
        )
        out = root / setting.name / "confirmation.md"
    else:
        text = screen_markdown(screen(root, settings, seeds), seeds)
        out = root / "screen.md"
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
