"""FAMO: fast adaptive multitask optimisation by balancing the log-loss decrease rates."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.balancers.base import LossWeighting

__all__ = ["FAMO"]

_STATE_KEYS = ("logits", "optimizer", "prev_log_losses")


class FAMO(LossWeighting):
    """Descend the weighted log-losses and adapt the weights so every log-loss decreases equally fast.

    Update rule, per step with losses ``L (T,)`` and logits ``ξ (T,)`` (``ξ = 0`` initially):
    ``z = softmax(ξ)``, ``c = 1 / Σ_t (z_t / L_t)``, ``S_t = c · z_t · log L_t`` with ``z`` and ``c``
    constant, so every parameter receives ``Σ_t (c z_t / L_t) ∇L_t`` (weights summing to 1). After the
    optimizer step the caller re-evaluates the losses ``L'`` on the same batch and calls
    :meth:`post_step`: ``Δ = log L − log L'``, ``δ = J_softmax(ξ)ᵀ Δ = z ⊙ (Δ − zᵀΔ)``, and the private
    Adam (``lr = w_lr``, L2 ``weight_decay = γ``) steps ``ξ`` along ``−(δ + γ ξ)``: the task whose
    log-loss decreased least gains weight.

    Paper: Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023,
    arXiv 2306.03792, Algorithm 1.

    Defaults: ``w_lr = 0.025`` and ``γ = 1e-3`` as LibMTL's FAMO and the default arguments of the
    FAMO repository's multi-task SAC agent (Cranial-XIX/FAMO ``mtrl_files/famo.py``). The references
    disagree on γ: that repository's MT10 script (``mtrl_files/run.sh``) runs ``gamma=0.01``; pass
    ``gamma=0.01`` to reproduce its Meta-World numbers.

    Note: the reference adds ``1e-8`` inside the log and uses ``L − L*`` with ``L* = 0``; here the losses
    must be strictly positive and are used as they are (a non-positive loss raises ``ValueError``;
    in SAC apply FAMO to the critic, as the reference does). ``ξ`` is created on the device of the
    first losses and is not returned by :meth:`parameters` (it is updated in :meth:`post_step` only).

    Stateful: ``ξ``, the Adam state and the losses awaiting :meth:`post_step` are in :meth:`state_dict`.
    Shapes: ``losses (T,)`` → ``S (T,)``; ``last_weights (T,)`` = ``c z / L`` (sum 1).
    """

    name = "famo"
    positive_losses = True
    stateful = True
    needs_post_step_losses = True
    #: Loss scaling ``L → S·L``: ``c = 1/Σ_t z_t/(S L_t) = S·c(L)``, so the weight ``c z_t/(S L_t)`` of
    #: ``∇(S L_t)`` is unchanged and ``d → S d``; in ``post_step`` the common offset ``log S`` of
    #: ``Δ = log(S L) − log L'`` cancels in ``z ⊙ (Δ − zᵀΔ)``.
    loss_scale_problem: ClassVar[str | None] = None

    def __init__(self, num_tasks: int, w_lr: float = 0.025, gamma: float = 1e-3) -> None:
        super().__init__(num_tasks)
        if not w_lr > 0:
            raise ValueError(f"w_lr must be > 0, got {w_lr!r}")
        if not gamma >= 0:
            raise ValueError(f"gamma (weight decay of the logits) must be >= 0, got {gamma!r}")
        self.w_lr = float(w_lr)
        self.gamma = float(gamma)
        self.last_weights: Tensor | None = None
        self.reset()

    def reset(self) -> None:
        self.logits: Tensor | None = None  # ξ (T,), created on the device of the first losses
        self._optimizer: torch.optim.Adam | None = None
        self.prev_log_losses: Tensor | None = None  # log L (T,) of the last scalarize, awaiting post_step
        self.last_weights = None

    def _init_logits(self, like: Tensor) -> Tensor:
        if self.logits is None:
            dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
            self.logits = torch.zeros(self.num_tasks, dtype=dtype, device=like.device, requires_grad=True)
            self._optimizer = torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        return self.logits

    def task_probs(self) -> Tensor | None:
        """``z = softmax(ξ) (T,)``, or None before the first call."""
        return None if self.logits is None else torch.softmax(self.logits.detach(), dim=0)

    def scalarize(self, losses: Tensor) -> Tensor:
        """``S_t = c z_t log L_t`` for ``losses (T,)`` → ``S (T,)`` (``c``, ``z`` detached)."""
        self.check(losses)
        logits = self._init_logits(losses)
        z = torch.softmax(logits.detach(), dim=0).to(losses.dtype)
        c = 1.0 / (z / losses.detach()).sum()
        self.prev_log_losses = losses.detach().log().to(logits.dtype)
        self.last_weights = c * z / losses.detach()
        return c * z * losses.log()

    def post_step(self, losses: Tensor) -> None:
        """Update ``ξ`` from the losses ``(T,)`` re-evaluated after the optimizer step (same batch)."""
        self.check(losses)
        if self.logits is None or self._optimizer is None or self.prev_log_losses is None:
            raise RuntimeError(
                "FAMO.post_step needs the losses of a preceding scalarize() call: call scalarize (through "
                "the engine's backward), then optimizer.step(), then post_step(new_losses) once per step"
            )
        delta = self.prev_log_losses - losses.detach().log().to(self.prev_log_losses)  # Δ (T,)
        z = torch.softmax(self.logits.detach(), dim=0)
        self.logits.grad = z * (delta - (z * delta).sum())  # J_softmaxᵀ Δ (the Jacobian is symmetric)
        self._optimizer.step()
        self.logits.grad = None
        self.prev_log_losses = None

    def state_dict(self) -> dict[str, Any]:
        if self.logits is None or self._optimizer is None:
            return {}
        prev = None if self.prev_log_losses is None else self.prev_log_losses.clone()
        return {
            "logits": self.logits.detach().clone(),
            "optimizer": self._optimizer.state_dict(),
            "prev_log_losses": prev,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        if not state:
            return
        if set(state) != set(_STATE_KEYS):
            raise ValueError(f"FAMO state must have keys {list(_STATE_KEYS)}, got {sorted(state)}")
        logits = state["logits"]
        if not isinstance(logits, Tensor) or logits.shape != (self.num_tasks,):
            raise ValueError(f"FAMO state 'logits' must be a ({self.num_tasks},) tensor, got {logits!r}")
        self.logits = logits.detach().clone().requires_grad_(True)
        self._optimizer = torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        self._optimizer.load_state_dict(state["optimizer"])
        prev = state["prev_log_losses"]
        self.prev_log_losses = None if prev is None else prev.detach().clone().to(self.logits)

    def extra_repr(self) -> str:
        return f"w_lr={self.w_lr}, gamma={self.gamma}"
