#!/usr/bin/env python
"""Run a balancers × seeds sweep of an mtrl training script, locally or on a Ray cluster.

    python scripts/sweep.py scripts/train.py configs/mt10_sac.yaml --balancers ew pcgrad aligned_mtl \
        --seeds 0 1 2 --root runs/sweep/mt10 --jobs 2 total_steps=100000
    python scripts/sweep.py ... --ray                  # one Ray task per run on a local Ray instance
    python scripts/sweep.py ... --ray-address HEAD:6379 --num-cpus 2 --num-gpus 0.25   # on a Ray cluster
    python scripts/sweep.py scripts/train.py configs/mt10_sac_cpu.yaml --balancers ew --seeds 0 1 \
        --vary sac.task_input=one_hot,none,embedding --root runs/task_input --jobs 2   # also sweep a key

Each run gets ``balancer=B seed=S`` (``balancer.name=B`` for ``train_vision.py``; ``scripts/train_stl.py``, the
single-task reference, has no balancer: ``--balancers stl`` only names its folder), one value of every
``--vary`` key and the given overrides, and the run directory ``ROOT/B/seedS``
(``ROOT/B/<key>=<value>/seedS`` with ``--vary``). Runs go through :mod:`mtrl.jobs`: a finished run is
skipped, an interrupted run that left a checkpoint (``checkpoints/last.txt`` of ``train.py``,
``checkpoint.pt`` of ``train_vision.py``) is continued with ``resume=true``, and a run that crashed
before its first checkpoint starts again from scratch.

With ``--ray`` or ``--ray-address`` (the ``ray`` extra) every run is a Ray task asking for
``--num-cpus``/``--num-gpus``; a run that fails or loses its worker or node is retried up to
``--retries`` times from its checkpoint (:mod:`mtrl.ray_jobs`), so ``--root`` must be on storage
that every node of the cluster sees.
Before any run starts, every run's configuration is read as its script will read it (preset, overrides,
balancer names; :func:`config_check`): a bad value stops the sweep with one line naming the run and the key,
exit status 2, with nothing launched. Overrides may also follow the ``--seeds``/``--balancers`` lists
(``--seeds 0 1 total_steps=100``).
Aggregate afterwards with ``scripts/aggregate.py ROOT``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtrl.config import ConfigError, load_config
from mtrl.jobs import Job, check_jobs, has_checkpoint, pending_jobs, run_jobs
from mtrl.ray_jobs import add_ray_arguments, ray_options, run_ray_jobs

__all__ = ["config_check", "has_checkpoint", "run_commands", "split_list_overrides", "sweep_jobs"]

#: options whose values are lists (``nargs="+"``): an override written after them belongs to the runs.
LIST_OPTIONS = ("--balancers", "--seeds")


def parse_vary(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["sac.task_input=one_hot,none"]`` → ``[("sac.task_input", ["one_hot", "none"])]``."""
    out = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"bad --vary {item!r}: expected KEY=V1,V2,... (e.g. sac.task_input=one_hot,none)")
        out.append((key, values.split(",")))
    return out


def sweep_jobs(
    root: Path,
    script: str,
    config: str,
    balancers: list[str],
    seeds: list[int],
    extra: list[str],
    vary: list[tuple[str, list[str]]] | None = None,
) -> list[Job]:
    """One :class:`~mtrl.jobs.Job` per balancer × (varied values) × seed, in ``ROOT/B[/k=v,...]/seedS``."""
    jobs = []
    key = "balancer.name" if "vision" in Path(script).name else "balancer"  # vision nests balancer hparams
    balancer_arg = Path(script).name != "train_stl.py"  # the single-task reference has none: B names its folder
    combos: list[list[tuple[str, str]]] = [[]]
    for name, values in vary or []:
        combos = [[*c, (name, v)] for c in combos for v in values]
    for balancer in balancers:
        for combo in combos:
            label = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in combo)
            for seed in seeds:
                logdir = root / balancer / label / f"seed{seed}" if label else root / balancer / f"seed{seed}"
                cmd = (sys.executable, script, config, *([f"{key}={balancer}"] if balancer_arg else []),
                       *(f"{k}={v}" for k, v in combo),
                       f"seed={seed}", f"logdir={logdir.parent}", f"run_name={logdir.name}", *extra)  # fmt: skip
                name = "/".join(p for p in (balancer, label, f"seed{seed}") if p)
                jobs.append(Job(name, logdir, cmd, resume_args=("resume=true",)))
    return jobs


