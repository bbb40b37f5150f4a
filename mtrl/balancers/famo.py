"""FAMO: fast adaptive multitask optimisation by balancing the log-loss decrease rates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.balancers._learned import LearnedWeights
from mtrl.balancers.base import LossWeighting

__all__ = ["FAMO"]


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
    in SAC apply FAMO to the critic, as the reference does). ``ξ`` and its Adam
    (:class:`~mtrl.balancers._learned.LearnedWeights`) are created on the device of the first losses
    (float32 unless they are float64) and follow them; ``ξ`` is not returned by :meth:`parameters`
    (it is updated in :meth:`post_step` only).

    Stateful: ``ξ``, the Adam state and the losses awaiting :meth:`post_step` are in :meth:`state_dict`
    (``{}`` before the first losses). Shapes: ``losses (T,)`` → ``S (T,)``; ``last_weights (T,)`` =
    ``c z / L`` (sum 1).
    """

    name = "famo"
    positive_losses = True
    stateful = True
    needs_post_step_losses = True
    #: Loss scaling ``L → S·L``: ``c = 1/Σ_t z_t/(S L_t) = S·c(L)``, so the weight ``c z_t/(S L_t)`` of
    #: ``∇(S L_t)`` is unchanged and ``d → S d``; in ``post_step`` the common offset ``log S`` of
    #: ``Δ = log(S L) − log L'`` cancels in ``z ⊙ (Δ − zᵀΔ)``.
    loss_scale_problem: ClassVar[str | None] = None
    #: MT10: ``γ = 0.01``, the FAMO repository's MT10 script (``mtrl_files/run.sh``).
    metaworld_hparams: ClassVar[Mapping[str, float]] = {"gamma": 0.01}

    def __init__(self, num_tasks: int, w_lr: float = 0.025, gamma: float = 1e-3) -> None:
        super().__init__(num_tasks)
        if not w_lr > 0:
            raise ValueError(f"w_lr must be > 0, got {w_lr!r}")
        if not gamma >= 0:
            raise ValueError(f"gamma (weight decay of the logits) must be >= 0, got {gamma!r}")
        self.w_lr = float(w_lr)
        self.gamma = float(gamma)
        self._logits = LearnedWeights("FAMO", "logits", num_tasks, self.w_lr, weight_decay=self.gamma)
        self.last_weights: Tensor | None = None
        self.reset()

    def reset(self) -> None:
        self._logits.reset()
        self.prev_log_losses: Tensor | None = None  # log L (T,) of the last scalarize, awaiting post_step
        self.last_weights = None

    @property
    def logits(self) -> Tensor | None:
        """``ξ (T,)``, or None before the first losses."""
        return self._logits.value

    def task_probs(self) -> Tensor | None:
        """``z = softmax(ξ) (T,)``, or None before the first call."""
        return None if self.logits is None else torch.softmax(self.logits.detach(), dim=0)

    def scalarize(self, losses: Tensor) -> Tensor:
        """``S_t = c z_t log L_t`` for ``losses (T,)`` → ``S (T,)`` (``c``, ``z`` detached)."""
        self.check(losses)
        dtype = torch.float64 if losses.dtype == torch.float64 else torch.float32
        logits = self._logits.ensure(0.0, dtype, losses.device)
        z = torch.softmax(logits.detach(), dim=0).to(losses.dtype)
        c = 1.0 / (z / losses.detach()).sum()
        self.prev_log_losses = losses.detach().log().to(logits.dtype)
        self.last_weights = c * z / losses.detach()
        return c * z * losses.log()

    def post_step(self, losses: Tensor) -> None:
        """Update ``ξ`` from the losses ``(T,)`` re-evaluated after the optimizer step (same batch)."""
        self.check(losses)
        if self.logits is None or self.prev_log_losses is None:
            raise RuntimeError(
                "FAMO.post_step needs the losses of a preceding scalarize() call: call scalarize (through "
                "the engine's backward), then optimizer.step(), then post_step(new_losses) once per step"
            )
        delta = self.prev_log_losses - losses.detach().log().to(self.prev_log_losses)  # Δ (T,)
        z = torch.softmax(self.logits.detach(), dim=0)
        self._logits.step(z * (delta - (z * delta).sum()))  # J_softmaxᵀ Δ (the Jacobian is symmetric)
        self.prev_log_losses = None

    def state_dict(self) -> dict[str, Any]:
        prev = None if self.prev_log_losses is None else self.prev_log_losses.clone()
        return self._logits.state_dict(prev_log_losses=prev)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        if not self._logits.load_state_dict(state, extra=("prev_log_losses",)):
            return
        prev = state["prev_log_losses"]
        if prev is not None and (not isinstance(prev, Tensor) or prev.shape != (self.num_tasks,)):
            self.reset()
            raise ValueError(f"FAMO state 'prev_log_losses' must be None or a ({self.num_tasks},) tensor, got {prev!r}")
        assert self.logits is not None
        self.prev_log_losses = None if prev is None else prev.detach().clone().to(self.logits)

    def extra_repr(self) -> str:
        return f"w_lr={self.w_lr}, gamma={self.gamma}"
