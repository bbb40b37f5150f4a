"""A/B learning harness: our SAC (scripts/train.py) against stable-baselines3's SAC on single Meta-World tasks.

    python scripts/bench_learning.py                    # acceptance: 3 tasks x 5 seeds x 2 sides, 20k steps
    python scripts/bench_learning.py --screen           # iterate: reach-v3, 3 seeds
    python scripts/bench_learning.py --ours-name onehot --ours sac.task_input=one_hot   # a variant of ours
    python scripts/bench_learning.py --report-only      # tables and plot from the finished runs
    python scripts/bench_learning.py --report-only --also mtrl-before   # add an earlier variant's runs
    python scripts/bench_learning.py --ray-address auto --num-cpus 1 # the same runs as Ray tasks on a cluster

Same task, network, batch, learning rates, warm-up, update schedule and evaluation on both sides (the
preset's, default configs/mt1_sac.yaml); evaluation envs are built with the same seed. Runs go to
ROOT/<side>/<task>/s<seed> and run --jobs at a time, each on one thread; a run that finished is
skipped and an interrupted one resumes from its last evaluation, so the command can be stopped and
started again. At the end it prints IQM and mean with 95% stratified-bootstrap intervals (rliable)
per checkpoint and for the area under the curve, per-task tables and the acceptance check, writes
them to ROOT/<ours>_vs_sb3.md and draws ROOT/<ours>_vs_sb3.png. A full pass is 30 runs of 4-5 min
(about an hour on 2 cores); SB3's runs are shared by every variant of ours.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.learning_ab import DEFAULT_TASKS, SB3_SIDE, collect, plan_jobs, plot, report, settings_from
from mtrl.jobs import run_jobs
from mtrl.ray_jobs import add_ray_arguments, ray_options, run_ray_jobs

SCREEN_TASKS, SCREEN_SEEDS = ("reach-v3",), (0, 1, 2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=None, help=f"Meta-World v3 tasks (default {' '.join(DEFAULT_TASKS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="run seeds (default 0 1 2 3 4)")
    p.add_argument("--screen", action="store_true", help="screening: reach-v3 and seeds 0 1 2 unless given")
    p.add_argument("--steps", type=int, default=None, help="environment steps per run (default 20000)")
    p.add_argument("--eval-every", type=int, default=None, help="evaluation cadence (default 5000)")
    p.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default 10)")
    p.add_argument("--preset", type=Path, default=None, help="preset of both sides (default configs/mt1_sac.yaml)")
    p.add_argument("--root", type=Path, default=None, help="run folder (default runs/bench_learning)")
    p.add_argument("--ours-name", default=None, help="folder name of our side (default mtrl)")
    p.add_argument("--ours", nargs="*", default=(), help="key=value overrides for our side only")
    p.add_argument("--also", nargs="*", default=(), help="other finished variants of ours to show (folder names)")
    p.add_argument("--sides", nargs="+", default=["ours", SB3_SIDE], choices=["ours", SB3_SIDE], help="what to run")
    p.add_argument("--jobs", type=int, default=2, help="parallel local runs (one thread each; not with Ray)")
    p.add_argument("--report-only", action="store_true", help="do not run anything; report what is finished")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap replications")
    add_ray_arguments(p)
    args = p.parse_args(argv)
    try:
        ray = ray_options(args)
    except ValueError as err:
        p.error(str(err))

    try:
        settings = settings_from(
            tasks=tuple(args.tasks) if args.tasks else (SCREEN_TASKS if args.screen else None),
            seeds=tuple(args.seeds) if args.seeds else (SCREEN_SEEDS if args.screen else None),
            steps=args.steps,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            preset=args.preset.resolve() if args.preset else None,
            root=args.root.resolve() if args.root else None,
            ours=args.ours_name,
            ours_overrides=tuple(args.ours),
        )
    except (TypeError, ValueError) as err:
        p.error(str(err))
    if not settings.preset.is_file():
        p.error(f"argument --preset: {settings.preset} does not exist (presets live in configs/)")
    if not args.report_only:
        jobs = plan_jobs(settings, args.sides)
        where = "as Ray tasks" if ray else f"{args.jobs} at a time"
        print(f"{len(jobs)} runs under {settings.root} ({where}); logs in each run's job.log",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            outcomes = run_ray_jobs(jobs, ray) if ray else run_jobs(jobs, parallel=args.jobs)
        except KeyboardInterrupt:
            print("stopped: run the same command again to resume", file=sys.stderr)
            return 130
        failed = [o for o in outcomes if o.returncode != 0]
        for o in failed:
            print(f"FAILED: {o.job.name} (exit {o.returncode}); see {o.log}", file=sys.stderr)
    data = collect(settings, [settings.ours, *args.also, SB3_SIDE])
    text = report(data, reps=args.reps)
    print(text)
    stem = settings.root / f"{settings.ours}_vs_{SB3_SIDE}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text + "\n")
    if data.scores:
        print(f"wrote {stem.with_suffix('.md')} and {plot(data, stem.with_suffix('.png'), reps=args.reps)}")
    return 0 if not data.missing else 1


if __name__ == "__main__":
    raise SystemExit(main())
