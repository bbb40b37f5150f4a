"""CAGrad: the update in a ball around the mean gradient that maximises the worst task improvement."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch
from scipy.optimize import brentq
from torch import Tensor

from mtrl.balancers._linalg import to_numpy64
from mtrl.balancers._qp import accurate_solve, min_norm_simplex
from mtrl.balancers.base import GramianWeighting

__all__ = ["CAGrad"]

Array = npt.NDArray[np.float64]
IndexArray = npt.NDArray[np.intp]

#: active-set steps of :meth:`CAGrad.dual_weights` before it falls back to the bracketing root search
_SUPPORT_STEPS = 12


def _dual_on_support(
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


def _dual_by_active_set(
    g: Array, lin: Array, radius: float, support: IndexArray, steps: int = _SUPPORT_STEPS
) -> Array | None:
    """CAGrad dual optimum by primal-dual active-set steps on :func:`_dual_on_support` from ``support``
    (``S ← {i ∈ S : w_i > 0} ∪ {j ∉ S : ∇_j < μ}``); None when the steps do not reach the KKT conditions
    (the caller then runs the bracketing root search)."""
    inside = np.zeros(g.shape[0], dtype=bool)
    inside[support] = True
    for _ in range(steps):
        idx = np.flatnonzero(inside)
        found = _dual_on_support(g, lin, radius, idx)
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


class _Found(Exception):
    """Raised inside the root search when an evaluated support already gives the exact optimum."""

    def __init__(self, weights: Array) -> None:
        super().__init__()
        self.weights = weights


def _dual_by_root_search(
    g: Array, lin: Array, g0_sq: float, radius: float, w_mgda: Array, polish: bool = True
) -> Array:
    """CAGrad dual optimum by Brent's method on ``h(s) = ‖g_{w(s)}‖/s = r`` (see :meth:`CAGrad.dual_weights`);
    ``g`` normalised, ``lin = G1/T``, ``g0_sq = ‖g0‖²``, ``radius = r = c‖g0‖``, ``w_mgda`` the min-norm
    weights of ``g``. Zeros when the optimum is ``g_w = 0``.

    With ``polish`` every new support met by the search is tried with :func:`_dual_by_active_set`
    (a few steps), and the first that reaches the KKT conditions ends the search: usually the first
    one or two evaluations instead of Brent's ~10. ``polish=False`` is the plain root search.
    """
    num_tasks = g.shape[0]
    ones = np.ones(num_tasks)
    last: list[Array] = [w_mgda]  # the previous solve warm-starts the next one
    solved: dict[float, tuple[Array, float]] = {}
    tried: set[bytes] = {(w_mgda > 0).tobytes()}

    def solve(s: float) -> tuple[Array, float]:
        if s not in solved:
            shifted = g + s * (np.outer(lin, ones) + np.outer(ones, lin)) + s * s * g0_sq
            w = min_norm_simplex(shifted, warm_start=last[-1])
            last[:] = [w]
            solved[s] = (w, math.sqrt(max(float(w @ g @ w), 0.0)))
            support = w > 0
            if polish and support.tobytes() not in tried:
                tried.add(support.tobytes())
                exact = _dual_by_active_set(g, lin, radius, np.flatnonzero(support), steps=3)
                if exact is not None:
                    raise _Found(exact)
        return solved[s]

    try:
        s_hi = math.sqrt(float(np.max(np.diag(g)))) / radius  # h(s_hi) ≤ max‖g_t‖/s_hi = c‖g0‖
        m0 = math.sqrt(max(float(w_mgda @ g @ w_mgda), 0.0))
        s_lo = m0 / radius if m0 > 1e-12 * radius * s_hi else s_hi  # h(m0/c‖g0‖) ≥ c‖g0‖
        while solve(s_lo)[1] < radius * s_lo:
            s_lo *= 0.1
            if s_lo < 1e-16 * s_hi:
                return np.zeros(num_tasks)
        if s_lo < s_hi:
            s_star = brentq(lambda s: solve(s)[1] - radius * s, s_lo, s_hi, xtol=1e-300, rtol=1e-13)
        else:
            s_star = s_lo
        return solve(s_star)[0]
    except _Found as found:
        return found.weights


class CAGrad(GramianWeighting):
    """Conflict-averse gradient descent: maximise the least task improvement near the mean gradient.

    Update rule: ``g0 = Jᵀ1/T`` (mean gradient). Primal ``max_d min_t g_tᵀd`` s.t.
    ``‖d − g0‖ ≤ c‖g0‖``; dual ``w* = argmin_{w ∈ Δ} g_wᵀg0 + c‖g0‖‖g_w‖`` with ``g_w = Jᵀw``, giving
    ``d = g0 + (c‖g0‖/‖g_w*‖) g_w*``, divided by ``1 + c²`` when ``rescale``. In weights:
    ``w = (1/T + (c‖g0‖/‖g_w*‖) w*) / (1 + c²)``. ``c = 0`` is the mean gradient.

    Paper: Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021,
    arXiv 2110.14048, Eq. 3–4 and Algorithm 1.

    Note: the official supervised code and LibMTL solve the dual with scipy SLSQP, the official MT10
    code with 20 SGD steps on softmax logits, torchjd with cvxpy; here it is solved to optimality in
    float64, in closed form on the optimal support found by active-set steps or along a scalar root
    search over exact min-norm subproblems (:meth:`dual_weights`), on the Gramian divided by its mean
    diagonal, with no absolute epsilon (the official code adds
    ``1e-4``/``1e-8`` inside square roots), so the weights do not depend on the gradients' scale.
    When ``g_w* = 0`` (the dual optimum is the origin, e.g. ``0`` in the hull of the gradients),
    ``d = g0``, divided by ``1 + c²`` under ``rescale`` like every update (the official code's
    ``+1e-8`` and torchjd's ``norm_eps`` lead to the same).
    ``rescale`` is the official ``rescale=1`` (torchjd does not rescale).

    Stateless.
    """

    name: ClassVar[str] = "cagrad"
    #: Loss scaling ``L → S·L`` (``G → S² G``): the dual works on ``G / mean(diag G)`` with relative
    #: thresholds only, so the weights are invariant and ``d → S d``.
    loss_scale_problem: ClassVar[str | None] = None

    def __init__(self, num_tasks: int, c: float = 0.4, rescale: bool = True) -> None:
        super().__init__(num_tasks)
        if not isinstance(c, (int, float)) or isinstance(c, bool) or not math.isfinite(c) or c < 0:
            raise ValueError(f"CAGrad c must be a finite float >= 0 (0.4 default; 0.9 on MT10), got {c!r}")
        if not isinstance(rescale, bool):
            raise TypeError(f"rescale must be a bool, got {rescale!r}")
        self.c = float(c)
        self.rescale = rescale

    def dual_weights(self, gram: Tensor) -> Tensor:
        """``w* (T,)`` float64 on the simplex minimising ``g_wᵀg0 + c‖g0‖‖g_w‖`` (zeros: see below).

        For ``s > 0`` let ``w(s)`` be the min-norm weights of the shifted points ``g_t + s·g0``
        (Gramian ``G + s(a1ᵀ + 1aᵀ) + s²‖g0‖²11ᵀ`` with ``a = G1/T``): completing the square shows it
        minimises ``g_wᵀg0 + ‖g_w‖²/(2s)`` on the simplex (the dual with ``‖g_w‖`` replaced by its upper
        bound ``‖g_w‖²/(2t) + t/2``, ``s = t/(c‖g0‖)``, tight at ``t = ‖g_w‖``). The dual optimum is
        ``w(s*)`` at the root of ``h(s) = ‖g_{w(s)}‖/s = c‖g0‖``; ``h`` is non-increasing and
        ``‖MGDA point‖/s ≤ h(s) ≤ max_t‖g_t‖/s`` brackets the root, found by Brent's method with exact
        min-norm solves. Returns zeros when the optimum is ``g_w = 0`` (no root down to
        ``s = 1e-16 s_hi``) or trivial (``T = 1``, ``G = 0`` or ``g0 = 0``).

        Shortcut (same optimum): on a fixed support the dual's stationarity conditions have a closed
        form (:func:`_dual_on_support`), and the convex dual's KKT conditions certify it. Active-set
        steps from the MGDA support, then each new support met by the root search, are tried first;
        on well-posed Gramians one to three min-norm solves replace Brent's ~10.
        """
        return torch.from_numpy(self._dual(to_numpy64(gram))).to(gram.device)

    def _dual(self, g: Array) -> Array:
        """:meth:`dual_weights` of a symmetric float64 array ``g (T, T)``.

        Where ``0`` is not in the hull of the gradients the dual is smooth and its optimum is first
        sought by active-set steps from the MGDA support (:func:`_dual_by_active_set`, exact when it
        succeeds, usually in 1–3 small solves); otherwise, or when those steps fail, by the root
        search of :meth:`dual_weights` (:func:`_dual_by_root_search`).
        """
        num_tasks = self.num_tasks
        mean_diag = float(np.mean(np.diag(g)))
        if num_tasks == 1 or mean_diag <= 0.0:
            return np.zeros(num_tasks)
        g = g / mean_diag
        lin = g.mean(axis=1)  # a_t = g_tᵀ g0
        g0_sq = max(float(lin.mean()), 0.0)  # ‖g0‖²
        radius = self.c * math.sqrt(g0_sq)  # c‖g0‖
        if radius == 0.0:
            return np.zeros(num_tasks)
        w_mgda = min_norm_simplex(g)
        m0 = math.sqrt(max(float(w_mgda @ g @ w_mgda), 0.0))
        s_hi = math.sqrt(float(np.max(np.diag(g)))) / radius
        smooth = m0 > 1e-12 * radius * s_hi  # 0 is not in the hull: the dual objective is smooth on Δ
        if smooth:
            w_exact = _dual_by_active_set(g, lin, radius, np.flatnonzero(w_mgda > 0))
            if w_exact is not None:
                return w_exact
        return _dual_by_root_search(g, lin, g0_sq, radius, w_mgda, polish=smooth)

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w (T,)`` float64 such that ``d = wᵀJ`` (see the class docstring)."""
        num_tasks = self.num_tasks
        uniform = np.full(num_tasks, 1.0 / num_tasks)
        scale = 1.0 + self.c**2 if self.rescale else 1.0
        if self.c == 0.0:
            return torch.from_numpy(uniform).to(gram.device)
        g = to_numpy64(gram)
        w_star = self._dual(g)
        g0_norm = math.sqrt(max(float(uniform @ g @ uniform), 0.0))
        gw_norm = math.sqrt(max(float(w_star @ g @ w_star), 0.0))
        max_norm = math.sqrt(max(float(np.max(np.diag(g))), 0.0))
        if not bool(w_star.any()) or gw_norm <= 1e-10 * max_norm or g0_norm == 0.0:
            return torch.from_numpy(uniform / scale).to(gram.device)
        return torch.from_numpy((uniform + (self.c * g0_norm / gw_norm) * w_star) / scale).to(gram.device)

    def extra_repr(self) -> str:
        return f"c={self.c}, rescale={self.rescale}"
