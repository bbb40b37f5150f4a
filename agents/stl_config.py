"""Typed configuration of the single-task SAC reference (:mod:`agents.stl`, ``scripts/train_stl.py``).

:class:`STLConfig` holds what the command line says: one field per flag of ``scripts/train_stl.py``
(``eval_every`` ↔ ``--eval-every``), ``None`` where the flag defaults to the preset's value. It is
built with :mod:`mtrl.config`'s machinery (:func:`mtrl.config.update_config`), so an unknown key or a
badly typed value fails with the same one-line :class:`~mtrl.config.ConfigError` as the multi-task
configs. :func:`resolve_stl_config` reads the preset, fills the benchmark, tasks and protocol from it,
checks the task names and the device and returns a :class:`ResolvedSTLConfig`: what a run needs, with
the :class:`~envs.protocols.Protocol` and the device resolved once (nothing after it looks them up).
:func:`run_record` is the ``config.yaml`` a run writes (the multi-task runs' key names where they
exist, and their protocol stamp).

``scripts/train_stl.py CONFIG key=value`` reads it with :func:`load_stl_config` (errors name the key, as for
the other trainers). The deprecated ``--flag`` form maps its flags onto the same fields; for it, error messages
name keys as flags (:func:`flag`), and :class:`STLConfigError` carries the key so the script can prefix
``argument --x:``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from agents.config import SACConfig, TrainConfig
from envs.protocols import Protocol, get_protocol
from mtrl.config import ConfigError, config_to_dict, load_config

__all__ = [
    "PRESETS",
    "ROOT",
    "ResolvedSTLConfig",
    "STLConfig",
    "STLConfigError",
    "flag",
    "load_stl_config",
    "resolve_stl_config",
    "run_record",
]

#: The repository root (presets are named relative to it in ``config.yaml``).
ROOT = Path(__file__).resolve().parents[1]
#: The default preset (whose ``sac`` section every single-task SAC copies) per benchmark; others: MT10's.
PRESETS = {"MT10": ROOT / "configs" / "mt10_sac.yaml", "MT50": ROOT / "configs" / "mt50_sac.yaml"}


def flag(key: str) -> str:
    """The command-line flag of a :class:`STLConfig` field: ``"eval_every"`` → ``"--eval-every"``."""
    return "--" + key.replace("_", "-")


class STLConfigError(ConfigError):
    """A bad :class:`STLConfig` value; ``key`` names the field (None: several fields together).

    ``str(err)`` is ``"--key: detail"`` (or just the detail), so ``f"argument {err}"`` reads as argparse's
    own errors."""

    def __init__(self, key: str | None, detail: str) -> None:
        self.key, self.detail = key, detail
        super().__init__(f"{flag(key)}: {detail}" if key is not None else detail)


@dataclass(frozen=True)
class STLConfig:
    """What to train: one stable-baselines3 SAC per task with the ``sac`` section of a multi-task preset."""

    #: Keys of the run's ``config.yaml`` (:func:`run_record`) that a resumed run may change; all else must match.
    RESUME_MAY_CHANGE: ClassVar[frozenset[str]] = frozenset(
        {"total_steps", "logdir", "run_name", "device", "log_every", "checkpoint_every", "checkpoint_replay"}
    )

    #: Multi-task preset whose ``sac`` and ``env`` sections to use (None: ``configs/mt10_sac.yaml``, or
    #: ``configs/mt50_sac.yaml`` for ``benchmark: MT50``).
    preset: str | None = None
    #: Task set (None: the preset's ``env.benchmark``).
    benchmark: Literal["MT1", "MT10", "MT25", "MT50", "custom"] | None = None
    #: Subset of the benchmark's tasks, in training order (None: all of them; MT1/custom need them).
    tasks: tuple[str, ...] | None = None
    #: ``envs.protocols`` name (None: the preset's ``env.protocol``).
    protocol: Literal["metaworld-v3", "mtrl-legacy"] | None = None
    #: Environment steps per task (the full budget: 2,000,000).
    steps: int = 3000
    #: Uniformly random steps before learning (None: the preset's ``sac.warmup_steps``).
    warmup: int | None = None
    #: Evaluate every this many steps; 0: only at the end.
    eval_every: int = 1500
    #: Evaluation episodes per task (None: the protocol's).
    eval_episodes: int | None = None
    #: Replay capacity per task (None: the preset's ``sac.buffer_capacity`` split evenly over the
    #: benchmark's tasks).
    buffer: int | None = None
    #: Write the ``train/*`` scalars every this many steps.
    log_every: int = 100
    #: Save every this many steps; 0: only when a task finishes, at the end and on Ctrl-C.
    checkpoint_every: int = 0
    #: Save each task's replay buffer with its model (a resumed task then starts with a full buffer).
    checkpoint_replay: bool = True
    #: SB3 seed and Meta-World seed of every task.
    seed: int = 0
    #: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:<i>", "mps".
    device: str = "auto"
    #: Parent folder of run directories.
    logdir: str = "runs"
    #: Run directory under ``logdir`` (None: ``STL_<protocol>_s<seed>_<UTC yyyymmdd-HHMMSS>``).
    run_name: str | None = None
    #: Continue ``logdir/run_name`` from its checkpoints.
    resume: bool = False
    #: Show a tqdm progress bar.
    progress: bool = True

    def __post_init__(self) -> None:
        at_least = {"steps": 1, "warmup": 0, "eval_every": 0, "eval_episodes": 1, "buffer": 1, "log_every": 1,
                    "checkpoint_every": 0}  # fmt: skip
        for key, minimum in at_least.items():
            value = getattr(self, key)
            if value is not None and value < minimum:
                raise STLConfigError(key, f"expected an integer >= {minimum}, got {value}")


@dataclass(frozen=True)
class ResolvedSTLConfig:
    """A checked :class:`STLConfig` with everything the preset decides filled in."""

    #: The configuration with ``preset``, ``benchmark``, ``tasks`` and ``protocol`` set.
    cfg: STLConfig
    #: The preset's SAC settings, with ``warmup_steps`` from ``--warmup`` when given.
    sac: SACConfig
    #: Every task of the benchmark (MT1/custom: the given ones): the replay capacity is split over them.
    benchmark_tasks: tuple[str, ...]
    #: Replay capacity of each task's SAC.
    buffer_capacity: int
    #: Evaluation episodes per task.
    eval_episodes: int
    #: The protocol ``cfg.protocol`` names (looked up once, here).
    protocol: Protocol
    #: The device ``cfg.device`` resolves to (``"auto"`` → ``"cuda"`` or ``"cpu"``), as ``torch.device`` spells it.
    device: str

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this run trains, in order."""
        assert self.cfg.tasks is not None  # filled by resolve_stl_config
        return self.cfg.tasks


