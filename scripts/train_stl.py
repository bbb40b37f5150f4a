"""The "one SAC agent per task" reference row: stable-baselines3 SAC on each Meta-World task alone.

    python scripts/train_stl.py                       # short: MT10 tasks, 3000 steps each, metaworld-v3
    python scripts/train_stl.py --steps 2000000 --eval-every 10000 --checkpoint-every 100000 --device cuda
    python scripts/train_stl.py --tasks reach-v3 push-v3 --protocol mtrl-legacy
    python scripts/train_stl.py --preset configs/mt10_sac_cpu.yaml --steps 50000   # the CPU preset's network
    python scripts/train_stl.py --run-name <dir under --logdir> --resume          # continue a run

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

Tasks are trained in rounds up to every evaluation / checkpoint boundary (one task after the other
within a round), so every task is at the same step whenever the tasks are evaluated and the mean is
logged as it becomes available. Evaluation is :func:`envs.evaluate` under the protocol, exactly as
for the multi-task runs (metaworld-v3: ``metaworld.evaluation.evaluation``; mtrl-legacy: one
deterministic full episode per task).

The run directory has the layout of ``scripts/train.py`` runs, so ``tensorboard --logdir runs``
shows both side by side (step = environment steps per task = the multi-task runs' vector steps):

* ``config.yaml`` — the resolved settings, with the protocol stamped as in the multi-task runs
  (``env.protocol`` and ``protocol_details`` from :func:`agents.config.protocol_details`);
  ``balancer: stl`` names the group for ``scripts/aggregate.py``;
* TensorBoard events and ``metrics.jsonl``: ``train/critic_loss/<task>`` (½ the sum of the two
  critics' mean squared TD errors, SB3's loss and the multi-task runs' definition),
  ``train/actor_loss/<task>``, ``train/alpha/<task>``, ``train/alpha_loss/<task>``
  (``−log α (log π + target entropy)``, as the multi-task runs), their means over tasks ``train/critic_loss``,
  ``train/actor_loss``, ``train/alpha_loss`` (once every task logged that step),
  ``eval/success/<task>``, ``eval/return/<task>``, ``eval/success_mean``, ``perf/sps`` (environment
  steps per task per second of training, i.e. vector-step equivalents: all tasks advance one step),
  ``perf/updates_per_s`` (SB3 updates of all tasks per second), ``perf/sps/<task>``; text
  ``run/notes`` and ``run/config``; hparams with the config, written at start-up, whose metrics
  ``hparam/success_reported`` and ``hparam/success_<key>`` (:func:`agents.trainer.hparam_metrics`)
  are logged at every evaluation of all tasks;
* ``checkpoints/<task>/model.zip`` (SB3 ``save``), ``checkpoints/<task>/replay.pkl`` (unless
  ``--no-checkpoint-replay``) and ``checkpoints/state.json`` (steps per task, evaluation history),
  written at every ``--checkpoint-every`` boundary, when a task finishes, at the end and on Ctrl-C;
* ``results.json`` — the shape of the multi-task runs' (``summary`` from ``agents.trainer.summarize``,
  ``evals`` with ``step``/``success_mean``/``success``), plus the per-task ``history``.

``--resume`` continues the run in ``--logdir/--run-name``: finished tasks are skipped, the task in
progress is reloaded from its checkpoint (its replay buffer too, when saved) and its episode restarts
from a reset. Only ``--steps``, ``--logdir``, ``--run-name``, ``--device``, ``--log-every``,
``--checkpoint-every`` and ``--checkpoint-replay`` may differ from the run's ``config.yaml``
(benchmark, protocol, tasks, seed, evaluation schedule and SAC settings may not); the resumed run
appends to the logs.
Ctrl-C stops at the next environment step, saves and writes ``results.json``; a second Ctrl-C aborts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from envs.protocols import PROTOCOLS
from envs.task_sets import METAWORLD_BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]
#: The default preset (whose ``sac`` section every single-task SAC copies) per benchmark; others: MT10's.
PRESETS = {"MT10": ROOT / "configs" / "mt10_sac.yaml", "MT50": ROOT / "configs" / "mt50_sac.yaml"}
STATE_FORMAT = 1


# --- arguments ------------------------------------------------------------------------------------
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
    """The command line of ``scripts/train_stl.py`` (every default is documented in ``--help``)."""
    p = argparse.ArgumentParser(prog="train_stl.py", description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument(
        "--preset", default=None, help="multi-task preset whose sac/env sections to use (None: by --benchmark)"
    )
    p.add_argument(
        "--benchmark", default=None, choices=list(METAWORLD_BENCHMARKS), help="task set (None: the preset's)"
    )
    p.add_argument("--tasks", nargs="+", default=None, help="subset of the benchmark's tasks (None: all of them)")
    p.add_argument("--protocol", default=None, choices=sorted(PROTOCOLS), help="envs.protocols name (None: preset's)")
    p.add_argument("--steps", type=_int_at_least(1), default=3000, help="env steps per task (full budget: 2000000)")
    p.add_argument("--warmup", type=_int_at_least(0), default=None, help="random steps first (None: the preset's)")
    p.add_argument("--eval-every", type=_int_at_least(0), default=1500, help="evaluate every N steps; 0: at the end")
    p.add_argument("--eval-episodes", type=_int_at_least(1), default=None, help="per task (None: the protocol's)")
    p.add_argument("--buffer", type=_int_at_least(1), default=None, help="per-task capacity (None: 1M / tasks)")
    p.add_argument("--log-every", type=_int_at_least(1), default=100, help="train/* scalars every N steps")
    p.add_argument(
        "--checkpoint-every", type=_int_at_least(0), default=0, help="save every N steps; 0: at task end and Ctrl-C"
    )
    p.add_argument(
        "--checkpoint-replay",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="save each task's replay buffer with its model (resume without a cold buffer)",
    )
    p.add_argument("--seed", type=int, default=0, help="SB3 seed and Meta-World seed of every task")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:<i> | mps")
    p.add_argument("--logdir", default="runs", help="parent folder of run directories")
    p.add_argument("--run-name", default=None, help="run directory under --logdir (None: STL_<protocol>_s<seed>_<t>)")
    p.add_argument("--resume", action="store_true", help="continue --logdir/--run-name from its checkpoints")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and validate; a bad value exits with status 2 and a message naming it and what is valid."""
    p = build_parser()
    args = p.parse_args(argv)
    from agents.config import TrainConfig
    from envs.task_sets import check_task_name, resolve_tasks
    from mtrl.config import ConfigError, load_config

    if args.preset is None:
        args.preset = str(PRESETS.get(args.benchmark or "MT10", PRESETS["MT10"]))
    try:
        preset = load_config(TrainConfig, args.preset)
    except ConfigError as err:
        p.error(f"argument --preset: {err}")
    if preset.env.benchmark == "toy":
        p.error(f"argument --preset: {args.preset} is a toy-suite preset; the reference needs a Meta-World one")
    args.sac = preset.sac
    if args.benchmark is None:
        args.benchmark = preset.env.benchmark
        args.tasks = args.tasks or list(preset.env.tasks) or None
    args.protocol = args.protocol or preset.env.protocol
    open_set = args.benchmark in ("MT1", "custom")
    valid = None if open_set else resolve_tasks(args.benchmark)
    if args.tasks is None:
        if open_set:
            p.error(f"argument --tasks: --benchmark {args.benchmark} needs its task names")
        args.tasks = list(valid or ())
    try:
        for task in args.tasks:
            check_task_name(task, valid, key="--tasks", where=args.benchmark if valid else "Meta-World v3")
        # every task of the benchmark (for the buffer split): MT1/custom have exactly the given ones
        args.benchmark_tasks = list(resolve_tasks(args.benchmark, args.tasks if open_set else None))
    except ValueError as err:
        p.error(f"argument --tasks: {err}")
    if len(set(args.tasks)) != len(args.tasks):
        p.error(f"argument --tasks: duplicate task names in {args.tasks}")
    if args.resume and args.run_name is None:
        p.error("--resume needs --run-name <the run directory's name under --logdir>")
    from mtrl.device import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as err:
        p.error(f"argument --device: {err}")
    return args


