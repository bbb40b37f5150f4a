"""Aligned-MTL: align the task gradients into an orthogonal, equal-norm system before combining."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers._linalg import Array, psd_eigh, psd_eigh_np, to_numpy64
from mtrl.balancers.base import GramianWeighting

__all__ = ["AlignedMTL", "AlignedMTLUB", "ScaleMode"]

ScaleMode = Literal["min", "median", "rmse"]
SCALE_MODES: tuple[str, ...] = get_args(ScaleMode)


class AlignedMTL(GramianWeighting):
    """Aligned-MTL: replace the task gradients by the closest orthogonal system of equal norms.

    Update rule: ``G = V Λ Vᵀ`` (float64 ``eigh``, truncated to the rank ``R``: eigenvalues above
    ``rtol · λ_max``, ``rtol = T · eps`` of the gradients' dtype), ``B = σ · V_R Λ_R^{-1/2} V_Rᵀ`` with
    ``σ = √λ_R`` (``min``), ``√median(λ_{1..R})`` (``median``) or ``√mean(λ_{1..R})`` (``rmse``), and
    ``w = B·pref``, ``d = Jᵀw``. The aligned gradients (rows of ``B J``) are orthogonal with equal norm
    ``σ`` (condition number 1).

    Paper: Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023,
    arXiv 2305.19000, Eq. 5 and Algorithm 1 (``pref = w = 1/T``, Eq. 1).

    Note: the official code (SamsungLabs/MTL) sums the aligned gradients, i.e. ``pref = 1`` (``T``
    times the paper's update; pass ``pref=[1.0] * T`` to reproduce it); it computes the rank
    tolerance with float32 ``eps`` even for float64 gradients (here ``eps`` of the Jacobian's dtype:
    float32 ``eps`` for float32 models, as the official code, float64 ``eps`` for float64 ones; with
    float64 ``eps`` on a float32 ``G`` the rounding eigenvalues count as rank and ``σ`` collapses
    to ~1e-4 of its value); it uses the removed
    ``torch.symeig`` and crashes on rank 0, where this class returns zero weights. ``median`` and
    ``rmse`` are code-only extras (``median`` is the lower median, as ``torch.median``).

    Stateless.
    """

    name: ClassVar[str] = "aligned_mtl"
    #: Loss scaling ``L → S·L`` (``G → S² G``): ``B = σ V Λ^{-1/2} Vᵀ`` with ``σ → Sσ`` and
    #: ``Λ^{-1/2} → Λ^{-1/2}/S`` is invariant (relative rank cut-off), so ``d → S d``.
    loss_scale_problem: ClassVar[str | None] = None

    def __init__(self, num_tasks: int, pref: Sequence[float] | None = None, scale_mode: ScaleMode = "min") -> None:
        super().__init__(num_tasks)
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"unknown Aligned-MTL scale_mode {scale_mode!r}; valid choices: {list(SCALE_MODES)}")
        if pref is None:
            pref_values = [1.0 / num_tasks] * num_tasks
        else:
            if isinstance(pref, (str, bytes)) or not isinstance(pref, Sequence):
                raise TypeError(f"pref must be a sequence of {num_tasks} floats or None (1/T), got {pref!r}")
            pref_values = [float(v) for v in pref]
            if len(pref_values) != num_tasks or not all(math.isfinite(v) for v in pref_values):
                raise ValueError(f"pref must hold {num_tasks} finite floats (one per task), got {list(pref)!r}")
        self.pref = tuple(pref_values)
        self._pref = np.asarray(pref_values, dtype=np.float64)
        self.scale_mode: ScaleMode = scale_mode

    def _sigma(self, vals_r: Array) -> float:
        """``σ`` of ``scale_mode`` from the ``R`` non-zero eigenvalues ``λ_1 ≥ … ≥ λ_R`` (descending)."""
        if self.scale_mode == "min":
            return math.sqrt(float(vals_r[-1]))
        if self.scale_mode == "median":
            return math.sqrt(float(np.sort(vals_r)[(vals_r.shape[0] - 1) // 2]))  # the lower median, as torch.median
        return math.sqrt(float(vals_r.mean()))

    def alignment_matrix(self, gram: Tensor, rtol: float | None = None) -> Tensor:
        """``B (T, T)`` float64 such that the aligned gradients are the rows of ``B J`` (zeros at rank 0);
        ``rtol``: eigenvalue cut-off relative to ``λ_max`` (None: ``T · eps(float64)``)."""
        vals, vecs, rank = psd_eigh(gram.detach(), rtol)
        if rank == 0:
            return torch.zeros_like(vecs)
        vals_r, vecs_r = vals[:rank], vecs[:, :rank]
        sigma = self._sigma(vals_r.cpu().numpy())
        return sigma * (vecs_r / vals_r.sqrt()) @ vecs_r.T

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w = B·pref (T,)`` float64 (as ``σ V_R Λ_R^{-1/2} (V_Rᵀ pref)``, without forming ``B``)."""
        vals, vecs, rank = psd_eigh_np(to_numpy64(gram), rtol)
        if rank == 0:
            return torch.zeros(self.num_tasks, dtype=torch.float64, device=gram.device)
        vals_r, vecs_r = vals[:rank], vecs[:, :rank]
        w = vecs_r @ ((self._sigma(vals_r) / np.sqrt(vals_r)) * (vecs_r.T @ self._pref))
        return torch.from_numpy(w).to(gram.device)

    def extra_repr(self) -> str:
        return f"pref={list(self.pref)}, scale_mode={self.scale_mode!r}"


class AlignedMTLUB(AlignedMTL):
    """Aligned-MTL-UB: Aligned-MTL on the gradients w.r.t. the shared representation.

    Update rule: as :class:`AlignedMTL`, with ``J`` the per-task gradients w.r.t. the shared features
    ``z`` (the full flattened ``(B, …)`` tensor); ``d`` is then back-propagated through the encoder.

    Paper: Senushkin et al., CVPR 2023, arXiv 2305.19000, Section 5.2, Eq. 6–7.

    Note: like the official ``amtlub``, the Gramian is over the full flattened representation
    gradient (LibMTL sums over the batch first, a different matrix).

    Stateless.
    """

    name: ClassVar[str] = "aligned_mtl_ub"
    representation_level: bool = True
    representation_required: ClassVar[bool] = True
