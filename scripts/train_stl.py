"""The "one SAC agent per task" reference row: stable-baselines3 SAC on each Meta-World task alone.

    python scripts/train_stl.py configs/mt10_sac.yaml          # short: MT10 tasks, 3000 steps each, metaworld-v3
    python scripts/train_stl.py configs/mt10_sac.yaml steps=2000000 eval_every=10000 checkpoint_every=100000 \
        device=cuda
    python scripts/train_stl.py configs/mt10_sac.yaml 'tasks=[reach-v3, push-v3]' protocol=mtrl-legacy
    python scripts/train_stl.py configs/mt10_sac_cpu.yaml steps=50000                # the CPU preset's network
    python scripts/train_stl.py configs/mt10_sac.yaml run_name=<dir under logdir> resume=true   # continue a run
    python scripts/sweep.py scripts/train_stl.py configs/mt10_sac.yaml --balancers stl --seeds 0 1 2 \
        --root runs/sweep/stl steps=2000000                                       # seeds of the reference

Like ``scripts/train.py``: ``CONFIG`` is a multi-task preset and ``key=value`` overrides set the keys of
``agents.stl_config.STLConfig`` (the flags' names with ``_``: ``eval_every``, ``checkpoint_replay``, ...;
``agents.stl_config.load_stl_config``). Deprecated, kept for this release: the ``--flag`` form
(``python scripts/train_stl.py --steps 2000000 --preset configs/mt10_sac.yaml``, ``--run-name X --resume``;
``--help`` lists the flags); it will be removed in the next release.

Each task gets its own stable-baselines3 SAC (:func:`agents.sb3.make_sb3_sac`) with the network,
optimiser and schedule of a multi-task preset's ``sac`` section (``--preset``; default
``configs/mt10_sac.yaml``, or ``mt50_sac.yaml`` for ``--benchmark MT50``: 3×400 ReLU actor and twin
critics, Adam 3e-4, batch 128, γ 0.99, τ 0.005, initial temperature 1.0, target entropy −|A|, 1500
random warm-up steps, one update per step; replay capacity = the preset's split evenly over the
benchmark's tasks). The benchmark, its tasks and the protocol default to the preset's ``env``
section. Each task's env is the one our agent trains on, ``MT1(task, seed)`` from
:func:`envs.make_mt_envs` (:func:`agents.sb3.make_task_env`), under the chosen protocol (episode
length, fixed or resampled goals, reward version and normalisation); so under ``mtrl-legacy`` a
task's fixed goal is a draw of the same distribution as, not the same goal as, an MT10 run's.

Tasks are trained in rounds up to every evaluation / checkpoint boundary, so every task is at the
same step whenever the tasks are evaluated. The run directory (``--logdir/--run-name``) has the
layout of ``scripts/train.py`` runs: ``config.yaml`` (with ``protocol_details``), TensorBoard events
and ``metrics.jsonl`` (``train/*/<task>``, ``eval/success/<task>``, ``eval/success_mean``,
``perf/sps``, hparams), ``checkpoints/<task>/model.zip`` (+ ``replay.pkl``), ``checkpoints/state.pt``
and ``results.json``; every file and tag is listed in ``agents/stl.py``, which does the work
(this script maps the flags onto ``agents.stl_config.STLConfig``).

``--resume`` continues the run in ``--logdir/--run-name``: finished tasks are skipped, the task in
progress is reloaded from its checkpoint (its replay buffer too, when saved) and its episode restarts
from a reset. Only ``--steps``, ``--logdir``, ``--run-name``, ``--device``, ``--log-every``,
``--checkpoint-every`` and ``--checkpoint-replay`` may differ from the run's ``config.yaml``
(benchmark, protocol, tasks, seed, evaluation schedule and SAC settings may not); the resumed run
appends to the logs.
Ctrl-C or SIGTERM stops at the next environment step, saves and writes ``results.json``, says at which step
the run stopped and how to resume it, and exits with status 130 (SIGINT) or 143 (SIGTERM); a second one aborts.
A bad argument, a resume that does not fit the run, or a refused run directory (a fresh start over checkpoints
or results.json, a resume with nothing to resume, a directory of another trainer) prints one line and exits
with status 2; a run directory another live process holds exits with status 75.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.stl_config import ResolvedSTLConfig, STLConfig, STLConfigError, load_stl_config, resolve_stl_config
from envs.protocols import PROTOCOLS
from envs.task_sets import METAWORLD_BENCHMARKS
from mtrl.config import ConfigError, update_config


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every argument's default in ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``scripts/train_stl.py``: one flag per ``STLConfig`` field, same defaults."""
    d = STLConfig()
    p = argparse.ArgumentParser(prog="train_stl.py", description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument(
        "--preset", default=d.preset, help="multi-task preset whose sac/env sections to use (None: by --benchmark)"
    )
    p.add_argument(
        "--benchmark", default=d.benchmark, choices=list(METAWORLD_BENCHMARKS), help="task set (None: the preset's)"
    )
    p.add_argument("--tasks", nargs="+", default=d.tasks, help="subset of the benchmark's tasks (None: all of them)")
    p.add_argument(
        "--protocol", default=d.protocol, choices=sorted(PROTOCOLS), help="envs.protocols name (None: preset's)"
    )
    p.add_argument("--steps", type=_int_at_least(1), default=d.steps, help="env steps per task (full budget: 2000000)")
    p.add_argument("--warmup", type=_int_at_least(0), default=d.warmup, help="random steps first (None: the preset's)")
    p.add_argument(
        "--eval-every", type=_int_at_least(0), default=d.eval_every, help="evaluate every N steps; 0: at the end"
    )
    p.add_argument(
        "--eval-episodes", type=_int_at_least(1), default=d.eval_episodes, help="per task (None: the protocol's)"
    )
    p.add_argument("--buffer", type=_int_at_least(1), default=d.buffer, help="per-task capacity (None: 1M / tasks)")
    p.add_argument("--log-every", type=_int_at_least(1), default=d.log_every, help="train/* scalars every N steps")
    p.add_argument(
        "--checkpoint-every",
        type=_int_at_least(0),
        default=d.checkpoint_every,
        help="save every N steps; 0: at task end and Ctrl-C",
    )
    p.add_argument(
        "--checkpoint-replay",
        action=argparse.BooleanOptionalAction,
        default=d.checkpoint_replay,
        help="save each task's replay buffer with its model (resume without a cold buffer)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="SB3 seed and Meta-World seed of every task")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:<i> | mps")
    p.add_argument("--logdir", default=d.logdir, help="parent folder of run directories")
    p.add_argument(
        "--run-name", default=d.run_name, help="run directory under --logdir (None: STL_<protocol>_s<seed>_<t>)"
    )
    p.add_argument("--resume", action="store_true", help="continue --logdir/--run-name from its checkpoints")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=d.progress, help="tqdm progress bar")
    return p


