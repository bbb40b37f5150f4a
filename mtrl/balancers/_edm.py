"""Exact min-norm point of a simplex hull from its Gramian, and the EDM central direction.

Private helpers of :mod:`mtrl.balancers.task_tensioner`. Shapes: ``T`` tasks, ``P`` shared parameters.

``min_norm_simplex`` solves ``c* = argmin_{c ∈ Δ_T} cᵀ M c`` (the MGDA sub-problem, Sener & Koltun,
NeurIPS 2018) exactly with Wolfe's finite active-set algorithm ("Finding the nearest point in a
polytope", Math. Programming 11, 1976), written on the Gramian ``M`` so the points never need to be
materialised. The references (isl-org/MultiObjectiveOptimization, tiemink/MTL_TaskTensioner) run
Frank–Wolfe for at most 250 iterations instead, which stops at a tolerance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["edm_direction", "min_norm_simplex"]

#: Relative optimality gap ``‖x‖² − min_i ⟨x, p_i⟩ ≤ tol · max_i ‖p_i‖²`` at which Wolfe's method stops.
_TOL = 1e-12
#: Barycentric coordinates below this are dropped from the active set.
_DROP = 1e-15


def _affine_minimizer(gram_SS: np.ndarray) -> np.ndarray:
    """Coefficients ``a`` (Σa = 1) of the min-norm point of the affine hull of the active points."""
    k = gram_SS.shape[0]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = gram_SS
    kkt[:k, k] = 1.0
    kkt[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return np.asarray(sol[:k])


def min_norm_simplex(gram: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """Exact ``c* = argmin_{c ∈ Δ_T} cᵀ M c`` for a PSD Gramian ``M (T, T)`` (Wolfe 1976).

    Returns ``c (T,)`` with ``c ≥ 0`` and ``Σ c = 1``. Optimality (KKT): ``(M c)_i ≥ cᵀ M c`` for all
    ``i``, with equality on the support of ``c``. An all-zero ``M`` gives ``e_0``.
    """
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] < 1:
        raise ValueError(f"gram must be a square (T, T) matrix with T >= 1, got shape {gram.shape}")
    T = gram.shape[0]
    scale = float(np.max(np.diag(gram)))
    lam = np.zeros(T)
    if scale <= 0.0 or not np.isfinite(scale):
        lam[0] = 1.0
        return lam
    gram = gram / scale  # max ‖p_i‖² = 1: tolerances are relative
    first = int(np.argmin(np.diag(gram)))
    active = [first]
    lam[first] = 1.0
    for _ in range(max_iter if max_iter is not None else 50 * T + 50):
        gx = gram @ lam  # ⟨p_i, x⟩ for every i
        j = int(np.argmin(gx))
        if float(lam @ gx) - float(gx[j]) <= _TOL or j in active:
            break  # x is the min-norm point: no vertex lies strictly beyond the supporting hyperplane
        active.append(j)
        while True:  # minor cycle: move to the affine minimiser of the active set, dropping points
            idx = np.array(active)
            alpha = _affine_minimizer(gram[np.ix_(idx, idx)])
            if bool(np.all(alpha > _DROP)):
                lam = np.zeros(T)
                lam[idx] = alpha
                break
            lam_S = lam[idx]
            neg = alpha <= _DROP
            theta = float(np.min(lam_S[neg] / (lam_S[neg] - alpha[neg])))
            lam_S = lam_S + theta * (alpha - lam_S)
            keep = lam_S > _DROP
            active = [int(i) for i in idx[keep]]
            lam = np.zeros(T)
            lam[idx[keep]] = lam_S[keep]
            lam /= lam.sum()
            if len(active) == 1:
                break
    return lam


def edm_direction(jac64: Tensor) -> tuple[Tensor, Tensor]:
    """EDM central direction ``d*`` (Katrutsa et al., arXiv 2007.06937) of non-zero rows ``jac64 (T, P)``.

    ``n_t = ‖g_t‖``, ``u_t = g_t / n_t``, ``c = argmin_{c ∈ Δ} ‖Σ c_t u_t‖²``, ``γ = 1 / Σ_t c_t / n_t``,
    ``d* = γ Σ_t c_t u_t = Σ_t w_t g_t`` with ``w_t = γ c_t / n_t`` (``Σ w = 1``).
    Returns ``(d* (P,), w (T,))`` in the dtype and on the device of ``jac64``; every row must be non-zero.
    """
    norms_T = jac64.norm(dim=1)
    gram_unit = ((jac64 @ jac64.T) / (norms_T[:, None] * norms_T[None, :])).cpu().numpy()  # u_s · u_t (T, T)
    c_T = torch.as_tensor(min_norm_simplex(gram_unit), dtype=jac64.dtype, device=jac64.device)
    gamma = 1.0 / (c_T / norms_T).sum()
    w_T = gamma * c_T / norms_T
    return w_T @ jac64, w_T
