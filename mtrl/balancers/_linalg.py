"""Small float64 linear algebra on Gramians ``G (T, T)`` shared by the Gramian weightings.

The torch helpers take and return float64 tensors on the input's device, their ``_np`` twins float64
NumPy arrays. Rank handling is explicit:
eigenvalues at or below ``rtol · λ_max`` count as zero, and an all-zero Gramian has rank 0 (never a
NaN). ``rtol`` must match the precision the Gramian was computed from: ``T · eps(dtype)`` of the
gradients (:func:`default_rtol`, the ``torch.linalg.pinv`` convention). A ``G`` of float32 gradients
carries rounding eigenvalues of ~1e-9…1e-7 ``λ_max``: above ``T · eps(float64)``, so with the float64
cut-off a rank-deficient float32 Jacobian looks full rank and Aligned-MTL's ``σ = √λ_min`` collapses
to the noise (the engine therefore passes ``T · eps(float32)`` for float32 models, as the official
Aligned-MTL code does).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

__all__ = [
    "Array",
    "cosine_matrix_np",
    "default_rtol",
    "psd_eigh",
    "psd_eigh_np",
    "psd_pinv",
    "to_numpy64",
]

Array = npt.NDArray[np.float64]

EPS64 = float(torch.finfo(torch.float64).eps)


def default_rtol(num_tasks: int, dtype: torch.dtype = torch.float64) -> float:
    """Relative eigenvalue cut-off ``T · eps(dtype)`` for a Gramian of gradients computed in ``dtype``."""
    return num_tasks * float(torch.finfo(dtype).eps)


def to_numpy64(gram: Tensor) -> npt.NDArray[np.float64]:
    """A symmetrised float64 NumPy copy of ``gram (T, T)`` (small iterative solvers run on the CPU)."""
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(0.5 * (g + g.T), dtype=np.float64)


def psd_eigh(gram: Tensor, rtol: float | None = None) -> tuple[Tensor, Tensor, int]:
    """Eigen-decomposition of a PSD ``gram (T, T)`` in float64, sorted **descending**.

    Returns ``(λ (T,), V (T, T), rank)`` where ``rank`` counts ``λ > rtol · λ_max`` (0 when
    ``λ_max ≤ 0``; ``rtol=None``: ``T · eps(float64)``). Columns of ``V`` are the eigenvectors.
    """
    g = gram.to(torch.float64)
    g = 0.5 * (g + g.T)
    vals, vecs = torch.linalg.eigh(g)
    vals, vecs = vals.flip(0), vecs.flip(1)
    tol = (default_rtol(g.shape[0]) if rtol is None else rtol) * float(vals[0].clamp(min=0.0))
    rank = int((vals > tol).sum()) if float(vals[0]) > 0 else 0
    return vals, vecs, rank


def psd_pinv(gram: Tensor, rtol: float | None = None) -> Tensor:
    """Pseudo-inverse ``G⁺ (T, T)`` of a PSD matrix by truncated eigendecomposition (rank 0 → zeros)."""
    vals, vecs, rank = psd_eigh(gram, rtol)
    v_r = vecs[:, :rank]
    return (v_r / vals[:rank]) @ v_r.T


# --- NumPy twins for the weightings' hot paths (a torch op on a (T, T) tensor costs ~5–10 µs of
# dispatch, a NumPy one ~1–3 µs; the engine calls a weighting once per step)


def cosine_matrix_np(g: Array) -> tuple[Array, Array]:
    """Equilibrate a symmetric float64 ``g (T, T)`` as ``G = D C D`` with ``D = diag(‖g_t‖)``; return
    ``(C (T, T), norms (T,))``.

    ``C_ij = cos(g_i, g_j)``, with rows/columns of zero-norm tasks set to 0 (their diagonal too).
    Working with ``C`` instead of ``G`` keeps solves accurate when norms span many decades.
    """
    norms = np.sqrt(np.maximum(np.diag(g), 0.0))
    positive = norms > 0
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=positive)
    cos = np.minimum(np.maximum(g * inv[:, None] * inv[None, :], -1.0), 1.0)
    cos = 0.5 * (cos + cos.T)
    np.fill_diagonal(cos, positive)
    return cos, norms


def psd_eigh_np(g: Array, rtol: float | None = None) -> tuple[Array, Array, int]:
    """:func:`psd_eigh` of a float64 array ``g (T, T)``: ``(λ (T,) descending, V (T, T), rank)``."""
    vals, vecs = np.linalg.eigh(0.5 * (g + g.T))
    vals, vecs = vals[::-1], vecs[:, ::-1]
    lam_max = float(vals[0])
    tol = (default_rtol(g.shape[0]) if rtol is None else rtol) * max(lam_max, 0.0)
    rank = int(np.count_nonzero(vals > tol)) if lam_max > 0 else 0
    return vals, vecs, rank
