"""Typed configuration of a multi-task SAC run (loaded with :func:`mtrl.config.load_config`).

Every field documents its default and where the default comes from. Presets live in
``configs/{mt10,mt50,toy}_sac.yaml``; ``scripts/train.py CONFIG key=value ...`` overrides any field
with dotted keys (``sac.batch_per_task=64``). Unknown keys and bad values fail at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mtrl.balancers import BALANCERS
from mtrl.config import ConfigError, update_config

__all__ = ["EnvConfig", "SACConfig", "TrainConfig", "resolve_balancers"]


@dataclass(frozen=True)
class EnvConfig:
    """Which multi-task suite to train on."""

    #: "MT10" | "MT50" (Meta-World v3 through ``gymnasium.make_vec``) or "toy" (pure-numpy suite).
    benchmark: Literal["MT10", "MT50", "toy"] = "MT10"
    #: Evaluation/episode protocol (``envs.protocols``): "metaworld-v3" (random goals, 500 steps, v2
    #: reward; Meta-World+ paper) or "mtrl-legacy" (fixed goals, 150 steps; CAGrad/Nash-MTL/FAMO/
    #: Aligned-MTL tables) for MT10/MT50; "toy" for the toy suite. Stamped into config and hparams.
    protocol: Literal["metaworld-v3", "mtrl-legacy", "toy"] = "metaworld-v3"
    #: gymnasium vectorisation: "sync" is faster on 2 cores (docs/metaworld.md §6.1), "async" scales.
    vector_strategy: Literal["sync", "async"] = "sync"
    #: toy suite only: number of tasks (goals), each one sub-env.
    toy_num_tasks: int = 4
    #: toy suite only: episode length in steps (``envs.toy.make_toy_envs`` default).
    toy_episode_steps: int = 40

    def __post_init__(self) -> None:
        if (self.benchmark == "toy") != (self.protocol == "toy"):
            raise ConfigError(
                f"env.protocol={self.protocol!r} does not fit env.benchmark={self.benchmark!r}: the toy suite "
                f"uses protocol 'toy'; MT10/MT50 use 'metaworld-v3' or 'mtrl-legacy'"
            )


@dataclass(frozen=True)
class SACConfig:
    """Soft actor-critic hyper-parameters (defaults: mtrl ``config/agent/state_sac.yaml`` and CARE App. B)."""

    #: Shared-trunk widths of actor and critics: 3×400 ReLU (mtrl ``metaworld_{actor,critic}.yaml``).
    hidden_sizes: tuple[int, ...] = (400, 400, 400)
    #: Append the task one-hot to the network input (mtrl's MT-SAC does not: task identity enters
    #: through the per-task heads and temperatures only; docs/metaworld.md §1.4).
    use_one_hot_input: bool = True
    #: Adam learning rate of actor and critics (mtrl ``config/agent/optimizers/metaworld_*.yaml``).
    lr: float = 3e-4
    #: Adam learning rate of the per-task temperatures (same source).
    alpha_lr: float = 3e-4
    #: Discount γ (mtrl ``state_sac.yaml``).
    gamma: float = 0.99
    #: Polyak coefficient τ of the target critics (mtrl ``state_sac.yaml``: critic_tau 0.005).
    tau: float = 0.005
    #: Initial entropy temperature α of every task (mtrl ``state_sac.yaml``: init_temperature 1.0).
    init_temperature: float = 1.0
    #: Transitions per task in a batch (mtrl: batch 1280 = 128 × 10 tasks on MT10).
    batch_per_task: int = 128
    #: Replay capacity in total transitions (mtrl ``config/replay_buffer/mtrl.yaml``).
    buffer_capacity: int = 1_000_000
    #: Vector steps of uniformly random actions before learning (mtrl ``experiment/metaworld.yaml``).
    warmup_steps: int = 1500
    #: Gradient updates per vector-env step (mtrl: 1).
    updates_per_step: int = 1
    #: Max global grad norm per network after balancing; None = no clipping (mtrl does not clip;
    #: Meta-World+ uses 1.0).
    grad_clip: float | None = None
    #: Engine strategy ("auto" picks the fastest valid one; see mtrl.engine).
    engine_strategy: Literal["auto", "reference", "batched", "task_partitioned", "representation"] = "auto"
    #: Also compute G (grad norms, cosines, condition number) for loss weightings such as ew, which
    #: otherwise cost exactly plain training and report no G statistics (GradientEngine diagnostics).
    engine_diagnostics: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run."""

    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    #: Balancer of both loss groups (registry key of ``mtrl.balancers.BALANCERS``); "ew" = plain MT-SAC.
    balancer: str = "ew"
    #: Overrides ``balancer`` for the critic losses (None = use ``balancer``).
    critic_balancer: str | None = None
    #: Overrides ``balancer`` for the actor losses (None = use ``balancer``; a balancer that needs
    #: positive losses is replaced by "ew" for the actor, whose losses can be negative).
    actor_balancer: str | None = None
    #: Hyper-parameters of both balancers (e.g. ``{c: 0.4}`` for cagrad); must be valid for them.
    balancer_hparams: dict[str, Any] = field(default_factory=dict)
    #: Hyper-parameters of the critic balancer only (None = ``balancer_hparams``).
    critic_balancer_hparams: dict[str, Any] | None = None
    #: Hyper-parameters of the actor balancer only (None = ``balancer_hparams``).
    actor_balancer_hparams: dict[str, Any] | None = None
    #: Seed of networks, replay sampling, exploration and environments.
    seed: int = 0
    #: Training length in vector-env steps (mtrl: 2M, i.e. 2M transitions per task).
    total_steps: int = 2_000_000
    #: Evaluate every this many vector steps (mtrl ``experiment/metaworld.yaml``: 10,000); 0 = only at the end.
    eval_every: int = 10_000
    #: Evaluation episodes per task; None = the protocol's (metaworld-v3: 50, Meta-World+;
    #: mtrl-legacy: 1, mtrl's documented commands; toy: 10).
    eval_episodes: int | None = None
    #: Write training scalars (losses, alphas, balancer report, perf/sps) every this many vector steps.
    log_every: int = 1000
    #: Save a checkpoint every this many vector steps (0 = only at the end and on Ctrl-C).
    checkpoint_every: int = 50_000
    #: Include the replay buffer in checkpoints (large: ~1M transitions); needed for exact resume.
    checkpoint_replay: bool = True
    #: Parent folder of run directories.
    logdir: str = "runs"
    #: Name of the run directory (None = "<benchmark>_<balancer>_s<seed>").
    run_name: str | None = None
    #: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", "mps".
    device: str = "auto"
    #: Continue the run found in ``logdir/run_name`` from its last checkpoint.
    resume: bool = False
    #: Show a tqdm progress bar.
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("balancer", "critic_balancer", "actor_balancer"):
            value = getattr(self, key)
            if value is not None and value not in BALANCERS:
                raise ConfigError(f"bad value {value!r} for {key!r}; valid choices: {', '.join(sorted(BALANCERS))}")
        positive = {
            "total_steps": self.total_steps,
            "eval_episodes": 1 if self.eval_episodes is None else self.eval_episodes,
            "sac.batch_per_task": self.sac.batch_per_task,
            "sac.buffer_capacity": self.sac.buffer_capacity,
            "sac.updates_per_step": self.sac.updates_per_step,
            "log_every": self.log_every,
            "env.toy_num_tasks": self.env.toy_num_tasks,
            "env.toy_episode_steps": self.env.toy_episode_steps,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"bad value {value!r} for {key!r}: expected a positive integer")
        non_negative = {
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "sac.warmup_steps": self.sac.warmup_steps,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"bad value {value!r} for {key!r}: expected an integer >= 0")
        if not self.sac.hidden_sizes or min(self.sac.hidden_sizes) < 1:
            raise ConfigError(f"bad value {self.sac.hidden_sizes!r} for 'sac.hidden_sizes': expected positive widths")
        if not 0.0 < self.sac.tau <= 1.0 or not 0.0 <= self.sac.gamma <= 1.0:
            raise ConfigError(
                f"bad sac.tau={self.sac.tau!r} / sac.gamma={self.sac.gamma!r}: need 0<tau<=1, 0<=gamma<=1"
            )
        if self.sac.init_temperature <= 0 or self.sac.lr <= 0 or self.sac.alpha_lr <= 0:
            raise ConfigError("sac.init_temperature, sac.lr and sac.alpha_lr must be > 0")


