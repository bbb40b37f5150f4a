"""Multi-task soft actor-critic whose critic and actor updates go through a gradient balancer.

SAC (Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905, Alg. 1)
with the multi-task choices of facebookresearch/mtrl's MT-SAC: a per-task temperature
``α_t = exp(log_alpha_t)`` with target entropy ``−|A|``, twin critics with Polyak-averaged targets,
and per-task losses — each the mean over that task's rows of a stratified batch ``(T, n, ·)``:

    y        = r + γ (1 − terminated) (min_k Q'_k(s', a') − α_t log π(a'|s')),   a' ~ π(·|s')
    L^Q_t    = ½ mean_rows[(Q_1(s, a) − y)² + (Q_2(s, a) − y)²]
    L^π_t    = mean_rows[α_t log π(ã|s) − min_k Q_k(s, ã)],                        ã ~ π(·|s)
    L^α_t    = mean_rows[−log α_t · (log π(ã|s) + target_entropy)]

At ``T = 1`` with ``task_input: none`` one update is stable-baselines3's ``SAC.train`` step to float
precision, given the same weights, batch and noise (``tests/rl/test_sb3_equivalence.py``). Two
details decide that, and both change learning (measured with ``scripts/bench_learning.py``):

* the temperature loss is taken with respect to ``log α`` (SAC authors' code, SB3), not ``α``
  (facebookresearch/mtrl, CleanRL): under Adam the α form makes α fall more slowly;
* the critic loss carries the factor ½ (SB3). Adam cancels a constant factor except through its
  ``eps``, so this changes only parameters whose gradients are tiny — but it is what makes the
  update identical to the reference's.

Every temperature and α that enters the target and the actor loss is the one from before this
update's temperature step, as in SB3 (which steps α first and reads α before that step).

``L^Q (T,)`` goes to the engine with the critic balancer, ``L^π (T,)`` with the actor balancer; the
temperature losses are summed unbalanced (each ``α_t`` only sees its own task). With ``ew`` both
engines give the gradient of ``Σ_t L_t`` and the update equals plain multi-task SAC.
Only the engine writes the ``.grad`` of actor and critic; this module owns the optimizer steps.

Balancers that re-evaluate the losses at other parameter values (``sgsu``: a virtual step; ``dgr``:
dummy heads) get loss closures (:func:`mtrl.engine.make_loss_fn`) on the same batch: the critic
closure recomputes ``L^Q`` with the same TD targets ``y``; the actor closure recomputes ``L^π`` with
the same reparametrisation noise ``ε`` (drawn once per update) and the current critics and ``α``.

The engine computes the Gramian diagnostics (``balancer/*/cos_min``, ``cond``, gradient norms) of
loss weightings such as ``ew`` only at updates whose metrics are returned (``with_metrics``), unless
``cfg.engine_diagnostics`` asks for them at every update; the gradients are the same either way.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from agents.config import SACConfig, TrainConfig, build_balancers
from agents.networks import Actor, TwinCritic, initialise, polyak_update
from mtrl.balancers import Balancer
from mtrl.balancers.alpha_weights import AlphaWeights
from mtrl.engine import BalanceReport, GradientEngine, LinearCapture, LossClosure, make_loss_fn, needs_loss_fn
from mtrl.replay import Batch

if TYPE_CHECKING:
    from envs.vector import MultiTaskVecEnv

__all__ = ["EvalAgent", "MultiTaskSAC", "UpdateNoise", "build_agent"]


class UpdateNoise(NamedTuple):
    """The standard-normal draws ``ε (T, n, A)`` of one update: ``next_obs`` for the next action
    ``a' ~ π(·|s')`` of the TD target, ``obs`` for the reparametrised action ``ã ~ π(·|s)`` of the
    actor (and temperature) loss."""

    next_obs: Tensor
    obs: Tensor


class MultiTaskSAC:
    """Actor, twin critics, per-task temperatures, their optimizers and one engine per loss group.

    Args:
        num_tasks: ``T``.
        obs_dim: ``O``, observation size without the task one-hot.
        action_dim: ``A``.
        cfg: SAC hyper-parameters.
        critic_balancer: balancer of the per-task critic losses.
        actor_balancer: balancer of the per-task actor losses (a separate instance: the states differ).
        device: where networks and tensors live.
        action_low: lower env action bounds ``(A,)`` (policy actions in ``[-1, 1]`` are mapped affinely
            onto ``[action_low, action_high]``); default ``-1``.
        action_high: upper env action bounds ``(A,)``; default ``1``.
        task_names: names used in metric keys (default ``task0`` … ``task{T-1}``).
    """

    def __init__(
        self,
        num_tasks: int,
        obs_dim: int,
        action_dim: int,
        cfg: SACConfig,
        critic_balancer: Balancer,
        actor_balancer: Balancer,
        device: str | torch.device = "cpu",
        action_low: Sequence[float] | np.ndarray | None = None,
        action_high: Sequence[float] | np.ndarray | None = None,
        task_names: Sequence[str] | None = None,
    ) -> None:
        if critic_balancer is actor_balancer:
            raise ValueError("critic and actor need separate balancer instances (their states differ)")
        for name, b in (("critic_balancer", critic_balancer), ("actor_balancer", actor_balancer)):
            if b.num_tasks != num_tasks:
                raise ValueError(f"{name} was built for {b.num_tasks} tasks but the agent has T={num_tasks}")
        self.num_tasks, self.obs_dim, self.action_dim, self.cfg = num_tasks, obs_dim, action_dim, cfg
        self.device = torch.device(device)
        self.task_names = list(task_names) if task_names is not None else [f"task{t}" for t in range(num_tasks)]
        if len(self.task_names) != num_tasks:
            raise ValueError(f"got {len(self.task_names)} task names for T={num_tasks} tasks")
        low = torch.as_tensor(-np.ones(action_dim) if action_low is None else action_low, dtype=torch.float32)
        high = torch.as_tensor(np.ones(action_dim) if action_high is None else action_high, dtype=torch.float32)
        self.action_scale_A = ((high - low) / 2).to(self.device)
        self.action_bias_A = ((high + low) / 2).to(self.device)

        task_input, dim = cfg.task_input, cfg.task_embedding_dim
        trunk = {"layer_norm": cfg.layer_norm, "skip": cfg.skip_connections}
        self.actor = Actor(
            num_tasks, obs_dim, action_dim, cfg.actor_widths, task_input, dim, **trunk, tanh_log_det=cfg.tanh_log_det
        ).to(self.device)
        self.critic = TwinCritic(
            num_tasks, obs_dim, action_dim, cfg.critic_widths, task_input, dim, **trunk, input_order=cfg.q_input_order
        ).to(self.device)
        # Meta-World+'s initialisation (docs/mwplus.md); the defaults draw nothing and change nothing
        initialise(self.actor.net, cfg.trunk_init, cfg.actor_head_init)
        for q_net in (self.critic.q1, self.critic.q2):
            initialise(q_net, cfg.trunk_init, cfg.critic_head_init)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha_T = torch.full(
            (num_tasks,), math.log(cfg.init_temperature), device=self.device, requires_grad=True
        )
        self.target_entropy = -float(action_dim)

        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=cfg.actor_adam_eps)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, eps=cfg.critic_adam_eps)
        self.alpha_opt = torch.optim.Adam([self.log_alpha_T], lr=cfg.alpha_lr, eps=cfg.alpha_adam_eps)
        #: the pre-clip global gradient norms of the last update, per clipped network ("critic", "actor")
        self.grad_norms: dict[str, Tensor] = {}

        self.critic_balancer, self.actor_balancer = critic_balancer, actor_balancer
        diagnostics = cfg.engine_diagnostics
        self.critic_engine = GradientEngine(critic_balancer, strategy=cfg.engine_strategy, diagnostics=diagnostics)
        self.actor_engine = GradientEngine(actor_balancer, strategy=cfg.engine_strategy, diagnostics=diagnostics)
        self.critic_capture = LinearCapture(self.critic, num_tasks)
        self.actor_capture = LinearCapture(self.actor, num_tasks)
        self.critic_shared, self.critic_task = self.critic.shared_parameters(), self.critic.task_parameters()
        self.actor_shared, self.actor_task = self.actor.shared_parameters(), self.actor.task_parameters()
        #: the per-task output heads (dgr's dummy heads are default-initialised copies of them)
        self.critic_heads, self.actor_heads = self.critic.head_modules(), self.actor.head_modules()
        #: sgsu and dgr (or a dgr wrapping sgsu) need loss closures in ``engine.backward``.
        self.critic_needs_closure = needs_loss_fn(critic_balancer)
        self.actor_needs_closure = needs_loss_fn(actor_balancer)
        #: balancers that weigh the tasks by the temperatures (``alpha_weights``): given log α every update
        self.alpha_weighted = [b for b in (critic_balancer, actor_balancer) if isinstance(b, AlphaWeights)]
        self.num_updates = 0

    # --- learning ------------------------------------------------------------------------------
    @staticmethod
    def _td_losses(q1_TN: Tensor, q2_TN: Tensor, target_q_TN: Tensor) -> Tensor:
        """``L^Q_t = ½ [mean (Q_1 − y)² + mean (Q_2 − y)²]`` per task (SB3's ``0.5 · Σ_k MSE``)."""
        return 0.5 * (((q1_TN - target_q_TN) ** 2).mean(1) + ((q2_TN - target_q_TN) ** 2).mean(1))

    def alpha_losses(self, log_prob_TN: Tensor) -> Tensor:
        """``L^α_t = mean_rows[−log α_t (log π + target_entropy)]`` (gradient with respect to ``log α``)."""
        return (-self.log_alpha_T[:, None] * (log_prob_TN.detach() + self.target_entropy)).mean(1)

    def critic_losses(self, batch: Batch, target_q_TN: Tensor) -> Tensor:
        """Per-task twin-Q regression losses ``(T,)``, the critic forward recorded for the engine."""
        with self.critic_capture.record():
            q1_TN, q2_TN = self.critic(batch.obs, batch.action)
        return self._td_losses(q1_TN, q2_TN, target_q_TN)

    def critic_loss_fn(self, batch: Batch, target_q_TN: Tensor) -> LossClosure:
        """Closure ``(shared_values, task_values) -> L^Q (T,)`` on this batch and these targets ``y``."""

        def compute(forward: Callable[..., Any]) -> Tensor:
            q1_TN, q2_TN = forward(batch.obs, batch.action)
            return self._td_losses(q1_TN, q2_TN, target_q_TN)

        return make_loss_fn(self.critic, self.critic_shared, self.critic_task, compute)

    def _actor_losses(self, action_TNA: Tensor, log_prob_TN: Tensor, obs_TNO: Tensor, alpha_T: Tensor) -> Tensor:
        q1_pi_TN, q2_pi_TN = self.critic(obs_TNO, action_TNA)
        return (alpha_T[:, None] * log_prob_TN - torch.min(q1_pi_TN, q2_pi_TN)).mean(1)

    def actor_loss_fn(self, batch: Batch, alpha_T: Tensor, noise_TNA: Tensor) -> LossClosure:
        """Closure ``(shared_values, task_values) -> L^π (T,)`` with fixed noise ``ε (T, n, A)``,
        the current critics and temperatures ``α (T,)``."""

        def compute(forward: Callable[..., Any]) -> Tensor:
            action_TNA, log_prob_TN = forward(batch.obs, noise_TNA)
            return self._actor_losses(action_TNA, log_prob_TN, batch.obs, alpha_T)

        return make_loss_fn(self.actor, self.actor_shared, self.actor_task, compute)

    def update(self, batch: Batch, with_metrics: bool = True, noise: UpdateNoise | None = None) -> dict[str, float]:
        """One SAC update on a stratified batch ``(T, n, ·)``; returns namespaced scalars
        (empty when ``with_metrics`` is False, which avoids device synchronisation).

        ``noise`` fixes the two reparametrisation draws (tests compare the update with a reference's);
        by default they come from the global generator."""
        cfg = self.cfg
        alpha_T = self.log_alpha_T.detach().exp()
        for balancer in self.alpha_weighted:  # w = T·softmax(−log α) of this update, for critic and actor
            balancer.set_log_alpha(self.log_alpha_T.detach())

        # Critic: TD target from the target critics and a fresh next action.
        with torch.no_grad():
            next_action_TNA, next_log_prob_TN = self.actor(batch.next_obs, None if noise is None else noise.next_obs)
            q1_next_TN, q2_next_TN = self.critic_target(batch.next_obs, next_action_TNA)
            soft_q_next_TN = torch.min(q1_next_TN, q2_next_TN) - alpha_T[:, None] * next_log_prob_TN
            target_q_TN = batch.reward + (1.0 - batch.terminated) * cfg.gamma * soft_q_next_TN
        diagnostics = cfg.engine_diagnostics or with_metrics  # G statistics only where they are logged
        critic_losses_T = self.critic_losses(batch, target_q_TN)
        critic_report = self.critic_engine.backward(
            critic_losses_T,
            self.critic_shared,
            self.critic_task,
            capture=self.critic_capture,
            loss_fn=self.critic_loss_fn(batch, target_q_TN) if self.critic_needs_closure else None,
            heads=self.critic_heads,
            diagnostics=diagnostics,
        )
        self._clip("critic", self.critic)
        self.critic_opt.step()
        if self.critic_engine.needs_post_step_losses:  # FAMO (also as dgr's base): losses after the step, same batch.
            with torch.no_grad():
                self.critic_engine.post_step(self.critic_losses(batch, target_q_TN))

        # Actor: reparametrised actions scored by the (just updated) critics. The noise is drawn
        # explicitly only for closures (same global-generator draws as randn_like inside the actor).
        noise_TNA = None if noise is None else noise.obs
        if self.actor_needs_closure and noise_TNA is None:
            T, n = batch.obs.shape[:2]
            noise_TNA = torch.randn(T, n, self.action_dim, device=batch.obs.device, dtype=batch.obs.dtype)
        with self.actor_capture.record():
            action_TNA, log_prob_TN = self.actor(batch.obs, noise_TNA)
        actor_losses_T = self._actor_losses(action_TNA, log_prob_TN, batch.obs, alpha_T)
        actor_report = self.actor_engine.backward(
            actor_losses_T,
            self.actor_shared,
            self.actor_task,
            capture=self.actor_capture,
            loss_fn=None
            if noise_TNA is None or not self.actor_needs_closure
            else self.actor_loss_fn(batch, alpha_T, noise_TNA),
            heads=self.actor_heads,
            diagnostics=diagnostics,
        )
        self._clip("actor", self.actor)
        self.actor_opt.step()

        # Temperatures: per-task losses, summed (or averaged: sac.alpha_loss_reduction) unbalanced (α_t only
        # enters L^α_t).
        alpha_losses_T = self.alpha_losses(log_prob_TN)
        self.alpha_opt.zero_grad()
        (alpha_losses_T.sum() if cfg.alpha_loss_reduction == "sum" else alpha_losses_T.mean()).backward()
        self.alpha_opt.step()

        polyak_update(self.critic.parameters(), self.critic_target.parameters(), cfg.tau)
        self.num_updates += 1
        if not with_metrics:
            return {}
        return self._metrics(critic_losses_T, actor_losses_T, alpha_losses_T, log_prob_TN, critic_report, actor_report)

    def _clip(self, name: Literal["actor", "critic"], net: nn.Module) -> None:
        """Clip ``net``'s global gradient norm at ``sac.<name>_grad_clip`` (else ``grad_clip``) with the
        ``sac.grad_clip_formula``; records the norm before clipping in :attr:`grad_norms`."""
        max_norm = self.cfg.clip_of(name)
        if max_norm is None:
            return
        if self.cfg.grad_clip_formula == "torch":  # g · c / (‖g‖ + 1e-6), capped at 1
            self.grad_norms[name] = nn.utils.clip_grad_norm_(net.parameters(), max_norm)
            return
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        norm = nn.utils.get_total_norm(grads)  # optax.clip_by_global_norm: g / ‖g‖ · c where ‖g‖ >= c
        scale = torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm)
        for g in grads:
            g.mul_(scale.to(g.dtype))
        self.grad_norms[name] = norm

    def _metrics(
        self,
        critic_losses_T: Tensor,
        actor_losses_T: Tensor,
        alpha_losses_T: Tensor,
        log_prob_TN: Tensor,
        critic_report: BalanceReport,
        actor_report: BalanceReport,
    ) -> dict[str, float]:
        out: dict[str, float] = {
            "train/critic_loss": critic_losses_T.detach().mean().item(),
            "train/actor_loss": actor_losses_T.detach().mean().item(),
            "train/alpha_loss": alpha_losses_T.detach().mean().item(),
            "train/entropy": -log_prob_TN.detach().mean().item(),
        }
        per_task = {
            "critic_loss": critic_losses_T.detach().cpu().tolist(),
            "actor_loss": actor_losses_T.detach().cpu().tolist(),
            "alpha": self.log_alpha_T.detach().exp().cpu().tolist(),
        }
        for key, values in per_task.items():
            out.update({f"train/{key}/{name}": v for name, v in zip(self.task_names, values, strict=True)})
        out.update({f"train/{name}_grad_norm": norm.item() for name, norm in self.grad_norms.items()})
        out.update(critic_report.scalars("balancer/critic", self.task_names))
        out.update(actor_report.scalars("balancer/actor", self.task_names))
        return out

    # --- acting --------------------------------------------------------------------------------
    def _policy_obs(self, obs: np.ndarray | Tensor) -> Tensor:
        """Env observations ``(T, O)`` or ``(T, O + T)`` (one-hot appended) → ``(T, 1, O)``."""
        obs_TX = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        T, O = self.num_tasks, self.obs_dim
        if obs_TX.dim() != 2 or obs_TX.shape[0] != T or obs_TX.shape[1] not in (O, O + T):
            raise ValueError(
                f"observations must have shape (T, O) = ({T}, {O}) or (T, O + T) = ({T}, {O + T}); "
                f"got {tuple(obs_TX.shape)}"
            )
        return obs_TX[:, None, :O]

    @torch.no_grad()
    def act(self, obs: np.ndarray | Tensor, deterministic: bool = False) -> np.ndarray:
        """One action per task ``(T, A)`` in the env's bounds, for env observations ``(T, ·)``."""
        obs_T1O = self._policy_obs(obs)
        action_T1A = self.actor.deterministic(obs_T1O) if deterministic else self.actor(obs_T1O)[0]
        return self.to_env_action(action_T1A[:, 0]).cpu().numpy()

    def to_env_action(self, action_TA: Tensor) -> Tensor:
        """Map policy actions in ``[-1, 1]`` onto the env bounds."""
        return action_TA * self.action_scale_A + self.action_bias_A

    def to_policy_action(self, env_action_TA: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_env_action` (what the replay buffer stores)."""
        scale, bias = self.action_scale_A.cpu().numpy(), self.action_bias_A.cpu().numpy()
        return ((np.asarray(env_action_TA) - bias) / scale).astype(np.float32)

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Networks, temperatures, optimizers and balancer states."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha_T.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "critic_balancer": self.critic_balancer.state_dict(),
            "actor_balancer": self.actor_balancer.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (tensors are moved to this agent's device)."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha_T.copy_(state["log_alpha"].to(self.device))
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.critic_balancer.load_state_dict(state["critic_balancer"])
        self.actor_balancer.load_state_dict(state["actor_balancer"])
        self.num_updates = int(state["num_updates"])


class EvalAgent:
    """Deterministic acting adapter satisfying ``metaworld.evaluation.Agent``.

    ``eval_action(obs (T, O + T)) -> actions (T, A)`` (the mean action); ``reset(mask)`` is a
    no-op because the SAC policy is memoryless.
    """

    def __init__(self, agent: MultiTaskSAC) -> None:
        self.agent = agent

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        return self.agent.act(observations, deterministic=True).astype(np.float64)

    def reset(self, env_mask: np.ndarray) -> None:
        return None


def build_agent(cfg: TrainConfig, envs: MultiTaskVecEnv, device: str | torch.device) -> MultiTaskSAC:
    """The :class:`MultiTaskSAC` of a run: ``cfg.sac`` on the tasks, observation size, action bounds and
    task names of ``envs``, with the critic and actor balancers of ``cfg`` built for ``envs``' ``T``.

    The one construction site of the agent (the trainer, ``scripts/evaluate.py`` and
    ``scripts/bench_train.py`` all call it), so a checkpoint always meets the agent it was saved from.

    Args:
        cfg: a config resolved by :func:`agents.config.resolve_config` (or a saved ``config.yaml``,
            which is resolved): its balancers and their hyper-parameters are explicit.
        envs: the run's vector env (observations may carry the one-hot; ``envs.obs_dim`` excludes it).
        device: where the networks live.
    """
    T = envs.num_tasks
    space = envs.single_action_space
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None or space.shape is None:
        raise ValueError(f"MultiTaskSAC needs a Box action space, got {space}")
    critic_balancer, actor_balancer = build_balancers(cfg, T)
    return MultiTaskSAC(
        T,
        envs.obs_dim,
        int(space.shape[0]),
        cfg.sac,
        critic_balancer,
        actor_balancer,
        device=device,
        action_low=np.asarray(low, dtype=np.float64),
        action_high=np.asarray(high, dtype=np.float64),
        task_names=envs.task_names,
    )