# --- configuration --------------------------------------------------------------------------------
def resolve_config(args: argparse.Namespace, sb3_version: str, run_name: str) -> dict[str, Any]:
    """The run's settings as written to ``config.yaml``: the multi-task runs' key names where they
    exist, and their protocol stamp (``protocol_details`` from :func:`agents.config.protocol_details`)."""
    from agents.config import EnvConfig, TrainConfig, protocol_details
    from mtrl.config import config_to_dict
    from mtrl.device import resolve_device

    sac = config_to_dict(args.sac)
    protocol = PROTOCOLS[args.protocol]
    episodes = args.eval_episodes or protocol.eval_episodes_per_task
    env = EnvConfig(benchmark=args.benchmark, tasks=tuple(args.benchmark_tasks), protocol=args.protocol)
    stamp_cfg = TrainConfig(env=env, eval_episodes=episodes)
    preset = Path(args.preset).resolve()
    return {
        "method": "stl_sb3_sac",
        "balancer": "stl",  # group name for scripts/aggregate.py: no balancer, one SAC per task
        "env": {
            "benchmark": args.benchmark,
            "protocol": protocol.name,
            "tasks": list(args.tasks),
        },
        "sac": {
            "library": f"stable-baselines3 {sb3_version}",
            "preset": str(preset.relative_to(ROOT)) if preset.is_relative_to(ROOT) else str(preset),
            "hidden_sizes": list(sac["hidden_sizes"]),
            "lr": sac["lr"],
            "gamma": sac["gamma"],
            "tau": sac["tau"],
            "init_temperature": sac["init_temperature"],
            "batch_per_task": sac["batch_per_task"],
            "buffer_capacity": args.buffer or sac["buffer_capacity"] // len(args.benchmark_tasks),
            "warmup_steps": sac["warmup_steps"] if args.warmup is None else args.warmup,
            "updates_per_step": sac["updates_per_step"],
        },
        "seed": args.seed,
        "total_steps": args.steps,
        "eval_every": args.eval_every,
        "eval_episodes": episodes,
        "log_every": args.log_every,
        "checkpoint_every": args.checkpoint_every,
        "checkpoint_replay": args.checkpoint_replay,
        "logdir": args.logdir,
        "run_name": run_name,
        "device": str(resolve_device(args.device)),
        "protocol_details": protocol_details(stamp_cfg),
    }


