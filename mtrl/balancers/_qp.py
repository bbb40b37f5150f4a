"""Exact small quadratic programs on Gramians (``T ≤ 50``), solved on the CPU in float64.

* :func:`min_norm_simplex`: ``min_{w ∈ Δ} wᵀ G w`` (the MGDA min-norm point of the convex hull of the
  task gradients) by Wolfe's finite active-set method (P. Wolfe, "Finding the nearest point in a
  polytope", Math. Programming 11, 1976), run on the equilibrated Gramian so that it reaches the
  KKT conditions even when the gradient norms span many decades.
* :func:`nonneg_qp`: ``min_{x ≥ 0} ½ xᵀ A x + bᵀ x`` for positive definite ``A`` by the primal
  active-set method of Lawson & Hanson ("Solving Least Squares Problems", 1974, ch. 23) generalised
  to a quadratic objective. :func:`nonneg_qp_batch` solves many such problems sharing ``A`` (UPGrad's
  ``T`` projections onto the dual cone) by batched primal-dual active-set steps, finishing any
  problem they leave with :func:`nonneg_qp`.
* :func:`cagrad_dual`: CAGrad's dual ``min_{w ∈ Δ} g_wᵀg0 + c‖g0‖‖g_w‖`` (a second-order cone
  program on the simplex), by a closed form on the optimal support found by active-set steps, or a
  scalar root search over exact :func:`min_norm_simplex` subproblems.

All are exact: every inner solve is exact, so the result satisfies the KKT conditions up to
rounding (the tolerances below), unlike Frank–Wolfe or projected-gradient loops. The active-set
guesses that speed them up (:func:`_corral_guess`, the batched steps, CAGrad's support steps) only
choose where the exact method starts or confirm its termination test; they never loosen it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt
from scipy.optimize import brentq

from mtrl.balancers._linalg import cosine_matrix_np

__all__ = [
    "accurate_solve",
    "cagrad_dual",
    "min_norm_kkt_violation",
    "min_norm_simplex",
    "nonneg_qp",
    "nonneg_qp_batch",
]

Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]
Mask = npt.NDArray[np.bool_]
_EPS = float(np.finfo(np.float64).eps)
#: largest ``|g_i·x − ‖x‖²| / (‖g_i‖‖x‖)`` on a guessed corral's support for it to count as solved exactly
_ON_SUPPORT_TOL = 1e-10
#: active-set steps of :func:`cagrad_dual` before it falls back to the bracketing root search
_SUPPORT_STEPS = 12


def _is_zero_point(dd: float, u: Array) -> bool:
    """``‖x‖² = uᵀCu`` is only known to ``~eps·(Σ|u_i|)²``: below that, ``x`` is the origin."""
    return dd <= 64.0 * _EPS * float(np.abs(u).sum()) ** 2


def accurate_solve(mat: Array, rhs: Array, rhs_scale: float) -> Array | None:
    """``mat⁻¹ rhs`` by LU, or None when ``mat`` is singular, the solution is not finite, or the residual
    exceeds ``1e-10 · (max|mat| · max|sol| + rhs_scale)`` (a nearly singular ``mat``)."""
    try:
        sol = np.linalg.solve(mat, rhs)
    except np.linalg.LinAlgError:
        return None
    if not bool(np.isfinite(sol).all()):
        return None
    residual = float(np.abs(mat @ sol - rhs).max())
    if residual > 1e-10 * (float(np.abs(mat).max()) * float(np.abs(sol).max()) + rhs_scale):
        return None
    return np.asarray(sol, dtype=np.float64)


def _solve_or_lstsq(mat: Array, rhs: Array) -> Array:
    """``mat⁻¹ rhs`` by LU when it is accurate (:func:`accurate_solve`), else the least-squares
    solution (a singular or nearly singular ``mat``). LU is ~4× cheaper for these tiny systems."""
    sol = accurate_solve(mat, rhs, float(np.abs(rhs).max()))
    if sol is not None:
        return sol
    return np.asarray(np.linalg.lstsq(mat, rhs, rcond=None)[0], dtype=np.float64)


def _affine_system(cos: Array, norms: Array, support: IndexArray) -> tuple[Array, Array, Array]:
    """Bordered KKT system ``(kkt (k+1, k+1), rhs (k+1,), c̃ (k,))`` of :func:`_affine_minimizer`."""
    c = 1.0 / norms[support]
    c_tilde = c / float(c.max())
    k = support.shape[0]
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = cos[support[:, None], support[None, :]]
    kkt[:k, k] = c_tilde
    kkt[k, :k] = c_tilde
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    return kkt, rhs, c_tilde


def _affine_minimizer(cos: Array, norms: Array, support: list[int]) -> Array:
    """Coefficients ``μ`` (sum 1) of the point of least norm in the affine hull of ``{g_i : i ∈ S}``.

    With ``u_i = μ_i ‖g_i‖`` this is ``min uᵀ C_SS u`` s.t. ``Σ u_i/‖g_i‖ = 1``, solved through its
    bordered KKT system (non-singular whenever the points are affinely independent).
    """
    kkt, rhs, c_tilde = _affine_system(cos, norms, np.asarray(support))
    k = len(support)
    sol = _solve_or_lstsq(kkt, rhs)
    mu = sol[:k] * c_tilde
    return np.asarray(mu / mu.sum(), dtype=np.float64)


def _corral_guess(cos: Array, norms: Array, tol: float, rounds: int = 8) -> Array | None:
    """A starting corral for Wolfe's method by primal-dual active-set steps, or None.

    Starts from all tasks (the min-norm point is often interior: then one solve is the answer) and
    alternates ``S ← {i ∈ S : μ_i > 0} ∪ {j ∉ S : g_j·x < ‖x‖²}``. Returns the weights of the last
    corral whose affine minimiser has positive weights (optimal when no point violates the KKT
    test; else a warm start that Wolfe's method continues from), or None when none was found or a
    bordered system was singular (affinely dependent points are left to Wolfe's method).
    """
    num_tasks = norms.shape[0]
    inside = np.ones(num_tasks, dtype=bool)
    best: Array | None = None
    for _ in range(rounds):
        support = np.flatnonzero(inside)
        kkt, rhs, c_tilde = _affine_system(cos, norms, support)
        sol = accurate_solve(kkt, rhs, 1.0)
        if sol is None:
            return best
        mu = sol[: support.shape[0]] * c_tilde
        total = float(mu.sum())
        if not total > 0:
            return best
        w = np.zeros(num_tasks)
        w[support] = mu / total
        u = w * norms
        cu = cos @ u
        dd = float(u @ cu)
        if _is_zero_point(dd, u) or dd <= 0:
            return best
        slack = (norms * cu - dd) / (norms * np.sqrt(dd))
        positive = w[support] > 0
        if bool(positive.all()):
            if float(np.abs(slack[support]).max()) > _ON_SUPPORT_TOL:
                return best  # an inaccurate solve (nearly dependent points): leave it to Wolfe's method
            best = w
        entering = (~inside) & (slack < -tol)
        if bool(positive.all()) and not bool(entering.any()):
            return w
        updated = entering.copy()
        updated[support[positive]] = True
        if not bool(updated.any()) or bool((updated == inside).all()):
            return best
        inside = updated
    return best


def min_norm_kkt_violation(gram: Array, w: Array) -> float:
    """Largest scale-free violation of the KKT conditions of ``min_{w∈Δ} wᵀGw`` at ``w``.

    With ``d = Σ w_i g_i``: optimality is ``g_j·d ≥ ‖d‖²`` for every ``j`` and equality on the support.
    Each violation is divided by ``‖g_j‖ ‖d‖`` (a cosine), so the value is comparable across scales.
    Returns 0 when ``d = 0`` (then ``w`` is optimal).
    """
    cos, norms = cosine_matrix_np(gram)
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
    gram: Array,
    tol: float = 1e-12,
    max_iter: int | None = None,
    warm_start: Array | None = None,
    guess: bool = True,
) -> Array:
    """Exact ``argmin_{w ∈ Δ} wᵀ G w`` for a PSD ``gram (T, T)``; returns ``w (T,)`` on the simplex.

    A zero-norm task is itself the min-norm point (``w = e_t``). Otherwise Wolfe's method keeps a
    "corral" ``S`` of affinely independent gradients and the point ``x = Σ_S w_i g_i``; it adds the
    gradient most violating ``g_j·x ≥ ‖x‖²`` (scaled by ``‖g_j‖‖x‖``, threshold ``tol``) and moves to the
    affine minimiser of the corral, dropping points whose weight would turn negative.

    ``warm_start``: weights of a nearby problem (e.g. the previous solve of a sequence); when the affine
    minimiser on their support has positive weights it is the starting corral, which saves most
    iterations. Without a usable warm start and with ``guess`` (default), the start is the corral found
    by :func:`_corral_guess` (one solve when the optimum is interior, as for well-aligned gradients:
    at T = 50 this replaced 49 Wolfe steps by one). The result is exact either way (the same
    termination test); ``guess=False`` starts from the smallest-norm vertex (the textbook method).
    """
    num_tasks = gram.shape[0]
    cos, norms = cosine_matrix_np(gram)
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
    started = False
    if warm_start is not None and int(np.count_nonzero(warm_start > 0)) > 1:
        warm = [int(i) for i in np.flatnonzero(warm_start > 0)]
        mu = _affine_minimizer(cos, norms, warm)
        if bool(np.isfinite(mu).all()) and bool((mu > 0).all()):
            support = warm
            w = np.zeros(num_tasks)
            w[support] = mu
            started = True
    if guess and not started and num_tasks > 2:
        start = _corral_guess(cos, norms, tol)
        if start is not None:
            w = start
            support = [int(i) for i in np.flatnonzero(start > 0)]
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


def _free_set_solve(a: Array, b: Array, free: Mask) -> Array | None:
    """``z (K, n)`` with ``A_FF z_F = −b_F`` and ``z = 0`` off ``F`` for each row ``k`` (``F = free[k]``).

    One batched LU: small problems as ``(K, n, n)`` systems with the identity on the fixed
    variables; otherwise each free set's indices are moved to the front and the systems are cut to
    the largest free set (the LU cost falls with its cube). None when a system is singular.
    """
    count = free.sum(axis=1)
    size = int(count.max())
    num, n = b.shape
    try:
        if n <= 16 or 4 * size >= 3 * n:
            both = free[:, :, None] & free[:, None, :]
            mat = np.where(both, a, 0.0)
            mat[:, np.arange(n), np.arange(n)] += ~free
            z = np.linalg.solve(mat, np.where(free, -b, 0.0)[..., None])[..., 0]
        else:
            order = np.argsort(~free, axis=1, kind="stable")[:, :size]  # (K, m) free indices first
            valid = np.arange(size)[None, :] < count[:, None]
            mat = np.where(valid[:, :, None] & valid[:, None, :], a[order[:, :, None], order[:, None, :]], 0.0)
            mat[:, np.arange(size), np.arange(size)] += ~valid
            rhs = np.where(valid, -np.take_along_axis(b, order, axis=1), 0.0)
            z_m = np.linalg.solve(mat, rhs[..., None])[..., 0]
            z = np.zeros((num, n))
            np.put_along_axis(z, order, np.where(valid, z_m, 0.0), axis=1)
    except np.linalg.LinAlgError:
        return None
    return z if bool(np.isfinite(z).all()) else None


def nonneg_qp_batch(a: Array, b: Array, tol: float = 1e-12, max_rounds: int = 20) -> Array:
    """:func:`nonneg_qp` for ``K`` problems sharing a positive definite ``a (n, n)``: ``b (K, n)`` → ``x (K, n)``.

    Primal-dual active-set steps (Hintermüller, Ito & Kunisch, SIAM J. Optim. 13, 2003) run on all
    problems at once, each step one batched solve: the free set starts at ``{j : b_j < 0}`` (the
    negative gradient entries at ``x = 0``) and becomes ``{j ∈ F : x_j > 0} ∪ {j ∉ F : ∇_j < 0}``;
    a problem is done when its free set repeats, i.e. ``x_F > 0`` and ``∇ ≥ 0`` off ``F`` (the KKT
    conditions, with :func:`nonneg_qp`'s threshold ``tol · max(|b|, max diag A)``). The steps converge
    in 2–3 rounds on UPGrad's problems but may cycle in general: a problem left after ``max_rounds``
    is finished by :func:`nonneg_qp` from its last iterate (exact either way).
    """
    num, n = b.shape
    diag_max = float(np.abs(np.diag(a)).max(initial=0.0))
    scale = np.maximum(np.maximum(np.abs(b).max(axis=1, initial=0.0), diag_max), 1e-300)
    threshold = (-tol * scale)[:, None]  # (K, 1)
    free = b < threshold
    x = np.zeros((num, n))
    todo = np.flatnonzero(free.any(axis=1))  # x = 0 is optimal for the others
    for _ in range(max_rounds):
        if todo.size == 0:
            return x
        free_k = free[todo]
        z = _free_set_solve(a, b[todo], free_k)
        if z is None:
            break
        grad = z @ a + b[todo]  # a is symmetric
        updated = np.where(free_k, z > 0, grad < threshold[todo])
        x[todo] = z
        free[todo] = updated
        todo = todo[(updated != free_k).any(axis=1)]
    for k in todo:
        x[k] = nonneg_qp(a, b[k], tol=tol, warm_start=np.clip(x[k], 0.0, None))
    return x


# --- CAGrad's dual ----------------------------------------------------------------------------------


def _cagrad_dual_on_support(
    g: Array, lin: Array, radius: float, support: IndexArray
) -> tuple[Array, Array, float] | None:
    """Stationary point of the CAGrad dual restricted to ``support``: ``(w (T,), ∇ (T,), μ)``, or None.

    On a support ``S`` the stationarity of ``aᵀw + r‖g_w‖`` (``a = lin``, ``r = radius``) reads
    ``G_SS w_S = (q/r)(μ1 − a_S)`` with ``q = ‖g_w‖``; with ``y = G_SS⁻¹1``, ``z = G_SS⁻¹a_S``,
    ``1ᵀw = 1`` and ``wᵀGw = q²`` give ``(1ᵀy)μ² − 2(1ᵀz)μ + a_Sᵀz − r² = 0`` (the larger root),
    ``w_S = (μy − z)/√disc`` and ``q = r/√disc``. ``∇ = a + (r/q)Gw`` is the objective's gradient
    (``= μ`` on ``S``); ``w`` is the optimum when ``w_S > 0`` and ``∇_j ≥ μ`` off ``S`` (the problem is
    convex and smooth where ``g_w ≠ 0``). None when ``G_SS`` is singular or there is no real root.
    """
    idx = support
    sub = g[idx[:, None], idx[None, :]]
    rhs = np.stack([np.ones(idx.shape[0]), lin[idx]], axis=1)
    sol = accurate_solve(sub, rhs, 1.0)
    if sol is None:
        return None
    y, z = sol[:, 0], sol[:, 1]
    quad_a, quad_b = float(y.sum()), float(z.sum())
    disc = quad_b * quad_b - quad_a * (float(lin[idx] @ z) - radius * radius)
    if not (quad_a > 0 and disc > 0):
        return None
    root = math.sqrt(disc)
    mu = (quad_b + root) / quad_a
    w = np.zeros(g.shape[0])
    w[idx] = (mu * y - z) / root
    return w, lin + root * (g @ w), mu


def _cagrad_dual_by_active_set(
    g: Array, lin: Array, radius: float, support: IndexArray, steps: int = _SUPPORT_STEPS
) -> Array | None:
    """CAGrad dual optimum by primal-dual active-set steps on :func:`_cagrad_dual_on_support` from
    ``support`` (``S ← {i ∈ S : w_i > 0} ∪ {j ∉ S : ∇_j < μ}``); None when the steps do not reach the KKT
    conditions (the caller then runs the bracketing root search)."""
    inside = np.zeros(g.shape[0], dtype=bool)
    inside[support] = True
    for _ in range(steps):
        idx = np.flatnonzero(inside)
        found = _cagrad_dual_on_support(g, lin, radius, idx)
        if found is None:
            return None
        w, grad, mu = found
        tol = 1e-11 * float(np.abs(grad).max())
        positive = w[idx] > 0
        entering = (~inside) & (grad < mu - tol)
        if bool(positive.all()) and not bool(entering.any()):
            gw = g @ w
            q = math.sqrt(max(float(w @ gw), 0.0))
            if q == 0.0:
                return None
            exact = lin + (radius / q) * gw  # the gradient at w itself, without the closed-form shortcut
            if float(np.abs(exact[idx] - mu).max()) > tol or float(exact.min()) < mu - tol:
                return None
            return w
        updated = entering
        updated[idx[positive]] = True
        if not bool(updated.any()) or bool((updated == inside).all()):
            return None
        inside = updated
    return None


def _cagrad_dual_by_root_search(
    g: Array, lin: Array, g0_sq: float, radius: float, w_mgda: Array, polish: bool = True
) -> Array:
    """CAGrad dual optimum by Brent's method on ``h(s) = ‖g_{w(s)}‖/s = r`` (see :func:`cagrad_dual`);
    ``g`` normalised, ``lin = G1/T``, ``g0_sq = ‖g0‖²``, ``radius = r = c‖g0‖``, ``w_mgda`` the min-norm
    weights of ``g``. Zeros when the optimum is ``g_w = 0``.

    With ``polish`` every new support met by the search is tried with :func:`_cagrad_dual_by_active_set`
    (a few steps); the first that reaches the KKT conditions is the answer: its ``s* = ‖g_w*‖/r`` is the
    root, so from then on the residual is reported as exactly 0, which ends the bracketing loop and
    Brent's method at once. Usually the first one or two evaluations instead of Brent's ~10.
    ``polish=False`` is the plain root search.
    """
    num_tasks = g.shape[0]
    ones = np.ones(num_tasks)
    last = w_mgda  # the previous solve warm-starts the next one
    solved: dict[float, Array] = {}
    tried: set[bytes] = {(w_mgda > 0).tobytes()}
    exact: Array | None = None

    def solve(s: float) -> Array:
        """``w(s)`` (solved once per ``s``); with ``polish``, a new support is tried for the exact optimum."""
        nonlocal last, exact
        if s not in solved:
            shifted = g + s * (np.outer(lin, ones) + np.outer(ones, lin)) + s * s * g0_sq
            last = solved[s] = min_norm_simplex(shifted, warm_start=last)
            support = last > 0
            if polish and support.tobytes() not in tried:
                tried.add(support.tobytes())
                exact = _cagrad_dual_by_active_set(g, lin, radius, np.flatnonzero(support), steps=3)
        return solved[s]

    def residual(s: float) -> float:
        """``‖g_{w(s)}‖ − r s`` (``h(s) = r`` at its root), or exactly 0 once the exact optimum is known."""
        if exact is None:
            w = solve(s)  # may find the exact optimum
            if exact is None:
                return math.sqrt(max(float(w @ g @ w), 0.0)) - radius * s
        return 0.0

    s_hi = math.sqrt(float(np.max(np.diag(g)))) / radius  # h(s_hi) ≤ max‖g_t‖/s_hi = c‖g0‖
    m0 = math.sqrt(max(float(w_mgda @ g @ w_mgda), 0.0))
    s_lo = m0 / radius if m0 > 1e-12 * radius * s_hi else s_hi  # h(m0/c‖g0‖) ≥ c‖g0‖
    while residual(s_lo) < 0:
        s_lo *= 0.1
        if s_lo < 1e-16 * s_hi:
            return np.zeros(num_tasks)
    s_star = s_lo
    if exact is None and s_lo < s_hi:
        s_star = brentq(residual, s_lo, s_hi, xtol=1e-300, rtol=1e-13)
    return exact if exact is not None else solve(s_star)  # s_star was evaluated: no new solve


def cagrad_dual(g: Array, c: float) -> Array:
    """CAGrad's dual ``w* = argmin_{w ∈ Δ} g_wᵀg0 + c‖g0‖‖g_w‖`` (``w* (T,)``) for a symmetric float64 ``g (T, T)``.

    Solved on ``g / mean(diag g)`` (thresholds are relative, so ``w*`` does not depend on the scale).
    Returns zeros when the optimum is ``g_w = 0`` or trivial (``T = 1``, ``g = 0`` or ``g0 = 0``).

    Root search: for ``s > 0`` let ``w(s)`` be the min-norm weights of the shifted points ``g_t + s·g0``
    (Gramian ``G + s(a1ᵀ + 1aᵀ) + s²‖g0‖²11ᵀ`` with ``a = G1/T``): completing the square shows it
    minimises ``g_wᵀg0 + ‖g_w‖²/(2s)`` on the simplex (the dual with ``‖g_w‖`` replaced by its upper
    bound ``‖g_w‖²/(2t) + t/2``, ``s = t/(c‖g0‖)``, tight at ``t = ‖g_w‖``). The dual optimum is
    ``w(s*)`` at the root of ``h(s) = ‖g_{w(s)}‖/s = c‖g0‖``; ``h`` is non-increasing and
    ``‖MGDA point‖/s ≤ h(s) ≤ max_t‖g_t‖/s`` brackets the root, found by Brent's method with exact
    min-norm solves (:func:`_cagrad_dual_by_root_search`). Zeros when there is no root down to
    ``s = 1e-16 s_hi`` (the optimum is ``g_w = 0``).

    Shortcut (same optimum): where ``0`` is not in the hull of the gradients the dual is smooth, and on a
    fixed support its stationarity conditions have a closed form (:func:`_cagrad_dual_on_support`)
    that the convex dual's KKT conditions certify. Active-set steps from the MGDA support
    (:func:`_cagrad_dual_by_active_set`), then each new support met by the root search, are tried
    first; on well-posed Gramians one to three min-norm solves replace Brent's ~10.
    """
    num_tasks = g.shape[0]
    mean_diag = float(np.mean(np.diag(g)))
    if num_tasks == 1 or mean_diag <= 0.0:
        return np.zeros(num_tasks)
    g = g / mean_diag
    lin = g.mean(axis=1)  # a_t = g_tᵀ g0
    g0_sq = max(float(lin.mean()), 0.0)  # ‖g0‖²
    radius = c * math.sqrt(g0_sq)  # c‖g0‖
    if radius == 0.0:
        return np.zeros(num_tasks)
    w_mgda = min_norm_simplex(g)
    m0 = math.sqrt(max(float(w_mgda @ g @ w_mgda), 0.0))
    s_hi = math.sqrt(float(np.max(np.diag(g)))) / radius
    smooth = m0 > 1e-12 * radius * s_hi  # 0 is not in the hull: the dual objective is smooth on Δ
    if smooth:
        w_exact = _cagrad_dual_by_active_set(g, lin, radius, np.flatnonzero(w_mgda > 0))
        if w_exact is not None:
            return w_exact
    return _cagrad_dual_by_root_search(g, lin, g0_sq, radius, w_mgda, polish=smooth)