def _refuse_repeated_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """:class:`ConfigError` for a setting given twice (``--seed 1 --seed 2``, ``--progress --no-progress``):
    argparse would keep the last one silently."""
    seen: dict[str, str] = {}  # setting -> the flag that gave it
    for item in argv:
        if item == "--":
            break
        flag = item.split("=", 1)[0]
        action = parser._option_string_actions.get(flag) if flag.startswith("--") else None
        if action is None or action.dest == "help":
            continue
        if action.dest in seen:
            what = f"{flag} given twice" if seen[action.dest] == flag else f"{seen[action.dest]} and {flag} both given"
            raise ConfigError(f"{what}: keep one")
        seen[action.dest] = flag


def parse_args(argv: Sequence[str] | None = None) -> ResolvedSTLConfig:
    """The flags as a resolved ``STLConfig``; a bad value (or an unreadable ``--preset``) exits with status 2
    and one line naming it and what is valid."""
    p = build_parser()
    args = p.parse_args(argv)
    try:
        _refuse_repeated_flags(p, sys.argv[1:] if argv is None else argv)
        cfg = update_config(STLConfig(), vars(args))  # the flags are the config's fields
        return resolve_stl_config(cfg)
    except STLConfigError as err:
        message = f"argument {err}" if err.key is not None else str(err)
    except ConfigError as err:
        message = str(err)
    p.exit(2, f"{p.prog}: error: {message}\n")  # one line: the usage is for flags argparse itself rejects


#: Printed (on stdout) when the deprecated flags are used.
FLAGS_DEPRECATED = (
    "note: the --flag form of train_stl.py is deprecated and will be removed in the next release; write "
    "train_stl.py CONFIG key=value ... (e.g. train_stl.py configs/mt10_sac.yaml steps=2000000 seed=1)"
)


def main(argv: Sequence[str] | None = None) -> int:
    from mtrl.cli import run_main

    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-"):  # CONFIG key=value, like scripts/train.py
        return run_main(lambda: train(load_stl_config(args[0], args[1:]), args, dotted=True))
    settings = parse_args(argv)
    if args:
        print(FLAGS_DEPRECATED, flush=True)
    return run_main(lambda: train(settings, args), config_prefix="error")


def train(settings: ResolvedSTLConfig, argv: list[str], dotted: bool = False) -> int:
    """Build and train the run; the exit statuses of errors and interruptions are :func:`mtrl.cli.run_main`'s."""
    from agents.report import final_report
    from agents.stl import STLRun
    from mtrl.cli import print_run_end, raise_if_interrupted
    from mtrl.runstart import STL, STL_FLAGS

    kind = STL if dotted else STL_FLAGS  # how its messages and the resume command name the options
    try:
        run = STLRun(settings, kind)
    except ImportError as err:  # stable-baselines3 is an extra: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = run.train()
    raise_if_interrupted(kind, argv, run.run_dir, run.stop_signal, results["complete"], results["steps"],
                         run.state_path)  # fmt: skip
    report, run_dir = final_report(results), run.run_dir
    if not results["complete"]:
        if dotted:
            report += f"\nincomplete: continue with logdir={run_dir.parent} run_name={run_dir.name} resume=true"
        else:
            report += f"\nincomplete: continue with --logdir {run_dir.parent} --run-name {run_dir.name} --resume"
    print_run_end(report, run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
