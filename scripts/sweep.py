#!/usr/bin/env python
"""Run a balancers × seeds sweep of an mtrl training script, locally or on a Ray cluster.

    python scripts/sweep.py scripts/train.py configs/mt10_sac.yaml --balancers ew pcgrad aligned_mtl \
        --seeds 0 1 2 --root runs/sweep/mt10 --jobs 2 total_steps=100000
    python scripts/sweep.py ... --ray-address auto     # one Ray task per run (needs `pip install ray`)

Each run gets ``balancer=B seed=S`` (``balancer.name=B`` for ``train_vision.py``) and the run directory
``ROOT/B/seedS`` (``logdir=ROOT/B run_name=seedS``) plus the given overrides; a run whose
``results.json`` exists is skipped, and an interrupted run that left a checkpoint (``checkpoints/last.txt``
of ``train.py``, ``checkpoint.pt`` of ``train_vision.py``) is continued with ``resume=true``; a run that
crashed before its first checkpoint starts again from scratch.
Aggregate afterwards with ``scripts/aggregate.py ROOT``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint that ``resume=true`` can continue (RL or vision layout)."""
    return (run_dir / "checkpoints" / "last.txt").is_file() or (run_dir / "checkpoint.pt").is_file()


def run_commands(
    root: Path, script: str, config: str, balancers: list[str], seeds: list[int], extra: list[str]
) -> list[list[str]]:
    """The command line of every run of the sweep that has no ``results.json`` yet."""
    commands = []
    for balancer in balancers:
        for seed in seeds:
            logdir = root / balancer / f"seed{seed}"
            if (logdir / "results.json").is_file():
                continue
            key = "balancer.name" if "vision" in Path(script).name else "balancer"  # vision nests balancer hparams
            cmd = [sys.executable, script, config, f"{key}={balancer}", f"seed={seed}",
                   f"logdir={logdir.parent}", f"run_name={logdir.name}", *extra]  # fmt: skip
            if has_checkpoint(logdir):
                cmd.append("resume=true")
            commands.append(cmd)
    return commands


def _run_local(cmd: list[str]) -> int:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", help="scripts/train.py or scripts/train_vision.py")
    parser.add_argument("config", help="preset YAML")
    parser.add_argument("--balancers", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", required=True, help="folder for the run directories")
    parser.add_argument("--jobs", type=int, default=1, help="parallel local runs")
    parser.add_argument("--ray-address", default=None, help="run on a Ray cluster at this address ('auto' for local)")
    args, extra = parser.parse_known_args(argv)

    commands = run_commands(Path(args.root), args.script, args.config, args.balancers, args.seeds, extra)
    if not commands:
        print("every run of the sweep has results.json already")
        return 0
    if args.ray_address:
        try:
            import ray
        except ImportError:
            print("--ray-address needs Ray: pip install ray", file=sys.stderr)
            return 1
        ray.init(address=args.ray_address)
        remote = ray.remote(_run_local)
        codes = ray.get([remote.remote(cmd) for cmd in commands])
    else:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            codes = list(pool.map(_run_local, commands))
    failed = [" ".join(c) for c, code in zip(commands, codes, strict=True) if code != 0]
    for cmd in failed:
        print("FAILED:", cmd, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