def resolve_stl_config(cfg: STLConfig) -> ResolvedSTLConfig:
    """Read ``cfg.preset`` and fill the benchmark, tasks, protocol, SAC settings and evaluation size.

    Raises :class:`STLConfigError` naming the flag: an unreadable or toy preset, an unknown,
    duplicated or missing task, ``--resume`` without ``--run-name``, a malformed device."""
    import dataclasses

    from envs.task_sets import check_task_name, resolve_tasks
    from mtrl.device import resolve_device

    preset_path = cfg.preset or str(PRESETS.get(cfg.benchmark or "MT10", PRESETS["MT10"]))
    try:  # only the preset's sac and env sections are used: read them, do not resolve a multi-task run
        preset = load_config(TrainConfig, preset_path, resolve=False)
    except ConfigError as err:
        raise STLConfigError("preset", str(err)) from err
    if preset.env.benchmark == "toy":
        raise STLConfigError("preset", f"{preset_path} is a toy-suite preset; the reference needs a Meta-World one")
    benchmark, tasks = cfg.benchmark, list(cfg.tasks) if cfg.tasks is not None else None
    if benchmark is None:
        benchmark = preset.env.benchmark
        tasks = tasks or list(preset.env.tasks) or None
    protocol = cfg.protocol or preset.env.protocol
    open_set = benchmark in ("MT1", "custom")
    valid = None if open_set else resolve_tasks(benchmark)
    if tasks is None:
        if open_set:
            raise STLConfigError("tasks", f"{flag('benchmark')} {benchmark} needs its task names")
        tasks = list(valid or ())
    try:
        for task in tasks:
            check_task_name(task, valid, key=flag("tasks"), where=benchmark if valid else "Meta-World v3")
        # every task of the benchmark (for the buffer split): MT1/custom have exactly the given ones
        benchmark_tasks = resolve_tasks(benchmark, tasks if open_set else None)
    except ValueError as err:
        raise STLConfigError("tasks", str(err)) from err
    if len(set(tasks)) != len(tasks):
        raise STLConfigError("tasks", f"duplicate task names in {tasks}")
    if cfg.resume and cfg.run_name is None:
        raise STLConfigError(
            None, f"{flag('resume')} needs {flag('run_name')} <the run directory's name under {flag('logdir')}>"
        )
    try:
        device = str(resolve_device(cfg.device))
    except ValueError as err:
        raise STLConfigError("device", str(err)) from err
    spec = get_protocol(protocol)
    filled = dataclasses.replace(
        cfg,
        preset=preset_path,
        benchmark=benchmark,
        tasks=tuple(tasks),
        protocol=protocol,  # type: ignore[arg-type]
    )
    sac = preset.sac if cfg.warmup is None else dataclasses.replace(preset.sac, warmup_steps=cfg.warmup)
    return ResolvedSTLConfig(
        cfg=filled,
        sac=sac,
        benchmark_tasks=tuple(benchmark_tasks),
        buffer_capacity=cfg.buffer or preset.sac.buffer_capacity // len(benchmark_tasks),
        eval_episodes=cfg.eval_episodes or spec.eval_episodes_per_task,
        protocol=spec,
        device=device,
    )


