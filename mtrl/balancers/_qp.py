"""Exact small quadratic programs on Gramians (``T ≤ 50``), solved on the CPU in float64.

* :func:`min_norm_simplex`: ``min_{w ∈ Δ} wᵀ G w`` (the MGDA min-norm point of the convex hull of the
  task gradients) by Wolfe's finite active-set method (P. Wolfe, "Finding the nearest point in a
  polytope", Math. Programming 11, 1976), run on the equilibrated Gramian so that it reaches the
  KKT conditions even when the gradient norms span many decades.
* :func:`nonneg_qp`: ``min_{x ≥ 0} ½ xᵀ A x + bᵀ x`` for positive definite ``A`` by the primal
  active-set method of Lawson & Hanson ("Solving Least Squares Problems", 1974, ch. 23) generalised
  to a quadratic objective. Used by UPGrad's projections onto the dual cone.

Both are finite algorithms: every inner solve is exact, so the result satisfies the KKT conditions
up to rounding (the tolerances below), unlike Frank–Wolfe or projected-gradient loops.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt

__all__ = ["min_norm_kkt_violation", "min_norm_simplex", "nonneg_qp"]

Array = npt.NDArray[np.float64]
_EPS = float(np.finfo(np.float64).eps)


def _equilibrate(gram: Array) -> tuple[Array, Array]:
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    safe = np.where(norms > 0, norms, 1.0)
    cos = np.clip(gram / safe[:, None] / safe[None, :], -1.0, 1.0)
    np.fill_diagonal(cos, 1.0)
    return cos, norms


def _is_zero_point(dd: float, u: Array) -> bool:
    """``‖x‖² = uᵀCu`` is only known to ``~eps·(Σ|u_i|)²``: below that, ``x`` is the origin."""
    return dd <= 64.0 * _EPS * float(np.abs(u).sum()) ** 2


def _solve_or_lstsq(mat: Array, rhs: Array) -> Array:
    """``mat⁻¹ rhs`` by LU when it is accurate (residual ≤ 1e-10 relative), else the least-squares
    solution (a singular or nearly singular ``mat``). LU is ~4× cheaper for these tiny systems."""
    try:
        sol = np.linalg.solve(mat, rhs)
    except np.linalg.LinAlgError:
        sol = None
    if sol is not None and bool(np.isfinite(sol).all()):
        residual = float(np.abs(mat @ sol - rhs).max())
        if residual <= 1e-10 * (float(np.abs(mat).max()) * float(np.abs(sol).max()) + float(np.abs(rhs).max())):
            return np.asarray(sol, dtype=np.float64)
    return np.asarray(np.linalg.lstsq(mat, rhs, rcond=None)[0], dtype=np.float64)


def _affine_minimizer(cos: Array, norms: Array, support: list[int]) -> Array:
    """Coefficients ``μ`` (sum 1) of the point of least norm in the affine hull of ``{g_i : i ∈ S}``.

    With ``u_i = μ_i ‖g_i‖`` this is ``min uᵀ C_SS u`` s.t. ``Σ u_i/‖g_i‖ = 1``, solved through its
    bordered KKT system (non-singular whenever the points are affinely independent).
    """
    idx = np.asarray(support)
    c = 1.0 / norms[idx]
    c_max = float(c.max())
    c_tilde = c / c_max
    k = len(support)
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = cos[idx[:, None], idx[None, :]]
    kkt[:k, k] = c_tilde
    kkt[k, :k] = c_tilde
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    sol = _solve_or_lstsq(kkt, rhs)
    mu = sol[:k] * c_tilde
    return np.asarray(mu / mu.sum(), dtype=np.float64)


def min_norm_kkt_violation(gram: Array, w: Array) -> float:
    """Largest scale-free violation of the KKT conditions of ``min_{w∈Δ} wᵀGw`` at ``w``.

    With ``d = Σ w_i g_i``: optimality is ``g_j·d ≥ ‖d‖²`` for every ``j`` and equality on the support.
    Each violation is divided by ``‖g_j‖ ‖d‖`` (a cosine), so the value is comparable across scales.
    Returns 0 when ``d = 0`` (then ``w`` is optimal).
    """
    cos, norms = _equilibrate(gram)
    u = w * norms
    cu = cos @ u
    dd = float(u @ cu)
    if _is_zero_point(dd, u):
        return 0.0
    d_norm = np.sqrt(dd)
    slack = (norms * cu - dd) / np.where(norms > 0, norms * d_norm, 1.0)
    below = float(np.max(np.clip(-slack, 0.0, None)))
    on_support = float(np.max(np.abs(slack[w > 0]))) if bool((w > 0).any()) else 0.0
    return max(below, on_support)


def min_norm_simplex(
    gram: Array, tol: float = 1e-12, max_iter: int | None = None, warm_start: Array | None = None
) -> Array:
    """Exact ``argmin_{w ∈ Δ} wᵀ G w`` for a PSD ``gram (T, T)``; returns ``w (T,)`` on the simplex.

    A zero-norm task is itself the min-norm point (``w = e_t``). Otherwise Wolfe's method keeps a
    "corral" ``S`` of affinely independent gradients and the point ``x = Σ_S w_i g_i``; it adds the
    gradient most violating ``g_j·x ≥ ‖x‖²`` (scaled by ``‖g_j‖‖x‖``, threshold ``tol``) and moves to the
    affine minimiser of the corral, dropping points whose weight would turn negative.

    ``warm_start``: weights of a nearby problem (e.g. the previous solve of a sequence); when the affine
    minimiser on their support has positive weights it is the starting corral, which saves most
    iterations. The result is exact either way (the same termination test).
    """
    num_tasks = gram.shape[0]
    cos, norms = _equilibrate(gram)
    if num_tasks == 1:
        return np.ones(1)
    zero = np.flatnonzero(norms == 0.0)
    if zero.size:
        w0 = np.zeros(num_tasks)
        w0[zero[0]] = 1.0
        return w0
    first = int(np.argmin(norms))
    support = [first]
    w = np.zeros(num_tasks)
    w[first] = 1.0
    if warm_start is not None and int(np.count_nonzero(warm_start > 0)) > 1:
        warm = [int(i) for i in np.flatnonzero(warm_start > 0)]
        mu = _affine_minimizer(cos, norms, warm)
        if bool(np.isfinite(mu).all()) and bool((mu > 0).all()):
            support = warm
            w = np.zeros(num_tasks)
            w[support] = mu
    limit = max_iter if max_iter is not None else 20 * num_tasks + 50
    for _ in range(limit):
        u = w * norms
        cu = cos @ u
        dd = float(u @ cu)
        if _is_zero_point(dd, u):
            return w  # x = 0 is in the hull: optimal.
        slack = (norms * cu - dd) / (norms * np.sqrt(dd))
        j = int(np.argmin(slack))
        if slack[j] >= -tol or j in support:
            return w
        support.append(j)
        for _minor in range(num_tasks + 1):
            mu = _affine_minimizer(cos, norms, support)
            if bool((mu > 0).all()):
                w = np.zeros(num_tasks)
                w[support] = mu
                break
            w_s = w[support]
            shrink = mu <= 0
            theta = float(np.min(w_s[shrink] / (w_s[shrink] - mu[shrink])))
            w_s = w_s + theta * (mu - w_s)
            keep = w_s > 1e-15
            keep[int(np.argmin(np.where(shrink, w_s, np.inf)))] = False
            support = [i for i, k in zip(support, keep, strict=True) if k]
            w = np.zeros(num_tasks)
            w[support] = w_s[keep] / w_s[keep].sum()
    warnings.warn(
        f"min_norm_simplex stopped after {limit} iterations with KKT violation "
        f"{min_norm_kkt_violation(gram, w):.3g} (tolerance {tol})",
        RuntimeWarning,
        stacklevel=2,
    )
    return w


def nonneg_qp(
    a: Array,
    b: Array,
    tol: float = 1e-12,
    max_iter: int | None = None,
    definite: bool = True,
    warm_start: Array | None = None,
) -> Array:
    """Exact ``argmin_{x ≥ 0} ½ xᵀ A x + bᵀ x`` for a symmetric positive (semi-)definite ``a (T, T)``.

    KKT: ``∇ = A x + b ≥ 0``, ``x ≥ 0``, ``x ⊙ ∇ = 0``. The free set grows by the most negative
    gradient entry (threshold ``tol`` relative to ``max(|b|, max diag A)``); each inner step solves
    the equality-constrained subproblem exactly (``definite=False``: by least squares, so a singular
    ``A`` on the free set still gives a stationary point) and steps back to feasibility when needed.

    ``warm_start``: the solution of a related problem (UPGrad's ``T`` projections share ``A``); when the
    subproblem on its support has a positive solution, that is the starting point, which skips most
    iterations. The termination test is the same, so the result is the same optimum.
    """
    n = b.shape[0]
    x = np.zeros(n)
    free = np.zeros(n, dtype=bool)
    if warm_start is not None and bool((warm_start > 0).any()):
        idx = np.flatnonzero(warm_start > 0)
        sub = a[idx[:, None], idx[None, :]]
        z_idx = np.linalg.lstsq(sub, -b[idx], rcond=None)[0] if not definite else _solve_or_lstsq(sub, -b[idx])
        if bool(np.isfinite(z_idx).all()) and bool((z_idx > 0).all()):
            x[idx] = z_idx
            free[idx] = True
    scale = max(float(np.abs(b).max(initial=0.0)), float(np.abs(np.diag(a)).max(initial=0.0)), 1e-300)
    limit = max_iter if max_iter is not None else 10 * n + 20
    for _ in range(limit):
        grad = a @ x + b
        candidates = (~free) & (grad < -tol * scale)
        if not candidates.any():
            return x
        j = int(np.argmin(np.where(candidates, grad, np.inf)))
        free[j] = True
        for _inner in range(n + 1):
            idx = np.flatnonzero(free)
            z = np.zeros(n)
            sub = a[idx[:, None], idx[None, :]]
            z[idx] = np.linalg.solve(sub, -b[idx]) if definite else np.linalg.lstsq(sub, -b[idx], rcond=None)[0]
            if bool((z[idx] > 0).all()):
                x = z
                break
            if z[j] <= 0 and x[j] == 0:  # the entering variable cannot move: x is optimal up to rounding
                free[j] = False
                return x
            bad = idx[z[idx] <= 0]
            theta = float(np.min(x[bad] / (x[bad] - z[bad])))
            x = x + theta * (z - x)
            leaving = bad[int(np.argmin(x[bad]))]
            free &= x > 0
            free[leaving] = False
            x[~free] = 0.0
    warnings.warn(f"nonneg_qp stopped after {limit} iterations", RuntimeWarning, stacklevel=2)
    return x
