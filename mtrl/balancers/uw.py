"""UW: homoscedastic-uncertainty weighting of the losses with learnable log-variances."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.balancers._learned import LearnedWeights
from mtrl.balancers.base import LossWeighting

__all__ = ["UW"]


class UW(LossWeighting):
    """Weight each loss by a learned inverse variance: ``S_t = L_t / (2 e^{s_t}) + s_t / 2``.

    Update rule: with ``s_t = log σ_t²`` learnable, every parameter receives ``∇ Σ_t S_t``; ``s``
    itself descends ``∂S_t/∂s_t = (1 − L_t e^{−s_t}) / 2`` with a private Adam, so at the optimum
    ``e^{s_t} = L_t`` and the effective weight of ``L_t`` tends to ``1 / (2 L_t)``.

    Paper: Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
    Geometry and Semantics", CVPR 2018, arXiv 1705.07115, Eq. 7 (regression form, ``log σ = s / 2``).

    Defaults: ``s`` initialised to ``init_log_var = 0.0`` and Adam ``lr = 0.025``, as the multi-task
    SAC baseline of the FAMO repository (Cranial-XIX/FAMO ``mtrl_files/uw.py``: ``logsigma`` zeros,
    ``Adam(lr=w_lr)``, ``w_lr = 0.025``). LibMTL initialises ``s = −0.5`` instead.

    Note: official-code differences: the paper's classification term (``1/σ²``, no ½) is not
    distinguished; every loss uses the regression form. LibMTL puts ``s`` in the model so the main
    optimizer (with its weight decay) updates it; here ``s`` has its own Adam without weight decay
    (:class:`~mtrl.balancers._learned.LearnedWeights`), stepped in :meth:`after_backward` once the
    engine has written ``s.grad``. ``s`` is created on the device of the first losses (float32 unless
    the losses are float64) and follows them.

    Positive losses only (the optimum ``e^{s} = L`` needs ``L > 0``; with ``L < 0``, ``s → −∞``).
    Stateful: ``s`` and the Adam state are in :meth:`state_dict` (``{}`` before the first losses).

    Shapes: ``losses (T,)`` → ``S (T,)``; ``last_weights (T,)`` = ``1 / (2 e^{s})`` used at the last call.
    """

    name = "uw"
    positive_losses = True
    stateful = True
    #: Loss scaling ``L → S·L``: the learned ``s`` tracks ``log(S·L)`` and its Adam sees ``S``-scaled gradients.
    loss_scale_problem: ClassVar[str | None] = (
        "its learned log-variance converges to log(S*L) and its Adam sees S-scaled gradients"
    )

    def __init__(self, num_tasks: int, lr: float = 0.025, init_log_var: float = 0.0) -> None:
        super().__init__(num_tasks)
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.lr = float(lr)
        self.init_log_var = float(init_log_var)
        self._log_var = LearnedWeights("UW", "log_var", num_tasks, self.lr)
        self.last_weights: Tensor | None = None

    @property
    def log_var(self) -> Tensor | None:
        """``s (T,)``, or None before the first losses."""
        return self._log_var.value

    def scalarize(self, losses: Tensor) -> Tensor:
        """``S_t = L_t / (2 e^{s_t}) + s_t / 2`` for ``losses (T,)`` → ``S (T,)`` (differentiable in ``s``)."""
        self.check(losses)
        dtype = torch.float64 if losses.dtype == torch.float64 else torch.float32
        s = self._log_var.ensure(self.init_log_var, dtype, losses.device)
        precision = torch.exp(-s).to(losses.dtype)
        self.last_weights = (0.5 * precision).detach()
        return 0.5 * precision * losses + 0.5 * s.to(losses.dtype)

    def parameters(self) -> list[Tensor]:
        return self._log_var.parameters()

    def after_backward(self) -> None:
        """Step the private Adam on ``s`` (its ``.grad`` was written by the engine), then clear it."""
        self._log_var.step()

    def state_dict(self) -> dict[str, Any]:
        return self._log_var.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reset()
        self._log_var.load_state_dict(state)

    def reset(self) -> None:
        self._log_var.reset()
        self.last_weights = None

    def extra_repr(self) -> str:
        return f"lr={self.lr}, init_log_var={self.init_log_var}"
