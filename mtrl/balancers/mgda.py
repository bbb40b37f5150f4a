"""MGDA: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers._linalg import Array, to_numpy64
from mtrl.balancers._qp import min_norm_simplex
from mtrl.balancers.base import GramianWeighting, check_losses

__all__ = ["MGDA", "MGDAUB", "Normalization"]

Normalization = Literal["none", "l2", "loss", "loss+"]
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)


class MGDA(GramianWeighting):
    """Multiple-gradient descent: step along the min-norm element of the convex hull of the gradients.

    Update rule: with normalisers ``n_t`` (``none``: 1, ``l2``: ``‖g_t‖``, ``loss``: ``L_t``, ``loss+``:
    ``L_t‖g_t‖``) and ``Ĝ = N⁻¹ G N⁻¹``, solve ``λ* = argmin_{λ ∈ Δ} λᵀ Ĝ λ`` and set ``w_t = λ*_t / n_t``,
    so ``d = Σ_t λ*_t g_t / n_t`` (``g_t·d ≥ ‖d‖²`` for every task: ``d`` is a common descent direction).

    Paper: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018,
    arXiv 1810.04650, Eq. 3 and Algorithm 2 (normalisers: their Section 3.3 / official code).

    Note: the reference solvers (official, LibMTL, torchjd) run Frank–Wolfe and stop early; with norms
    spread over decades they can be far from the min-norm point. This class solves the QP exactly
    with Wolfe's active-set method on the equilibrated float64 Gramian (KKT met to ~1e-12, see
    ``mtrl/balancers/_qp.py``), started from a primal-dual active-set guess of the optimal corral
    (one solve when the min-norm point is interior, as for the benchmark trunk). A task whose
    normaliser is 0 (zero gradient, or zero loss) is itself the min-norm point: ``d = 0``.

    Stateless.
    """

    name: ClassVar[str] = "mgda"

    @property
    def loss_scale_problem(self) -> str | None:
        """Loss scaling ``L → S·L`` (``G → S² G``): with ``normalization="none"`` the min-norm point of the
        simplex is invariant and ``d → S d``; the ``l2``/``loss``/``loss+`` normalisers give ``d(S·L) = d(L)``
        or ``d(L)/S`` (invariant, not equivariant)."""
        if self.normalization == "none":
            return None
        return (
            f"normalization={self.normalization!r} divides the gradients by S-scaled normalisers "
            "(use normalization='none')"
        )

    def __init__(self, num_tasks: int, normalization: Normalization = "none") -> None:
        super().__init__(num_tasks)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown MGDA normalization {normalization!r}; valid choices: {list(NORMALIZATIONS)}")
        self.normalization: Normalization = normalization

    def check(self, losses: Tensor) -> None:
        """Loss normalisers divide by ``L_t``: they require strictly positive losses."""
        check_losses(losses, self.num_tasks, positive=self.normalization in ("loss", "loss+"), name=self.name)

    def _normalizers(self, g: Array, losses: Tensor) -> Array:
        """Gradient normalisers ``n (T,)`` of the float64 Gramian ``g`` (see the class docstring)."""
        if self.normalization == "none":
            return np.ones(g.shape[0])
        norms = np.sqrt(np.maximum(np.diag(g), 0.0))
        if self.normalization == "l2":
            return norms
        loss64 = losses.detach().to(device="cpu", dtype=torch.float64).numpy()
        return loss64 if self.normalization == "loss" else loss64 * norms  # "loss" / "loss+"

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w (T,)`` float64 from ``gram (T, T)`` and ``losses (T,)``."""
        g = to_numpy64(gram)
        scale = self._normalizers(g, losses)
        inv = np.divide(1.0, scale, out=np.zeros(g.shape[0]), where=scale > 0)
        simplex = min_norm_simplex(g * inv[:, None] * inv[None, :])
        return torch.from_numpy(simplex * inv).to(gram.device)

    def extra_repr(self) -> str:
        return f"normalization={self.normalization!r}"


class MGDAUB(MGDA):
    """MGDA-UB: MGDA on the gradients w.r.t. the shared representation (the engine feeds them).

    Update rule: as :class:`MGDA`, with ``J`` the per-task gradients of the losses w.r.t. the last
    shared features ``z`` (flattened over the batch); the weights then multiply ``∇_θ L_t``.

    Paper: Sener & Koltun, NeurIPS 2018, arXiv 1810.04650, Section 3.3 (Theorem 1, "MGDA-UB").

    Note: like the official code, ``J`` holds the full flattened ``∇_z L_t`` (LibMTL's rep-grad mode
    sums over the batch first, which gives a different Gramian).

    Stateless.
    """

    name: ClassVar[str] = "mgda_ub"
    representation_level: bool = True
    representation_required: ClassVar[bool] = True
