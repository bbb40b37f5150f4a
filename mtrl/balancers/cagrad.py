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
from mtrl.balancers._qp import min_norm_simplex
from mtrl.balancers.base import GramianWeighting

__all__ = ["CAGrad"]


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
    float64 by a scalar root search over exact min-norm subproblems (:meth:`dual_weights`), on the
    Gramian divided by its mean diagonal, with no absolute epsilon (the official code adds
    ``1e-4``/``1e-8`` inside square roots), so the weights do not depend on the gradients' scale.
    When ``g_w* = 0`` (the dual optimum is the origin, e.g. ``0`` in the hull of the gradients),
    ``d = g0``, divided by ``1 + c²`` under ``rescale`` like every update (the official code's
    ``+1e-8`` and torchjd's ``norm_eps`` lead to the same).
    ``rescale`` is the official ``rescale=1`` (torchjd does not rescale).

    Stateless.
    """

    name: ClassVar[str] = "cagrad"

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
        """
        num_tasks = self.num_tasks
        g = to_numpy64(gram)
        mean_diag = float(np.mean(np.diag(g)))
        if num_tasks == 1 or mean_diag <= 0.0:
            return torch.zeros(num_tasks, dtype=torch.float64, device=gram.device)
        g = g / mean_diag
        lin = g.mean(axis=1)  # a_t = g_tᵀ g0
        g0_sq = max(float(lin.mean()), 0.0)  # ‖g0‖²
        radius = self.c * math.sqrt(g0_sq)  # c‖g0‖
        if radius == 0.0:
            return torch.zeros(num_tasks, dtype=torch.float64, device=gram.device)
        ones = np.ones(num_tasks)

        last: list[npt.NDArray[np.float64]] = []  # the previous solve warm-starts the next one
        solved: dict[float, tuple[npt.NDArray[np.float64], float]] = {}

        def solve(s: float) -> tuple[npt.NDArray[np.float64], float]:
            if s not in solved:
                shifted = g + s * (np.outer(lin, ones) + np.outer(ones, lin)) + s * s * g0_sq
                w = min_norm_simplex(shifted, warm_start=last[-1] if last else None)
                last[:] = [w]
                solved[s] = (w, math.sqrt(max(float(w @ g @ w), 0.0)))
            return solved[s]

        s_hi = math.sqrt(float(np.max(np.diag(g)))) / radius  # h(s_hi) ≤ max‖g_t‖/s_hi = c‖g0‖
        w_mgda = min_norm_simplex(g)
        last.append(w_mgda)
        m0 = math.sqrt(max(float(w_mgda @ g @ w_mgda), 0.0))
        s_lo = m0 / radius if m0 > 1e-12 * radius * s_hi else s_hi  # h(m0/c‖g0‖) ≥ c‖g0‖
        while solve(s_lo)[1] < radius * s_lo:
            s_lo *= 0.1
            if s_lo < 1e-16 * s_hi:
                return torch.zeros(num_tasks, dtype=torch.float64, device=gram.device)
        if s_lo < s_hi:
            s_star = brentq(lambda s: solve(s)[1] - radius * s, s_lo, s_hi, xtol=1e-300, rtol=1e-13)
        else:
            s_star = s_lo
        return torch.from_numpy(solve(s_star)[0]).to(gram.device)

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w (T,)`` float64 such that ``d = wᵀJ`` (see the class docstring)."""
        gram64 = gram.detach().to(torch.float64)
        uniform = torch.full((self.num_tasks,), 1.0 / self.num_tasks, dtype=torch.float64, device=gram64.device)
        scale = 1.0 + self.c**2 if self.rescale else 1.0
        if self.c == 0.0:
            return uniform
        w_star = self.dual_weights(gram64)
        if not bool(w_star.any()):
            return uniform / scale
        g0_norm = math.sqrt(max(float(uniform @ gram64 @ uniform), 0.0))
        gw_norm = math.sqrt(max(float(w_star @ gram64 @ w_star), 0.0))
        max_norm = math.sqrt(float(torch.diagonal(gram64).clamp(min=0).max()))
        if gw_norm <= 1e-10 * max_norm or g0_norm == 0.0:
            return uniform / scale
        return (uniform + (self.c * g0_norm / gw_norm) * w_star) / scale

    def extra_repr(self) -> str:
        return f"c={self.c}, rescale={self.rescale}"
