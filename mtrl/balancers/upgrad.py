"""UPGrad: project each task gradient onto the dual cone of the Jacobian's rows, then sum."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers._linalg import to_numpy64
from mtrl.balancers._qp import nonneg_qp, nonneg_qp_batch
from mtrl.balancers.base import GramianWeighting

__all__ = ["UPGrad"]


class UPGrad(GramianWeighting):
    """Unconflicting projection of gradients: every task's share is made non-conflicting, then summed.

    Update rule: for each task ``i``, project ``g_i / T`` onto the dual cone ``{x : Jx ≥ 0}``. The
    projection of ``Jᵀu`` is ``Jᵀv`` with ``v = argmin_{v ≥ u} vᵀGv`` (a QP on the Gramian, whose KKT
    conditions are ``Gv ≥ 0``, ``(Gv) ⊙ (v − u) = 0``); ``w = Σ_i v^(i)``, so ``Jd = G w ≥ 0``: no task
    is hurt to first order. Numerically ``G`` is replaced by ``G/tr(G) + reg_eps·I`` (zeros when
    ``tr(G) < norm_eps``).

    Paper: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024, arXiv 2406.16232,
    Section 4 (Eq. 5, Proposition 1), as implemented in torchjd ``UPGrad``.

    Note: torchjd solves each QP with the ``quadprog`` package; here the ``T`` QPs (which share the
    matrix) are solved together by batched primal-dual active-set steps finished by an exact
    active-set solver (``nonneg_qp_batch`` in ``mtrl/balancers/_qp.py``; one sequential least-squares
    solve per task when ``reg_eps = 0``), with the same ``norm_eps``/``reg_eps`` normalisation and
    regularisation, so ``Jd ≥ −reg_eps·tr(G)·|w|`` rather than ``≥ 0`` exactly. The preference
    vector is fixed to the mean (``1/T``), torchjd's default. As in torchjd, ``norm_eps`` is an
    absolute threshold: when ``tr(G) < norm_eps`` (``‖J‖_F < 1e-2`` by default) the projections are
    skipped and ``d`` is the plain mean gradient; pass ``norm_eps=0`` to always project.

    Stateless.
    """

    name: ClassVar[str] = "upgrad"

    @property
    def loss_scale_problem(self) -> str | None:
        """Loss scaling ``L → S·L`` (``G → S² G``): the projections are invariant, so ``d → S d``, but the
        absolute threshold ``tr G ≥ norm_eps`` moves with ``S²`` unless ``norm_eps = 0``."""
        if self.norm_eps == 0:
            return None
        return f"its absolute threshold trace(G) >= norm_eps={self.norm_eps} moves with S^2 (norm_eps=0 removes it)"

    def __init__(self, num_tasks: int, norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> None:
        super().__init__(num_tasks)
        for key, value in (("norm_eps", norm_eps), ("reg_eps", reg_eps)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"UPGrad {key} must be a finite float >= 0 (default 1e-4), got {value!r}")
        self.norm_eps = float(norm_eps)
        self.reg_eps = float(reg_eps)

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w (T,)`` float64: the sum of the projected preference vectors."""
        num_tasks = self.num_tasks
        g = to_numpy64(gram)
        trace = float(np.trace(g))
        g = g / trace if trace >= self.norm_eps and trace > 0 else np.zeros_like(g)
        a = g + self.reg_eps * np.eye(num_tasks)
        # v^(i) = u_i + x_i with u_i = e_i/T and x_i ≥ 0 minimising ½ xᵀAx + (Au_i)ᵀx: T QPs sharing A
        prefs = np.eye(num_tasks) / num_tasks  # (T, T), row i = u_i
        if self.reg_eps > 0:
            shifts = nonneg_qp_batch(a, prefs @ a)  # A symmetric: row i = (A u_i)ᵀ
        else:  # A may be singular: one least-squares active-set solve per task, each warm-starting the next
            shifts = np.zeros((num_tasks, num_tasks))
            previous: np.ndarray | None = None
            for i in range(num_tasks):
                previous = nonneg_qp(a, a @ prefs[i], definite=False, warm_start=previous)
                shifts[i] = previous
        total = (prefs + shifts).sum(axis=0)
        return torch.from_numpy(total).to(gram.device)

    def extra_repr(self) -> str:
        return f"norm_eps={self.norm_eps}, reg_eps={self.reg_eps}"
