"""CAGrad: the update in a ball around the mean gradient that maximises the worst task improvement."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers._linalg import Array, to_numpy64
from mtrl.balancers._qp import cagrad_dual
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
    float64, in closed form on the optimal support found by active-set steps or along a scalar root
    search over exact min-norm subproblems (:meth:`dual_weights`), on the Gramian divided by its mean
    diagonal, with no absolute epsilon (the official code adds
    ``1e-4``/``1e-8`` inside square roots), so the weights do not depend on the gradients' scale.
    When ``g_w* = 0`` (the dual optimum is the origin, e.g. ``0`` in the hull of the gradients; in
    float64, ``‖g_w*‖`` at most ``1e-10·max_t‖g_t‖`` or below ``10·sqrt(T·eps)·Σ_t w*_t‖g_t‖``, the
    round-off of ``‖g_w‖``),
    ``d = g0``, divided by ``1 + c²`` under ``rescale`` like every update (the official code's
    ``+1e-8`` and torchjd's ``norm_eps`` lead to the same).
    ``rescale`` is the official ``rescale=1`` (torchjd does not rescale).

    Stateless.
    """

    name: ClassVar[str] = "cagrad"
    #: Loss scaling ``L → S·L`` (``G → S² G``): the dual works on ``G / mean(diag G)`` with relative
    #: thresholds only, so the weights are invariant and ``d → S d``.
    loss_scale_problem: ClassVar[str | None] = None
    #: MT10: ``c = 0.9``, the official MT10 script (Cranial-XIX/CAGrad ``mtrl/mtrl_files/run.sh``; 0.5 on MT50).
    metaworld_hparams: ClassVar[Mapping[str, float]] = {"c": 0.9}

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

        Solved exactly by :func:`mtrl.balancers._qp.cagrad_dual`: a closed form on the optimal support
        found by active-set steps, certified by the dual's KKT conditions, or else Brent's method on the
        scalar ``s`` for which the min-norm point of the shifted gradients ``g_t + s·g0`` solves the dual.
        Returns zeros when the optimum is ``g_w = 0`` or trivial (``T = 1``, ``G = 0`` or ``g0 = 0``).
        """
        return torch.from_numpy(self._dual(to_numpy64(gram))).to(gram.device)

    def _dual(self, g: Array) -> Array:
        """:meth:`dual_weights` of a symmetric float64 array ``g (T, T)``."""
        return cagrad_dual(g, self.c)

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
        norms = np.sqrt(np.clip(np.diag(g), 0.0, None))  # ‖g_t‖
        # g_w = 0 at the dual optimum: ‖g_w‖ at most 1e-10·max‖g_t‖, or below the round-off of sqrt(wᵀGw),
        # about sqrt(T·eps)·Σ w_t‖g_t‖ (dividing by that noise gave weights of 1e7 on rank-1 input)
        round_off = 10.0 * math.sqrt(num_tasks * np.finfo(np.float64).eps) * float(w_star @ norms)
        zero = max(1e-10 * float(norms.max()), round_off)
        if not bool(w_star.any()) or gw_norm <= zero or g0_norm == 0.0:
            return torch.from_numpy(uniform / scale).to(gram.device)
        return torch.from_numpy((uniform + (self.c * g0_norm / gw_norm) * w_star) / scale).to(gram.device)

    def extra_repr(self) -> str:
        return f"c={self.c}, rescale={self.rescale}"
