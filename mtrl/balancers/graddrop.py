"""GradDrop: gradient sign dropout on the rows of the Jacobian."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.balancers.base import GradientBalancer, check_jacobian

__all__ = ["GradDrop"]


class GradDrop(GradientBalancer):
    """Keep, per coordinate, only the task components of one randomly chosen sign, then sum them.

    Update rule, for ``J (T, P)`` with entries ``g_tp``: sign purity ``P_p = ½ (1 + Σ_t g_tp / Σ_t |g_tp|)``
    (``P_p = ½`` where the column is zero), ``U_p ~ U(0, 1)``, mask ``M_tp = 1[U_p < P_p] 1[g_tp > 0] +
    1[U_p > P_p] 1[g_tp < 0]``, and ``d_p = Σ_t (ℓ + (1 − ℓ) M_tp) g_tp`` with leak ``ℓ ∈ [0, 1]`` (``ℓ = 0``
    by default: each ``d_p`` is the sum of the positive or of the negative components of column ``p``).

    Paper: Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign: Optimizing
    Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020, arXiv 2010.06808, Algorithm 1 (the
    sign-purity ``P`` and the mask), with the identity as the monotone map ``f``.

    Note: the paper (and LibMTL, which requires ``rep_grad=True``) applies GradDrop to the gradients
    w.r.t. a shared *representation*, batch-summed and multiplied by the sign of the input; here it
    is applied to the rows of the parameter Jacobian, as torchjd's ``GradDrop`` does. One scalar
    leak for all tasks (torchjd allows one per task). ``U`` is drawn in float64 on the CPU from a
    private ``torch.Generator`` seeded with ``seed`` (reproducible on any device), then moved to
    ``J``'s device. Any loss sign is accepted.

    Stateful only through the generator state, saved in :meth:`state_dict`. Shapes: ``jac (T, P)``,
    ``losses (T,)`` → ``d (P,)``.
    """

    name = "graddrop"
    stateful = True
    #: Loss scaling ``L → S·L``: the sign purity ``Σg/Σ|g|`` is invariant and the kept sums scale with ``S``.
    loss_scale_problem: ClassVar[str | None] = None

    def __init__(self, num_tasks: int, leak: float = 0.0, seed: int = 0) -> None:
        super().__init__(num_tasks)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1] (0: pure sign dropout, 1: plain sum), got {leak!r}")
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.leak = float(leak)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def sign_purity(self, jac: Tensor) -> Tensor:
        """``P (P,)`` in ``[0, 1]``: 1 where every component is ≥ 0, 0 where every one is ≤ 0, ½ on zero columns."""
        total = jac.sum(dim=0)
        magnitude = jac.abs().sum(dim=0)
        safe = torch.where(magnitude > 0, magnitude, torch.ones_like(magnitude))
        return 0.5 * (1.0 + torch.where(magnitude > 0, total / safe, torch.zeros_like(total)))

    def aggregate(self, jac: Tensor, losses: Tensor) -> Tensor:
        """``d (P,)`` from ``jac (T, P)`` and ``losses (T,)`` (the losses are only checked)."""
        check_jacobian(jac, losses, self.num_tasks)
        purity = self.sign_purity(jac)  # (P,)
        uniform = torch.rand(jac.shape[1], generator=self.generator, dtype=torch.float64)
        uniform = uniform.to(device=jac.device, dtype=purity.dtype)
        # Σ_t M_tp g_tp = 1[U_p < P_p] Σ_{g_tp > 0} g_tp + 1[U_p > P_p] Σ_{g_tp < 0} g_tp: no (T, P) mask needed.
        positive = jac.clamp(min=0).sum(dim=0)
        negative = jac.clamp(max=0).sum(dim=0)
        zero = torch.zeros_like(positive)
        kept = torch.where(uniform < purity, positive, zero) + torch.where(uniform > purity, negative, zero)
        if self.leak == 0.0:
            return kept
        return self.leak * jac.sum(dim=0) + (1.0 - self.leak) * kept

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"generator"}:
            raise ValueError(f"GradDrop state must have exactly the key 'generator', got {sorted(state)}")
        self.generator.set_state(state["generator"])

    def reset(self) -> None:
        self.generator.manual_seed(self.seed)

    def extra_repr(self) -> str:
        return f"leak={self.leak}, seed={self.seed}"