#: Top-level settings a resumed run may change (as ``agents.config.RESUME_MAY_CHANGE``); all else must match.
RESUME_MAY_CHANGE = (
    "total_steps", "logdir", "run_name", "device", "log_every", "checkpoint_every", "checkpoint_replay"
)  # fmt: skip


def resume_mismatch(saved: dict[str, Any], new: dict[str, Any]) -> str | None:
    """None if ``new`` may resume the run of ``saved``; else which keys differ, with both values."""
    from mtrl.config import config_differences

    changed = config_differences(saved, new, RESUME_MAY_CHANGE)
    if not changed:
        return None
    return "; ".join(f"{key}: the run has {old!r}, now {now!r}" for key, old, now in changed)


# --- the run --------------------------------------------------------------------------------------
class STLRun:
    """One run: a SAC per task, trained in rounds, logged and checkpointed in the multi-task layout.

    ``STLRun(parse_args([...])).train()`` returns the results dict also written to ``results.json``.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        from agents.sb3 import import_sb3

        try:
            sb3 = import_sb3()
        except ImportError as err:
            raise SystemExit(f"scripts/train_stl.py: {err}") from err
        from agents.trainer import hparam_metrics
        from mtrl.config import save_config
        from mtrl.device import resolve_device
        from mtrl.logger import JsonlWriter, Logger, TensorBoardWriter, flatten_hparams, truncate_jsonl

        self.args, self.SAC = args, sb3.SAC
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_name = args.run_name or f"STL_{args.protocol}_s{args.seed}_{stamp}"
        self.cfg = resolve_config(args, sb3.__version__, run_name)
        self.protocol = PROTOCOLS[args.protocol]
        self.tasks: list[str] = list(args.tasks)
        self.device = resolve_device(args.device)
        self.run_dir = Path(args.logdir) / run_name
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.notes: list[str] = []
        self.steps = {t: 0 for t in self.tasks}  # env steps done per task (= SB3 num_timesteps)
        self.saved = {t: 0 for t in self.tasks}  # step of each task's checkpoint on disk (0 = none)
        self.history: dict[str, list[dict[str, float]]] = {t: [] for t in self.tasks}
        self.mean_logged: set[int] = set()
        if args.resume:
            self._load_state()
        elif (self.ckpt_dir / "state.json").exists():
            raise SystemExit(
                f"error: run directory {str(self.run_dir)!r} already has checkpoints; pass --resume or a new --run-name"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.run_dir / "config.yaml")
        # A fresh run starts with clean logs (purge_step 0 hides an earlier attempt's events); a resumed
        # one appends (tasks stop at different steps, so no single purge step fits them all).
        metrics_path = self.run_dir / "metrics.jsonl"
        if not args.resume:
            truncate_jsonl(metrics_path, None)
        tb = TensorBoardWriter(self.run_dir, purge_step=None if args.resume else 0)
        self.logger = Logger([tb, JsonlWriter(metrics_path)])
        metric_tags = hparam_metrics([{"success_mean": 0.0}], self.protocol)
        self.logger.hparams(flatten_hparams(self.cfg), dict.fromkeys(metric_tags, math.nan))
        self.models: dict[str, Any] = {}
        self.eval_envs: dict[str, Any] = {}
        self.pending_train: dict[int, dict[str, dict[str, float]]] = {}
        self.updates_done = 0
        self.train_seconds = 0.0
        self._stop = False
        self._bar: Any = None

    # --- public ------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop at the next environment step, save and write the results (what Ctrl-C does)."""
        self._stop = True

    def train(self) -> dict[str, Any]:
        """Train every task to ``--steps`` in rounds; returns (and writes) the results."""
        from tqdm.auto import tqdm

        from mtrl.interrupt import install_stop_handler

        args = self.args
        header = [
            f"protocol: {self.protocol.name}",
            "method: one stable-baselines3 SAC per task (the STL reference row)",
            f"tasks: {', '.join(self.tasks)}",
            *self.notes,
        ]
        start_step = min(self.steps.values())
        self.logger.text("run/notes", "\n\n".join(header), start_step)
        self.logger.text("run/config", "```\n" + json.dumps(self.cfg, indent=2) + "\n```", start_step)
        self._bar = tqdm(
            total=len(self.tasks) * args.steps,
            initial=sum(min(s, args.steps) for s in self.steps.values()),
            disable=not args.progress,
            unit="step",
        )
        restore_sigint = install_stop_handler(self.request_stop, lambda: self._stop)
        try:
            for boundary in self._boundaries():
                seconds_before, steps_before = self.train_seconds, dict(self.steps)
                updates_before = self.updates_done
                for task in self.tasks:
                    if self.steps[task] >= boundary:
                        if self.steps[task] >= args.steps and boundary == args.steps:
                            print(f"{task}: finished ({self.steps[task]} steps), skipped", file=sys.stderr)
                        continue
                    self._train_chunk(task, boundary)
                    if self._stop:
                        break
                    self._after_boundary(task, boundary)
                if self._stop:
                    break
                elapsed = self.train_seconds - seconds_before
                advanced = sum(self.steps[t] - steps_before[t] for t in self.tasks)
                if advanced and elapsed > 0:
                    perf = {
                        "perf/sps": advanced / len(self.tasks) / elapsed,
                        "perf/updates_per_s": (self.updates_done - updates_before) / elapsed,
                    }
                    self.logger.scalars(perf, boundary)
                    self._bar.set_postfix(sps=f"{perf['perf/sps']:.1f}", success=self._latest_mean())
            if self._stop:
                for task in self.models:
                    if self.saved[task] != self.steps[task]:
                        self._save(task)
                self._write_state()
                print(f"\ninterrupted: saved {self.ckpt_dir} at steps {self.steps}", file=sys.stderr)
        finally:
            self._bar.close()
            restore_sigint()
        return self._finish()

    # --- loop pieces ---------------------------------------------------------------------------
    def _boundaries(self) -> list[int]:
        """Round ends: every evaluation and checkpoint step, and the end."""
        a, marks = self.args, {self.args.steps}
        for every in (a.eval_every, a.checkpoint_every):
            if every:
                marks.update(range(every, a.steps, every))
        return sorted(marks)

    def _model(self, task: str) -> Any:
        """The task's SB3 SAC: already in memory, reloaded from its checkpoint, or new."""
        if task in self.models:
            return self.models[task]
        from stable_baselines3.common.logger import Logger as SB3Logger

        sac = self.cfg["sac"]
        from agents.sb3 import make_sb3_sac, make_task_env

        env = make_task_env(task, self.protocol, self.args.seed)
        path = self.ckpt_dir / task / "model.zip"
        if self.steps[task] > 0 and path.is_file():
            model = self.SAC.load(path, env=env, device=self.device)
            model._last_obs = None  # the interrupted episode restarts from a reset (train.py continues it on sync envs)
            replay = self.ckpt_dir / task / "replay.pkl"
            if replay.is_file():
                model.load_replay_buffer(replay)
            else:
                self.notes.append(f"{task}: resumed without a saved replay buffer: its buffer restarts empty")
            print(f"{task}: resumed at step {model.num_timesteps}", file=sys.stderr)
            self.steps[task] = int(model.num_timesteps)
        else:
            warmup = sac["warmup_steps"]
            model = make_sb3_sac(
                env,
                dataclasses.replace(self.args.sac, warmup_steps=warmup),
                seed=self.args.seed,
                device=str(self.device),
                buffer_size=sac["buffer_capacity"],
            )
        model.set_logger(SB3Logger(folder=None, output_formats=[]))  # we read its values, it writes nothing
        self.models[task] = model
        return model

    def _train_chunk(self, task: str, boundary: int) -> None:
        """Advance ``task`` to step ``boundary`` (or until a stop is requested)."""
        from stable_baselines3.common.callbacks import BaseCallback

        model = self._model(task)
        run = self

        class StepCallback(BaseCallback):
            def _on_step(self) -> bool:
                return run._after_env_step(task, int(self.num_timesteps))

        start_t, start_step, start_updates = time.perf_counter(), self.steps[task], int(model._n_updates)
        if self.steps[task] < boundary:
            model.learn(
                total_timesteps=boundary - self.steps[task],
                callback=StepCallback(),
                log_interval=None,  # SB3 never dumps (or clears) its logged values: we read them
                reset_num_timesteps=False,
                progress_bar=False,
            )
        self.steps[task] = int(model.num_timesteps)
        self.updates_done += int(model._n_updates) - start_updates
        elapsed = time.perf_counter() - start_t
        self.train_seconds += elapsed
        if elapsed > 0 and self.steps[task] > start_step:
            self.logger.scalars({f"perf/sps/{task}": (self.steps[task] - start_step) / elapsed}, self.steps[task])

    def _after_env_step(self, task: str, step: int) -> bool:
        """Called by SB3 after every env step of ``task``; returns False to stop its ``learn``."""
        self.steps[task] = step
        if self._bar is not None:
            self._bar.update(1)
        if step % self.args.log_every == 0:
            self._log_train(task, step)
        return not self._stop

    def _log_train(self, task: str, step: int) -> None:
        values = self.models[task].logger.name_to_value
        if "train/critic_loss" not in values:  # still warming up: no update yet
            return
        row = {
            "critic_loss": float(values["train/critic_loss"]),  # ½ Σ_k MSE: the multi-task agent's definition
            "actor_loss": float(values["train/actor_loss"]),
            "alpha": float(values["train/ent_coef"]),
            "alpha_loss": float(values.get("train/ent_coef_loss", math.nan)),
        }
        self.logger.scalars({f"train/{k}/{task}": v for k, v in row.items()}, step)
        pending = self.pending_train.setdefault(step, {})
        pending[task] = row
        if len(pending) == len(self.tasks):
            means = {
                f"train/{k}": float(np.mean([r[k] for r in pending.values()]))
                for k in ("critic_loss", "actor_loss", "alpha_loss")
            }
            self.logger.scalars(means, step)
            del self.pending_train[step]

    def _after_boundary(self, task: str, boundary: int) -> None:
        """Evaluate and checkpoint ``task`` at a round end as the schedule says."""
        a = self.args
        at_end = boundary >= a.steps
        if at_end or (a.eval_every and boundary % a.eval_every == 0):
            self._evaluate(task, boundary)
        if at_end or (a.checkpoint_every and boundary % a.checkpoint_every == 0):
            self._save(task)
            self._write_state()
        if at_end:  # a finished task leaves memory (its checkpoint holds it)
            self.models.pop(task)
            env = self.eval_envs.pop(task, None)
            if env is not None:
                env.close()

    def _evaluate(self, task: str, step: int) -> None:
        from agents.sb3 import SB3EvalAgent, make_task_eval_env
        from envs import evaluate

        if task not in self.eval_envs:
            self.eval_envs[task] = make_task_eval_env(task, self.protocol, self.args.seed)
        result = evaluate(SB3EvalAgent(self.models[task]), self.eval_envs[task], episodes_per_task=self._episodes())
        self.history[task].append(
            {"step": step, "success": float(result.success_mean), "return": float(result.return_per_task[0])}
        )
        self.logger.scalars(
            {f"eval/success/{task}": result.success_mean, f"eval/return/{task}": float(result.return_per_task[0])},
            step,
        )
        tqdm_write = getattr(self._bar, "write", print)
        tqdm_write(f"{task} step {step}: success {result.success_mean:.2f}")
        mean = self._mean_at(step)
        if mean is not None and step not in self.mean_logged:
            from agents.trainer import hparam_metrics

            evals = [e for e in self.evals() if e["step"] <= step]
            self.logger.scalars({"eval/success_mean": mean, **hparam_metrics(evals, self.protocol)}, step)
            self.mean_logged.add(step)
        self.logger.flush()

    def evals(self) -> list[dict[str, Any]]:
        """The multi-task runs' ``evals``: ``{step, success_mean, success: {task: rate}}`` for every
        step at which all tasks were evaluated, in step order."""
        out: list[dict[str, Any]] = []
        for step in sorted({int(h["step"]) for hs in self.history.values() for h in hs}):
            mean = self._mean_at(step)
            if mean is not None:
                success = {t: next(h["success"] for h in self.history[t] if h["step"] == step) for t in self.tasks}
                out.append({"step": step, "success_mean": mean, "success": success})
        return out

    def _episodes(self) -> int:
        return int(self.cfg["eval_episodes"])

    def _mean_at(self, step: int) -> float | None:
        """Mean success over tasks at ``step`` once every task has been evaluated there."""
        values = [next((h["success"] for h in self.history[t] if h["step"] == step), None) for t in self.tasks]
        return None if any(v is None for v in values) else float(np.mean(values))  # type: ignore[arg-type]

    def _latest_mean(self) -> str:
        steps = sorted(self.mean_logged)
        return f"{self._mean_at(steps[-1]):.2f}" if steps else "-"

    # --- state ---------------------------------------------------------------------------------
    def _save(self, task: str) -> None:
        """SB3 ``save`` (and replay buffer) of ``task``, written under temporary names and renamed."""
        model = self.models[task]
        folder = self.ckpt_dir / task
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model.tmp.zip")
        os.replace(folder / "model.tmp.zip", folder / "model.zip")
        if self.args.checkpoint_replay:
            model.save_replay_buffer(folder / "replay.tmp.pkl")
            os.replace(folder / "replay.tmp.pkl", folder / "replay.pkl")
        self.saved[task] = self.steps[task]

    def _write_state(self) -> None:
        state = {
            "format": STATE_FORMAT,
            "steps": self.saved,  # what the checkpoints on disk hold
            "history": self.history,
            "mean_logged": sorted(self.mean_logged),
        }
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt_dir / "state.tmp.json"
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.ckpt_dir / "state.json")

    def _load_state(self) -> None:
        """Read ``checkpoints/state.json`` and check that the run's config matches these arguments."""
        import yaml

        path = self.ckpt_dir / "state.json"
        if not path.is_file():
            raise SystemExit(
                f"error: --resume: nothing to resume in {str(self.run_dir)!r} (no checkpoints/state.json); "
                f"start it without --resume"
            )
        saved_cfg = yaml.safe_load((self.run_dir / "config.yaml").read_text()) or {}
        mismatch = resume_mismatch(saved_cfg, self.cfg)
        if mismatch is not None:
            raise SystemExit(
                f"error: --resume: {mismatch} ({self.run_dir / 'config.yaml'}); only "
                f"{', '.join(RESUME_MAY_CHANGE)} may change on resume: pass the run's values or a new --run-name"
            )
        state = json.loads(path.read_text())
        self.saved = {t: int(state["steps"][t]) for t in self.tasks}
        self.steps = dict(self.saved)
        self.history = {t: list(state["history"][t]) for t in self.tasks}
        self.mean_logged = set(state["mean_logged"])
        self.notes.append(f"resumed at steps {self.steps}")

    def _finish(self) -> dict[str, Any]:
        from agents.trainer import summarize

        evals = self.evals()
        steps = {t: min(self.steps[t], self.args.steps) for t in self.tasks}
        results = {
            "run_dir": str(self.run_dir),
            "method": "stl_sb3_sac",
            "protocol": self.protocol.name,
            "protocol_details": self.cfg["protocol_details"],
            "benchmark": self.args.benchmark,
            "tasks": self.tasks,
            "critic_balancer": "stl",
            "actor_balancer": "stl",
            "seed": self.args.seed,
            "steps": min(steps.values()),
            "steps_per_task": steps,
            "complete": all(s >= self.args.steps for s in steps.values()),
            "summary": summarize(evals, self.protocol),
            "evals": evals,
            "history": self.history,
        }
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=2))
        self.logger.close()
        for env in self.eval_envs.values():
            env.close()
        return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = STLRun(args).train()
    from agents.trainer import final_report

    print(final_report(results))
    if not results["complete"]:
        run_dir = Path(results["run_dir"])
        print(f"incomplete: continue with --logdir {run_dir.parent} --run-name {run_dir.name} --resume")
    print(f"TensorBoard: tensorboard --logdir {Path(results['run_dir']).parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
