"""The schema of a multi-task SAC run: :class:`TrainConfig` with its :class:`EnvConfig` and :class:`SACConfig`.

Every field documents its default and where the default comes from, and ``__post_init__`` checks every value
that can be judged alone (a one-line :class:`~mtrl.config.ConfigError`). What depends on the machine or the
registries is filled by :meth:`TrainConfig.resolve` (:mod:`agents.resolution`: protocol and device, with
:mod:`agents.balancer_policy`: the balancers of the two loss groups). :mod:`agents.config` re-exports all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agents.resolution import resolve_train_config
from envs.protocols import Protocol
from envs.task_sets import resolve_tasks
from mtrl.balancers import BALANCERS
from mtrl.config import ConfigError
from mtrl.device import check_device_name

__all__ = ["EnvConfig", "SACConfig", "TrainConfig", "num_tasks_of"]


@dataclass(frozen=True)
class EnvConfig:
    """Which multi-task suite to train on."""

    #: "MT1" (one task), "MT10", "MT25", "MT50" (Meta-World's fixed sets) or "custom" (any list of
    #: v3 tasks), built through gymnasium's Meta-World ids (``envs.metaworld``); or "toy" (pure numpy).
    benchmark: Literal["MT1", "MT10", "MT25", "MT50", "custom", "toy"] = "MT10"
    #: The tasks, in env (= one-hot) order: exactly one for MT1 (``'env.tasks=[reach-v3]'``), any
    #: distinct v3 names for custom; empty for MT10/MT25/MT50 and toy. Saved resolved in config.yaml
    #: (the benchmark's full list), so every run records what it trained on.
    tasks: tuple[str, ...] = ()
    #: Evaluation/episode protocol (``envs.protocols``): "metaworld-v3" (random goals, 500 steps, v2
    #: reward; Meta-World+ paper) or "mtrl-legacy" (fixed goals, 150 steps; CAGrad/Nash-MTL/FAMO/
    #: Aligned-MTL tables) for Meta-World; "toy" for the toy suite. Stamped into config and hparams.
    protocol: Literal["metaworld-v3", "mtrl-legacy", "toy"] = "metaworld-v3"
    #: gymnasium vectorisation: "sync" is faster on 2 cores (one process steps every task), "async"
    #: runs one process per task.
    vector_strategy: Literal["sync", "async"] = "sync"
    #: toy suite only: number of tasks (goals), each one sub-env.
    toy_num_tasks: int = 4
    #: toy suite only: episode length in steps (``envs.toy.make_toy_envs`` default).
    toy_episode_steps: int = 40

    def __post_init__(self) -> None:
        if (self.benchmark == "toy") != (self.protocol == "toy"):
            raise ConfigError(
                f"env.protocol={self.protocol!r} does not fit env.benchmark={self.benchmark!r}: the toy suite "
                f"uses protocol 'toy'; Meta-World benchmarks use 'metaworld-v3' or 'mtrl-legacy'"
            )
        if self.benchmark == "toy":
            if self.tasks:
                raise ConfigError(f"env.tasks={list(self.tasks)} is for Meta-World; the toy suite takes toy_num_tasks")
            return
        try:
            resolve_tasks(self.benchmark, self.tasks)
        except ValueError as err:
            raise ConfigError(str(err)) from err

    @property
    def task_names(self) -> tuple[str, ...]:
        """The tasks in env order (Meta-World: :func:`envs.task_sets.resolve_tasks`; toy: ``reach-<t>``)."""
        if self.benchmark == "toy":
            return tuple(f"reach-{t}" for t in range(self.toy_num_tasks))
        return resolve_tasks(self.benchmark, self.tasks)


@dataclass(frozen=True)
class SACConfig:
    """Soft actor-critic hyper-parameters (defaults: mtrl ``config/agent/state_sac.yaml`` and CARE App. B)."""

    #: Keys of earlier versions and what replaced them (named by the unknown-key error).
    RENAMED: ClassVar[dict[str, str]] = {"use_one_hot_input": "task_input (true -> one_hot, false -> none)"}

    #: Shared-trunk widths of actor and critics: 3×400 ReLU (mtrl ``metaworld_{actor,critic}.yaml``).
    #: One entry per hidden layer, so it sets width and depth.
    hidden_sizes: tuple[int, ...] = (400, 400, 400)
    #: Actor trunk widths (width and depth); None = ``hidden_sizes``. The rule for both networks: a
    #: network's own field when set, else ``hidden_sizes`` (:attr:`actor_widths`, :attr:`critic_widths`).
    #: Meta-World+ (McLean et al. 2025) scales the critic more than the actor: critic 1024 with
    #: actor 400 reaches ≈ 0.89 on MT10 (``configs/mt10_mwplus_critic1024.yaml``).
    actor_hidden_sizes: tuple[int, ...] | None = None
    #: Critic trunk widths (both Q-networks; width and depth); None = ``hidden_sizes``.
    critic_hidden_sizes: tuple[int, ...] | None = None
    #: LayerNorm in actor and critic trunks as Meta-World+'s vanilla MLP places it
    #: (``metaworld_algorithms/nn/base.py``): before every hidden layer but the first and before the
    #: heads (``mtrl.nn.VanillaMLP``). False = plain ``Linear → ReLU`` trunks.
    layer_norm: bool = False
    #: Skip connections in actor and critic trunks as the same MLP defines them: ``x ← x + relu(W x + b)``
    #: for every layer whose input width equals its output width (``mtrl.nn.VanillaMLP``).
    skip_connections: bool = False
    #: How the trunks learn which task a row belongs to (``agents.networks.TaskInput``): "none" (only
    #: the per-task heads and temperatures carry the task), "one_hot" (the task one-hot appended to
    #: the input; a constant 1 at T = 1) or "embedding" (a learned vector per task appended).
    task_input: Literal["none", "one_hot", "embedding"] = "one_hot"
    #: Size of the learned task embedding (``task_input: embedding`` only).
    task_embedding_dim: int = 16
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
    #: Max global grad norm per network (actor; both critics together) after balancing; None = no
    #: clipping (mtrl does not clip; Meta-World+'s MTMHSAC clips both networks at 1.0). The temperatures
    #: are never clipped (nor are they in Meta-World+). ``actor_grad_clip``/``critic_grad_clip`` override it.
    grad_clip: float | None = None
    #: Engine strategy ("auto" picks the fastest valid one; see mtrl.engine). "representation" is
    #: refused: SAC has no single shared representation (two critic trunks).
    engine_strategy: Literal["auto", "reference", "batched", "task_partitioned", "representation"] = "auto"
    #: Compute G (grad norms, cosines, condition number) for loss weightings such as ew at EVERY
    #: update. False (default): only at the updates whose metrics are logged (every ``log_every``
    #: steps), so ew still reports ``balancer/*/cos_min`` and ``cond`` at the cost of plain training.
    engine_diagnostics: bool = False
    # --- the update details in which Meta-World+ (rainx0r/metaworld-algorithms) differs from mtrl ---------
    # Defaults: today's behaviour (facebookresearch/mtrl and SB3). ``configs/mt10_mwplus.yaml`` sets
    # Meta-World+'s; docs/mwplus.md proves that update equal to the reference's at T = 10.
    #: Actor's max global grad norm; None = ``grad_clip``.
    actor_grad_clip: float | None = None
    #: Critics' max global grad norm (both Q-networks together); None = ``grad_clip``.
    critic_grad_clip: float | None = None
    #: How a gradient whose global norm ``‖g‖`` exceeds the bound ``c`` is scaled: "torch"
    #: (``torch.nn.utils.clip_grad_norm_``: ``g · c / (‖g‖ + 1e-6)``) or "optax" (``optax.clip_by_global_norm``:
    #: ``g / ‖g‖ · c``, used by Meta-World+).
    grad_clip_formula: Literal["torch", "optax"] = "torch"
    #: Adam ``eps`` of the actor (torch's default 1e-8; Meta-World+ ``config/optim.py``: 1e-5).
    actor_adam_eps: float = 1e-8
    #: Adam ``eps`` of the critics (same defaults).
    critic_adam_eps: float = 1e-8
    #: Adam ``eps`` of the temperatures (same defaults).
    alpha_adam_eps: float = 1e-8
    #: How the per-task temperature losses are combined: "sum" (``Σ_t L^α_t``, today's) or "mean"
    #: (``mean_t L^α_t`` = the mean over all rows of a stratified batch: Meta-World+ ``rl/algorithms/mtsac.py``).
    #: The critic and actor losses are combined by their balancer instead: ``ew`` with ``mean: true``
    #: (``balancer_hparams``) is Meta-World+'s mean over all rows.
    alpha_loss_reduction: Literal["sum", "mean"] = "sum"
    #: The tanh change of variables in ``log π``: "epsilon" (``Σ log(1 − tanh(u)² + 1e-6)``, SAC's paper
    #: code, SB3, mtrl) or "exact" (``Σ 2 (log 2 − u − softplus(−2u))``, distrax's ``Tanh`` bijector: Meta-World+).
    tanh_log_det: Literal["epsilon", "exact"] = "epsilon"
    #: Trunk initialisation of actor and critics: "torch" (``nn.Linear``'s default) or "he_uniform"
    #: (kernels uniform ±√(6/fan_in), biases 0: Meta-World+ ``config/nn.py``).
    trunk_init: Literal["torch", "he_uniform"] = "torch"
    #: Actor head init: None = ``nn.Linear``-like per task (uniform ±1/√fan_in); a bound b = kernel and bias
    #: uniform(±b) (Meta-World+ ``rl/networks.py``: 1e-3).
    actor_head_init: float | None = None
    #: Critic head init, as ``actor_head_init`` (Meta-World+ ``rl/networks.py``: 3e-3).
    critic_head_init: float | None = None
    #: Order of the Q-networks' input before the task input: "obs_action" (today's) or "action_obs"
    #: (Meta-World+ ``rl/networks.py``: ``concat(action, observation with one-hot)``). A relabelling of the
    #: first layer's columns only; it exists so reference weights load without permuting them.
    q_input_order: Literal["obs_action", "action_obs"] = "obs_action"

    @property
    def actor_widths(self) -> tuple[int, ...]:
        """The actor's trunk widths: ``actor_hidden_sizes``, else ``hidden_sizes``."""
        return self.hidden_sizes if self.actor_hidden_sizes is None else self.actor_hidden_sizes

    @property
    def critic_widths(self) -> tuple[int, ...]:
        """The critics' trunk widths: ``critic_hidden_sizes``, else ``hidden_sizes``."""
        return self.hidden_sizes if self.critic_hidden_sizes is None else self.critic_hidden_sizes

    def __post_init__(self) -> None:
        for key in ("hidden_sizes", "actor_hidden_sizes", "critic_hidden_sizes"):
            widths = getattr(self, key)
            if widths is not None and (not widths or min(widths) < 1):
                raise ConfigError(f"bad value {widths!r} for 'sac.{key}': expected a non-empty list of positive widths")
        if self.task_embedding_dim < 1:
            raise ConfigError(f"bad value {self.task_embedding_dim!r} for 'sac.task_embedding_dim': expected >= 1")
        if self.engine_strategy == "representation":
            raise ConfigError(
                "bad value 'representation' for 'sac.engine_strategy': SAC passes no shared representation "
                "(twin critics have two trunks); valid choices: 'auto', 'reference', 'batched', 'task_partitioned'"
            )
        positive = {
            "grad_clip": self.grad_clip,
            "actor_grad_clip": self.actor_grad_clip,
            "critic_grad_clip": self.critic_grad_clip,
            "actor_adam_eps": self.actor_adam_eps,
            "critic_adam_eps": self.critic_adam_eps,
            "alpha_adam_eps": self.alpha_adam_eps,
            "actor_head_init": self.actor_head_init,
            "critic_head_init": self.critic_head_init,
        }
        for key, value in positive.items():
            if value is not None and not value > 0:
                nullable = ", or null" if key.endswith(("_clip", "_init")) else ""
                raise ConfigError(f"bad value {value!r} for 'sac.{key}': expected a number > 0{nullable}")

    def clip_of(self, network: Literal["actor", "critic"]) -> float | None:
        """The max global grad norm of ``network``: its own field, else ``grad_clip`` (None: no clipping)."""
        own = self.actor_grad_clip if network == "actor" else self.critic_grad_clip
        return self.grad_clip if own is None else own


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run."""

    #: Keys a ``resume=true`` run may change (nothing else may differ from the saved config.yaml).
    RESUME_MAY_CHANGE: ClassVar[frozenset[str]] = frozenset(
        {"total_steps", "logdir", "run_name", "device", "resume", "progress", "log_every", "checkpoint_every",
         "checkpoint_replay"}
    )  # fmt: skip

    env: EnvConfig = field(default_factory=EnvConfig)
    sac: SACConfig = field(default_factory=SACConfig)
    #: Balancer of both loss groups (registry key of ``mtrl.balancers.BALANCERS``); "ew" = plain MT-SAC.
    balancer: str = "ew"
    #: Overrides ``balancer`` for the critic losses (None = use ``balancer``).
    critic_balancer: str | None = None
    #: Overrides ``balancer`` for the actor losses (None = use ``balancer``; a balancer that needs
    #: positive losses is replaced by "ew" for the actor, whose losses can be negative).
    actor_balancer: str | None = None
    #: Hyper-parameters of ``balancer`` (e.g. ``{c: 0.4}`` for cagrad). They apply only to the groups
    #: whose balancer comes from ``balancer`` (critic/actor_balancer unset or equal to it), never to an
    #: explicitly different ``critic_balancer``/``actor_balancer``.
    balancer_hparams: dict[str, Any] = field(default_factory=dict)
    #: Hyper-parameters of the critic balancer (None = ``balancer_hparams`` if the critic uses
    #: ``balancer``, else the balancer's defaults). Randomised balancers (pcgrad, rlw, graddrop, dgr)
    #: get ``seed = 2·seed`` unless set here.
    critic_balancer_hparams: dict[str, Any] | None = None
    #: Hyper-parameters of the actor balancer (as for the critic; default seed ``2·seed + 1``).
    actor_balancer_hparams: dict[str, Any] | None = None
    #: Seed of networks, replay sampling, exploration and environments.
    seed: int = 0
    #: Training length in vector-env steps (mtrl: 2M, i.e. 2M transitions per task).
    total_steps: int = 2_000_000
    #: Evaluate every this many vector steps; 0 = only at the end; None = the protocol's cadence
    #: (metaworld-v3: 20,000, Meta-World+'s MT10 script; mtrl-legacy: 10,000, mtrl
    #: ``experiment/metaworld.yaml``; toy: 500). Saved resolved in config.yaml.
    eval_every: int | None = None
    #: Evaluation episodes per task; None = the protocol's (metaworld-v3: 50, Meta-World+;
    #: mtrl-legacy: 1, mtrl's documented commands; toy: 10). Saved resolved in config.yaml.
    eval_episodes: int | None = None
    #: Write training scalars (losses, alphas, balancer report, perf/sps) every this many vector steps.
    log_every: int = 1000
    #: Save a checkpoint every this many vector steps (0 = only at the end and on Ctrl-C).
    checkpoint_every: int = 50_000
    #: Include the replay buffer in checkpoints (large: ~1M transitions); needed for exact resume.
    checkpoint_replay: bool = True
    #: Parent folder of run directories.
    logdir: str = "runs"
    #: Name of the run directory (None = "<benchmark>_<critic_balancer>_s<seed>_<UTC yyyymmdd-HHMMSS>").
    run_name: str | None = None
    #: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:<index>", "mps"; checked against the
    #: machine when the config is resolved (:meth:`resolve`) and saved resolved in config.yaml.
    device: str = "auto"
    #: Continue the run found in ``logdir/run_name`` from its last checkpoint. Only the keys in
    #: :attr:`RESUME_MAY_CHANGE` may differ from the run's saved config.yaml.
    resume: bool = False
    #: Show a tqdm progress bar.
    progress: bool = True
    #: Written by resolution (leave empty): the resolved details of ``env.protocol`` (episode length,
    #: goal mode, reward version, reward normalisation, evaluation episodes and evaluator, report rule
    #: and reported statistic), stamped into config.yaml and the TensorBoard hparams; the run's
    #: :attr:`protocol` is rebuilt from it. A non-empty value must equal what ``env.protocol`` implies
    #: (checked by :meth:`resolve`).
    protocol_details: dict[str, Any] = field(default_factory=dict)

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
            "eval_every": 0 if self.eval_every is None else self.eval_every,
            "checkpoint_every": self.checkpoint_every,
            "sac.warmup_steps": self.sac.warmup_steps,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"bad value {value!r} for {key!r}: expected an integer >= 0")
        if not 0.0 < self.sac.tau <= 1.0 or not 0.0 <= self.sac.gamma <= 1.0:
            raise ConfigError(
                f"bad sac.tau={self.sac.tau!r} / sac.gamma={self.sac.gamma!r}: need 0<tau<=1, 0<=gamma<=1"
            )
        if self.sac.init_temperature <= 0 or self.sac.lr <= 0 or self.sac.alpha_lr <= 0:
            raise ConfigError("sac.init_temperature, sac.lr and sac.alpha_lr must be > 0")
        if isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"bad value {self.seed!r} for 'seed': expected an integer >= 0 (Meta-World seeds are)")
        check_device_name(self.device)

    def resolve(self) -> TrainConfig:
        """This config resolved: what :func:`mtrl.config.load_config` returns and the trainer saves as
        config.yaml (:func:`agents.resolution.resolve_train_config`; with the balancer notes:
        :func:`agents.resolution.resolve_config`). Idempotent; raises :class:`ConfigError` on a bad value."""
        return resolve_train_config(self)

    @property
    def is_resolved(self) -> bool:
        """Whether every value :meth:`resolve` fills is filled (a config from :func:`mtrl.config.load_config`
        or :meth:`resolve`; a ``TrainConfig(...)`` built in Python is not, until resolved)."""
        return (
            None not in (self.critic_balancer, self.actor_balancer, self.critic_balancer_hparams,
                         self.actor_balancer_hparams, self.eval_episodes, self.eval_every)
            and self.device != "auto"
            and bool(self.protocol_details)
            and (self.env.benchmark == "toy" or bool(self.env.tasks))
        )  # fmt: skip

    @property
    def protocol(self) -> Protocol:
        """The run's :class:`~envs.protocols.Protocol`, rebuilt from ``protocol_details`` (no lookup): the
        ``env.protocol`` protocol (toy: with ``env.toy_episode_steps``) with the run's ``eval_episodes``
        and ``eval_every`` as its defaults. Raises ValueError on an unresolved config."""
        if not self.protocol_details:
            raise ValueError("TrainConfig.protocol needs a resolved config (mtrl.config.load_config or .resolve())")
        return Protocol.from_details(self.protocol_details)


def num_tasks_of(cfg: TrainConfig) -> int:
    """``T`` of the configured suite, known before any env is built (MT1: 1, MT10: 10, custom: its
    task count, toy: ``toy_num_tasks``)."""
    return len(cfg.env.task_names)
