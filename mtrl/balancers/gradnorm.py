"""GradNorm: learn task weights so that weighted gradient norms train at balanced relative rates."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.balancers.base import GramianWeighting

__all__ = ["GradNorm"]

_STATE_KEYS = ("task_weights", "optimizer", "initial_losses")


class GradNorm(GramianWeighting):
    """Learn ``w`` so that each weighted gradient norm ``‖w_t g_t‖`` tracks a common, rate-adjusted target.

    Update rule, at every call with Gramian ``G (T, T)`` and losses ``L (T,)``:
    ``n_t = w_t √G_tt`` (``= ‖w_t g_t‖``), ``L̃_t = L_t / L_t(0)`` with ``L(0)`` the first losses seen,
    ``r_t = L̃_t / mean(L̃)`` (relative inverse training rate), target ``n̂_t = mean(n) · r_t^α``
    (held constant), ``L_grad = Σ_t |n_t − n̂_t|``. The weights returned are the current ``w`` (so
    ``d = wᵀJ``); then the private Adam steps ``w`` along ``∂L_grad/∂w_t = sign(n_t − n̂_t) √G_tt``
    and ``w`` is renormalised to ``Σ_t w_t = T``.

    Paper: Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive
    Loss Balancing in Deep Multitask Networks", ICML 2018, arXiv 1711.02257, Algorithm 1
    (``α = 1.5``, the paper's NYUv2 value, also LibMTL's default).

    Note: the paper measures ``‖∇_W w_t L_t‖`` on the last shared layer ``W`` only; here (as LibMTL)
    the norms come from the Gramian of the whole shared Jacobian handed to the balancer (restrict
    the engine's shared parameters to reproduce the paper). LibMTL parametrises ``w = T·softmax(p)``
    and steps ``p`` with the main optimizer; here ``w`` is the paper's raw weights, renormalised to
    sum ``T`` after each step, with a private Adam at ``lr = 0.025`` (no reference fixes a separate
    rate; this is the task-weight rate ``w_lr`` of the FAMO repository's Meta-World baselines).
    Deviation: weights are clamped at 0 before renormalising (the paper's weights could cross zero
    with a large rate); if all reach 0 they restart at 1. ``w`` is created on the device of the first
    Gramian, in float64.

    Positive losses only (loss ratios to the first losses, raised to ``α``). Stateful: ``w``, the Adam
    state and ``L(0)`` are in :meth:`state_dict`. Shapes: ``gram (T, T)``, ``losses (T,)`` → ``w (T,)``.
    """

    name = "gradnorm"
    positive_losses = True
    stateful = True
    #: Loss scaling ``L → S·L``: the private Adam mixes gradient norms taken at different scales.
    loss_scale_problem: ClassVar[str | None] = "its private Adam mixes gradient norms taken at different loss scales"

    def __init__(self, num_tasks: int, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(num_tasks)
        if not alpha >= 0:
            raise ValueError(f"alpha (restoring-force strength) must be >= 0, got {alpha!r}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.last_weights: Tensor | None = None
        self.reset()

    def reset(self) -> None:
        self.task_weights: Tensor | None = None  # w (T,) float64
        self.initial_losses: Tensor | None = None  # L(0) (T,) float64
        self._optimizer: torch.optim.Adam | None = None
        self.last_weights = None

    def _init(self, device: torch.device, losses64: Tensor) -> tuple[Tensor, Tensor, torch.optim.Adam]:
        if self.task_weights is None or self.initial_losses is None or self._optimizer is None:
            self.task_weights = torch.ones(self.num_tasks, dtype=torch.float64, device=device, requires_grad=True)
            self.initial_losses = losses64.clone()
            self._optimizer = torch.optim.Adam([self.task_weights], lr=self.lr)
        return self.task_weights, self.initial_losses, self._optimizer

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Return the current ``w (T,)`` (sum ``T``) for ``gram (T, T)``, ``losses (T,)``; then update ``w``."""
        self.check(losses)
        if gram.shape != (self.num_tasks, self.num_tasks):
            raise ValueError(
                f"gram must have shape (T, T) = ({self.num_tasks}, {self.num_tasks}); got {tuple(gram.shape)}"
            )
        losses64 = losses.detach().to(device=gram.device, dtype=torch.float64)
        w_param, initial, optimizer = self._init(gram.device, losses64)
        w = w_param.detach().clone()
        grad_norms = gram.detach().to(torch.float64).diagonal().clamp(min=0.0).sqrt()  # ‖g_t‖ (T,)
        weighted = w * grad_norms  # n_t = ‖w_t g_t‖
        ratio = losses64 / initial.to(losses64.device)
        target = weighted.mean() * (ratio / ratio.mean()) ** self.alpha
        w_param.grad = torch.sign(weighted - target) * grad_norms  # ∂ Σ|n_t − n̂_t| / ∂w_t
        optimizer.step()
        w_param.grad = None
        with torch.no_grad():
            w_param.clamp_(min=0.0)
            total = w_param.sum()
            if total > 0:
                w_param.mul_(self.num_tasks / total)
            else:
                w_param.fill_(1.0)
        self.last_weights = w
        return w.to(gram.dtype)

    def state_dict(self) -> dict[str, Any]:
        if self.task_weights is None or self.initial_losses is None or self._optimizer is None:
            return {}
        return {
            "task_weights": self.task_weights.detach().clone(),
            "optimizer": self._optimizer.state_dict(),
            "initial_losses": self.initial_losses.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        if not state:
            return
        if set(state) != set(_STATE_KEYS):
            raise ValueError(f"GradNorm state must have keys {list(_STATE_KEYS)}, got {sorted(state)}")
        for key in ("task_weights", "initial_losses"):
            if not isinstance(state[key], Tensor) or state[key].shape != (self.num_tasks,):
                raise ValueError(f"GradNorm state {key!r} must be a ({self.num_tasks},) tensor, got {state[key]!r}")
        self.task_weights = state["task_weights"].detach().clone().to(torch.float64).requires_grad_(True)
        self.initial_losses = state["initial_losses"].detach().clone().to(torch.float64)
        self._optimizer = torch.optim.Adam([self.task_weights], lr=self.lr)
        self._optimizer.load_state_dict(state["optimizer"])

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, lr={self.lr}"