def run_commands(
    root: Path, script: str, config: str, balancers: list[str], seeds: list[int], extra: list[str]
) -> list[list[str]]:
    """The command line of every run of the sweep that is not finished (``resume=true`` where it
    left a checkpoint)."""
    return [job.argv() for job in pending_jobs(sweep_jobs(root, script, config, balancers, seeds, extra))]


def split_list_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(argv without them, overrides)``: every ``key=value`` that follows a list option (``--seeds 0 1
    total_steps=100``) is taken out, since no balancer name or seed holds ``=``: it is an override of the runs,
    not a value of the list (argparse would read it as one)."""
    kept: list[str] = []
    overrides: list[str] = []
    in_list = False
    for item in argv:
        if item.startswith("-"):
            in_list = item in LIST_OPTIONS
        elif in_list and "=" in item:
            overrides.append(item)
            continue
        kept.append(item)
    return kept, overrides


def config_check(script: str, on_ray: bool = False) -> Callable[[Job], object] | None:
    """How a run of ``script`` reads its configuration at start-up, for :func:`mtrl.jobs.check_jobs` to try on
    every run before any starts (nothing is created): the resolved ``TrainConfig`` of ``scripts/train.py`` (its
    balancers built, protocol looked up; the device only for local runs, since a Ray worker is another
    machine) or ``VisionConfig`` of ``scripts/train_vision.py`` (balancer name and hyper-parameters, ...).
    None for another script (its runs are not checked)."""
    name = Path(script).name
    if name == "train.py":
        from agents.config import TrainConfig

        def check_rl(job: Job) -> object:
            cfg = load_config(TrainConfig, job.argv()[2], job.argv()[3:], resolve=not on_ray)
            return dataclasses.replace(cfg, device="cpu").resolve() if on_ray else cfg

        return check_rl
    if name == "train_vision.py":
        from mtrl.vision.config import VisionConfig

        return lambda job: load_config(VisionConfig, job.argv()[2], job.argv()[3:])
    if name == "train_stl.py":
        from agents.stl_config import load_stl_config

        return lambda job: load_stl_config(job.argv()[2], job.argv()[3:])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="scripts/train.py, scripts/train_vision.py or scripts/train_stl.py")
    parser.add_argument("config", help="preset YAML")
    parser.add_argument("--balancers", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--root", required=True, help="folder for the run directories (on Ray: storage that every node sees)"
    )
    parser.add_argument("--jobs", type=int, default=None, help="parallel local runs (default 1; not with Ray)")
    parser.add_argument(
        "--vary", action="append", default=[], help="KEY=V1,V2,... also sweep a config key (repeatable)"
    )
    add_ray_arguments(parser)
    rest, list_overrides = split_list_overrides(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(rest)
    extra += list_overrides

    try:
        vary = parse_vary(args.vary)
        ray = ray_options(args)
    except ValueError as err:
        parser.error(str(err))
    if ray is not None and args.jobs is not None:
        parser.error("--jobs is for local runs: on Ray, --num-cpus/--num-gpus and the cluster set how many run at once")
    jobs = pending_jobs(sweep_jobs(Path(args.root), args.script, args.config, args.balancers, args.seeds, extra, vary))
    check = config_check(args.script, on_ray=ray is not None)
    try:  # every run's configuration, before any run starts
        if check is not None:
            check_jobs(jobs, check)
    except ConfigError as err:
        print(f"sweep.py: config error: {err}", file=sys.stderr)
        return 2
    if not jobs:
        print("every run of the sweep has results.json already")
        return 0
    if ray is not None:
        try:
            outcomes = run_ray_jobs(jobs, ray)
        except ImportError as err:
            print(err, file=sys.stderr)
            return 1
    else:
        outcomes = run_jobs(jobs, parallel=args.jobs or 1)
    failed = [f"{o.job.name} (log {o.log})" for o in outcomes if o.failed]
    for item in failed:
        print("FAILED:", item, file=sys.stderr)
    stopped = [o.job.name for o in outcomes if o.stopped]  # SIGINT/SIGTERM after a checkpoint (exit 130/143)
    if stopped:
        print(f"stopped with a checkpoint: {', '.join(stopped)}; run the same command again to resume", file=sys.stderr)
    return 1 if failed or stopped else 0


if __name__ == "__main__":
    raise SystemExit(main())