def load_stl_config(config: str, overrides: Sequence[str] = ()) -> ResolvedSTLConfig:
    """The resolved configuration of ``scripts/train_stl.py CONFIG key=value ...``: ``CONFIG`` is the multi-task
    preset whose ``sac`` and ``env`` sections the reference copies (the ``preset`` key), the overrides are
    :class:`STLConfig` keys (``steps=2000000 tasks=[reach-v3,push-v3] seed=1``), as ``scripts/train.py`` takes
    them, so ``scripts/sweep.py`` launches the reference like the other trainers.

    Raises :class:`~mtrl.config.ConfigError`, one line naming the key (not the flag): an unknown key, a bad
    value, ``preset`` given again as an override, or any problem :func:`resolve_stl_config` finds."""
    given = [item for item in overrides if item.split("=", 1)[0].strip() == "preset"]
    if given:
        raise ConfigError(f"{given[0]!r}: the preset is CONFIG, the first argument ({config!r}); drop the override")
    try:
        return resolve_stl_config(load_config(STLConfig, None, [f"preset={config}", *overrides]))
    except STLConfigError as err:
        if err.key is None:
            raise ConfigError(err.detail) from None
        raise ConfigError(f"bad value for {err.key!r}: {err.detail}") from None


def run_record(settings: ResolvedSTLConfig, sb3_version: str, run_name: str) -> dict[str, Any]:
    """The run's settings as written to ``config.yaml``: the multi-task runs' key names where they
    exist, and their protocol stamp (``protocol_details``: :meth:`envs.protocols.Protocol.details` with
    the run's evaluation episodes and the protocol's cadence, as :func:`agents.config.protocol_details`).

    A resumed run compares this record with the saved one, so its keys and values stay as they are."""
    cfg = settings.cfg
    assert cfg.benchmark is not None and cfg.preset is not None
    sac = config_to_dict(settings.sac)
    preset = Path(cfg.preset).resolve()
    return {
        "method": "stl_sb3_sac",
        "balancer": "stl",  # group name for scripts/aggregate.py: no balancer, one SAC per task
        "env": {
            "benchmark": cfg.benchmark,
            "protocol": settings.protocol.name,
            "tasks": list(settings.tasks),
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
            "buffer_capacity": settings.buffer_capacity,
            "warmup_steps": sac["warmup_steps"],
            "updates_per_step": sac["updates_per_step"],
        },
        "seed": cfg.seed,
        "total_steps": cfg.steps,
        "eval_every": cfg.eval_every,
        "eval_episodes": settings.eval_episodes,
        "log_every": cfg.log_every,
        "checkpoint_every": cfg.checkpoint_every,
        "checkpoint_replay": cfg.checkpoint_replay,
        "logdir": cfg.logdir,
        "run_name": run_name,
        "device": settings.device,
        "protocol_details": settings.protocol.details(settings.eval_episodes),
    }