def resolve_balancers(cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """Fill ``critic_balancer``/``actor_balancer`` and their hparams explicitly.

    Returns the resolved config (saved with the run) and human-readable notes on every automatic
    choice (logged as text). A balancer with ``positive_losses`` (uw, imtl_l, imtl, famo,
    task_tensioner, dwa) cannot take the actor loss ``α log π − Q`` (any sign), so the actor uses
    "ew" — as FAMO's own SAC port does (critic only; docs/metaworld.md §2).
    """
    notes: list[str] = []
    critic = cfg.critic_balancer or cfg.balancer
    actor = cfg.actor_balancer or cfg.balancer
    critic_hp = dict(cfg.balancer_hparams if cfg.critic_balancer_hparams is None else cfg.critic_balancer_hparams)
    actor_hp = dict(cfg.balancer_hparams if cfg.actor_balancer_hparams is None else cfg.actor_balancer_hparams)
    if BALANCERS[actor].positive_losses:
        if cfg.actor_balancer is not None:
            raise ConfigError(
                f"actor_balancer={actor!r} needs strictly positive losses, but SAC actor losses can be negative; "
                f"choose another actor_balancer (e.g. 'ew') or leave it unset"
            )
        notes.append(
            f"balancer {actor!r} needs positive losses: it balances the critic; the actor uses 'ew' "
            f"(actor losses α·logπ − Q can be negative)."
        )
        actor, actor_hp = "ew", {}
    resolved = update_config(
        cfg,
        {
            "critic_balancer": critic,
            "actor_balancer": actor,
            "critic_balancer_hparams": critic_hp,
            "actor_balancer_hparams": actor_hp,
        },
    )
    return resolved, notes
