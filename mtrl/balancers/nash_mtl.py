"""Nash-MTL: task weights from the Nash bargaining solution ``G α = 1/α``."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from mtrl.balancers._linalg import cosine_matrix_np, to_numpy64
from mtrl.balancers.base import GramianWeighting

__all__ = ["NashMTL", "solve_bargaining"]

Array = npt.NDArray[np.float64]


def solve_bargaining(gram: Array, start: Array, reg_eps: float, tol: float = 1e-18, max_iter: int = 200) -> Array:
    """``α > 0`` minimising ``f(α) = ½ αᵀ (G + ρI) α − Σ_t log α_t`` (``ρ = reg_eps``) by damped Newton.

    ``∇f = 0`` is the bargaining condition ``α ⊙ (G + ρI) α = 1``. ``f`` is strictly convex and
    self-concordant, so Newton with a fraction-to-boundary rule and Armijo backtracking converges
    globally from any positive start; it stops when the Newton decrement ``λ²/2 < tol``, the
    relative step falls below 1e-15, or, near the optimum (``λ² < 1e-12``), when the full step gives
    no measurable decrease of ``f`` in float64.
    """
    a = gram + reg_eps * np.eye(gram.shape[0])
    alpha = np.where(np.isfinite(start) & (start > 0), start, 1.0)

    def f(x: Array) -> float:
        return float(0.5 * x @ a @ x - np.sum(np.log(x)))

    for _ in range(max_iter):
        grad = a @ alpha - 1.0 / alpha
        hess = a + np.diag(1.0 / alpha**2)
        step = -np.linalg.solve(hess, grad)
        decrement = float(-grad @ step)
        if decrement / 2.0 < tol or float(np.max(np.abs(step) / alpha)) < 1e-15:
            break
        shrink = step < 0
        t = min(1.0, 0.99 * float(np.min(-alpha[shrink] / step[shrink]))) if shrink.any() else 1.0
        f0 = f(alpha)
        while f(alpha + t * step) > f0 - 0.25 * t * decrement:
            if decrement < 1e-12 or t < 1e-10:  # no decrease measurable in float64: converged to rounding
                return np.asarray(alpha, dtype=np.float64)
            t *= 0.5
        alpha = alpha + t * step
    return np.asarray(alpha, dtype=np.float64)


class NashMTL(GramianWeighting):
    """Nash-MTL: weights from the Nash bargaining solution between tasks.

    Update rule: with the normalised Gramian ``Ĝ = G/‖G‖_F``, find ``α > 0`` with ``Ĝα = 1/α`` (the
    bargaining condition ``α ⊙ Ĝα = 1``, i.e. ``g_t·d = 1/α_t`` for ``d = Jᵀα``), by exact Newton on
    the convex ``f(α) = ½αᵀĜα − Σ log α_t``; then scale ``α`` down so that ``‖d‖ = √(αᵀGα) ≤ max_norm``.
    Weights are recomputed every ``update_weights_every`` calls and reused in between.

    Paper: Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022, arXiv 2202.01017,
    Eq. 4 (Theorem 3.1) and Section 3.2.

    Note: as in the official code, ``G`` is normalised by its Frobenius norm and the shared update is
    clipped to norm ``max_norm`` (the official code clips the shared parameters' gradient norm with
    ``clip_grad_norm_``; here the clip is folded into the weights so that every engine strategy
    applies it, and the reported weights are the clipped ones; ``max_norm <= 0`` disables it). The
    official code runs at most 20 cvxpy sequential convex iterations; here Newton runs to convergence
    (no cvxpy), on the cosine matrix (see :meth:`bargaining_weights`). Rank-deficient ``G`` has no
    bargaining solution (``f`` is unbounded below along non-negative null directions): a zero-norm
    task gets weight 0, and a ridge ``reg_eps · I`` on the cosine matrix makes linearly dependent
    gradients well posed: weights along null directions become large (``~1/√reg_eps``) but cancel
    in ``d``, which is then clipped. An all-zero ``G`` gives zero weights. Heads: the official code
    backpropagates ``Σ_t α_t L_t``, so each head receives ``α_t``-weighted gradients; here, as for every
    Gramian weighting of mtrl, each head receives its own task's raw (unweighted) gradient.

    Stateful: the previous ``α`` (warm start and reuse between updates) and the step counter.
    """

    name: ClassVar[str] = "nash_mtl"
    stateful: ClassVar[bool] = True

    @property
    def loss_scale_problem(self) -> str | None:
        """Loss scaling ``L → S·L``: ``α`` is computed on ``G/‖G‖_F`` and cosines (invariant), so ``d → S d``
        only without the clip ``‖d‖ ≤ max_norm`` (``max_norm <= 0``), which would bound ``S·d`` instead of ``d``."""
        if self.max_norm <= 0:
            return None
        return (
            f"the clip ||d|| <= max_norm={self.max_norm} would act on the S-scaled direction (max_norm=0 disables it)"
        )

    def __init__(
        self, num_tasks: int, max_norm: float = 1.0, update_weights_every: int = 1, reg_eps: float = 1e-8
    ) -> None:
        super().__init__(num_tasks)
        if not isinstance(max_norm, (int, float)) or isinstance(max_norm, bool) or not math.isfinite(max_norm):
            raise ValueError(f"max_norm must be a finite float (<= 0 disables clipping), got {max_norm!r}")
        if not isinstance(update_weights_every, int) or update_weights_every < 1:
            raise ValueError(f"update_weights_every must be a positive int, got {update_weights_every!r}")
        if not isinstance(reg_eps, (int, float)) or not reg_eps > 0 or not math.isfinite(reg_eps):
            raise ValueError(f"reg_eps must be a finite float > 0 (default 1e-8), got {reg_eps!r}")
        self.max_norm = float(max_norm)
        self.update_weights_every = update_weights_every
        self.reg_eps = float(reg_eps)
        self.step = 0
        self.alpha: Tensor | None = None  # (T,) float64 CPU, solution on the normalised Gramian

    def bargaining_weights(self, gram: Tensor) -> Tensor:
        """Unclipped ``α (T,)`` float64 on ``gram``'s device, solving ``Ĝα = 1/α`` (ridge on the cosines).

        The condition is invariant to a diagonal rescaling: with ``G = D C D`` (``D = diag(‖g_t‖)``,
        ``C`` the cosines), ``β = Dα/√‖G‖_F`` solves ``β ⊙ Cβ = 1``, which is solved instead (well
        conditioned whatever the norms), with the ridge ``reg_eps·I`` on ``C``. Zero-norm tasks get 0.
        """
        return torch.from_numpy(self._bargaining(to_numpy64(gram))).to(gram.device)

    def _bargaining(self, g: Array) -> Array:
        """:meth:`bargaining_weights` on a symmetric float64 array; stores ``α`` as the warm start."""
        cos, norms = cosine_matrix_np(g)
        fro = float(np.linalg.norm(g))
        if fro == 0.0:
            return np.zeros(self.num_tasks)
        active = norms > 0
        norms_a = norms[active]
        root = math.sqrt(fro)
        start = np.ones(int(active.sum()))
        if self.alpha is not None:
            start = self.alpha.numpy()[active] * norms_a / root
        beta = solve_bargaining(cos[np.ix_(active, active)], start, self.reg_eps)
        alpha = np.zeros(self.num_tasks)
        alpha[active] = beta * root / norms_a
        self.alpha = torch.from_numpy(alpha)
        return alpha

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w (T,)`` float64: ``α``, clipped so that ``‖Jᵀw‖ ≤ max_norm``; advances the step."""
        g = to_numpy64(gram)
        if self.step % self.update_weights_every == 0 or self.alpha is None:
            alpha = self._bargaining(g)
        else:
            alpha = self.alpha.numpy()
        self.step += 1
        if self.max_norm > 0:
            norm = math.sqrt(max(float(alpha @ g @ alpha), 0.0))
            if norm > self.max_norm:
                alpha = alpha * (self.max_norm / norm)
        return torch.from_numpy(np.array(alpha, dtype=np.float64)).to(gram.device)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "alpha": None if self.alpha is None else self.alpha.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"step", "alpha"}:
            raise ValueError(f"NashMTL state must have the keys ['alpha', 'step'], got {sorted(state)}")
        alpha = state["alpha"]
        if alpha is not None and tuple(alpha.shape) != (self.num_tasks,):
            raise ValueError(f"NashMTL state alpha must have shape ({self.num_tasks},), got {tuple(alpha.shape)}")
        self.step = int(state["step"])
        self.alpha = None if alpha is None else alpha.detach().to(device="cpu", dtype=torch.float64).clone()

    def reset(self) -> None:
        self.step = 0
        self.alpha = None

    def extra_repr(self) -> str:
        return f"max_norm={self.max_norm}, update_weights_every={self.update_weights_every}, reg_eps={self.reg_eps}"
