"""Equal weighting: the plain multi-task objective ``Σ_t L_t`` (or its mean)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mtrl.balancers.base import GramianWeighting, check_jacobian

__all__ = ["EW"]


class EW(GramianWeighting):
    """Equal weighting of the task gradients: the unbalanced multi-task baseline.

    Update rule: ``w = 1`` (sum, default) or ``w = 1/T`` (``mean=True``), ``d = wᵀJ = Σ_t w_t g_t``,
    i.e. the gradient of ``Σ_t w_t L_t``. Weights are constant, so the engine never computes ``G``
    (only with diagnostics) and runs ONE backward of ``Σ_t w_t L_t``: like any loss weighting, every
    parameter receives that gradient, heads included (``mean=True``: each head ``∇L_t / T``).

    Paper: none (the "unitary scalarisation"; see Kurin et al., NeurIPS 2022, arXiv 2201.04122, for
    why it is a strong baseline).

    Note: LibMTL's ``EW`` docstring says ``1/T`` but its code uses weight 1; ``mean`` selects either.
    With ``mean=False`` this reproduces plain multi-task SAC exactly.

    Stateless.
    """

    name: ClassVar[str] = "ew"
    constant_weights: ClassVar[bool] = True
    #: Loss scaling ``L → S·L`` (rows ``S g_t``): constant weights, ``d → S d``.
    loss_scale_problem: ClassVar[str | None] = None

    def __init__(self, num_tasks: int, mean: bool = False) -> None:
        super().__init__(num_tasks)
        if not isinstance(mean, bool):
            raise TypeError(f"mean must be a bool (True: weights 1/T, False: weights 1), got {mean!r}")
        self.mean = mean

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Constant weights ``(T,)``: ones, or ``1/T`` when ``mean``; ``gram`` is ignored (may be any tensor)."""
        value = 1.0 / self.num_tasks if self.mean else 1.0
        return torch.full((self.num_tasks,), value, dtype=torch.float64, device=losses.device)

    def aggregate(self, jac: Tensor, losses: Tensor) -> Tensor:
        """``d = J.sum(0)`` (or ``J.mean(0)``) ``(P,)`` in the dtype of ``jac (T, P)``."""
        check_jacobian(jac, losses, self.num_tasks)
        return jac.mean(0) if self.mean else jac.sum(0)

    def extra_repr(self) -> str:
        return f"mean={self.mean}"
