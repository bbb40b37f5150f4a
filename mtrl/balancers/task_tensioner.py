"""Task Tensioner (CDTT): the EDM central direction pulled towards tasks by their convergence behaviour."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers._linalg import Array
from mtrl.balancers._qp import min_norm_simplex
from mtrl.balancers.base import GradientBalancer, check_jacobian

__all__ = ["COINCIDE_TOL", "TaskTensioner", "coinciding_groups", "edm_direction"]

_STATE_KEYS = ("norm_buffer", "prev_window_sum", "steps")


#: Unit directions with ``1 − u_s·u_t ≤ COINCIDE_TOL`` count as one direction in the EDM step (see
#: :func:`edm_direction`): far above the rounding of a float64 cosine of two equal directions (``~eps·log P``
#: with blocked sums, at most ``~P·eps``: 2.2e-11 at P = 1e5) and of float32 gradients of one direction
#: (losses ``L`` and ``3L`` through a 39-400-400-1 MLP, P = 1.8e5: ``‖Δu‖ = 1.8e-7``, ``1 − cos = 2.4e-14``),
#: above the 1e-12 stopping tolerance of :func:`mtrl.balancers._qp.min_norm_simplex` (so the solver never
#: meets a pair it cannot tell apart), and an angle of at most 1.4e-5 rad, which no training step distinguishes.
COINCIDE_TOL = 1e-10


def coinciding_groups(cos: Array, tol: float = COINCIDE_TOL) -> Array:
    """Membership ``M (T, K)`` of the classes of tasks whose unit directions coincide, ``M_tA = 1/|A|`` for
    ``t ∈ A``, from the cosines ``cos (T, T)``: ``s ~ t`` when ``1 − cos_st ≤ tol``, closed transitively (the
    connected components, so the classes do not depend on the task order). Columns follow the smallest
    member; ``K = T`` gives the identity."""
    num_tasks = cos.shape[0]
    near = (1.0 - 0.5 * (cos + cos.T)) <= tol
    label = np.arange(num_tasks)
    for _ in range(num_tasks):  # propagate the smallest index along edges until stable
        updated = np.where(near, label[None, :], num_tasks).min(axis=1)
        updated = np.minimum(updated, label)
        if bool((updated == label).all()):
            break
        label = updated
    roots = np.unique(label)
    member = (label[:, None] == roots[None, :]).astype(np.float64)
    return np.asarray(member / member.sum(axis=0), dtype=np.float64)


def edm_direction(jac64: Tensor) -> tuple[Tensor, Tensor]:
    """EDM central direction ``d*`` (Katrutsa et al., arXiv 2007.06937) of non-zero rows ``jac64 (T, P)``.

    ``n_t = ‖g_t‖``, ``u_t = g_t / n_t``, ``c = argmin_{c ∈ Δ, c_s = c_t for s ~ t} ‖Σ c_t u_t‖²`` (the MGDA
    sub-problem on the unit gradients, solved exactly by :func:`mtrl.balancers._qp.min_norm_simplex` on the
    classes' mean directions), ``γ = 1 / Σ_t c_t / n_t``, ``d* = γ Σ_t c_t u_t = Σ_t w_t g_t`` with
    ``w_t = γ c_t / n_t`` (``Σ w = 1``). Returns ``(d* (P,), w (T,))`` in the dtype and on the device of
    ``jac64``; every row must be non-zero.

    ``s ~ t``: the unit directions coincide, ``1 − u_s·u_t ≤ COINCIDE_TOL`` (1e-10), closed transitively
    (:func:`coinciding_groups`). Where no two directions coincide this is the paper's ``c``. Where they do,
    the plain problem's optimal ``c`` is not unique (only each class's total is fixed), and ``γ``, so ``d*``,
    depends on how a class's weight is split between members of different norms; the canonical choice is the
    equal split, which is the optimum of least ``‖c‖`` (whenever the distinct directions' optimum is unique).
    It is the continuous one: for two distinct directions the minimiser is always ``c = (½, ½)`` (the
    midpoint of two unit vectors), so as they merge ``d*`` tends to ``γ u`` with ``γ`` the harmonic mean of
    the two norms, never to one of the gradients. The choice is permutation-equivariant and does not depend
    on rounding (a solver's tie-break on exactly equal directions does: the first smallest vertex, decided
    by the ``1e-16`` rounding of ``u_t·u_t``). One non-uniqueness is left to the solver: when the origin is
    in the hull of more distinct directions than the rank plus one (possible only for a rank-deficient
    ``J``), ``Σ c_t u_t = 0`` for many ``c``; ``d* = 0`` for all of them, only ``w`` is the solver's pick.
    """
    norms_T = jac64.norm(dim=1)
    gram_unit = ((jac64 @ jac64.T) / (norms_T[:, None] * norms_T[None, :])).cpu().numpy()  # u_s · u_t (T, T)
    member = coinciding_groups(gram_unit)
    if member.shape[1] == member.shape[0]:  # all distinct: the plain problem
        c = min_norm_simplex(gram_unit, guess=False)
    else:  # one vertex per class at the mean direction, then the equal split
        c = member @ min_norm_simplex(member.T @ gram_unit @ member, guess=False)
    c_T = torch.as_tensor(c, dtype=jac64.dtype, device=jac64.device)
    gamma = 1.0 / (c_T / norms_T).sum()
    w_T = gamma * c_T / norms_T
    return w_T @ jac64, w_T


class TaskTensioner(GradientBalancer):
    """Start from the EDM central direction and add per-task unit "tensions" scaled by each task's trend.

    Update rule at call ``k`` with rows ``g_t`` of ``J`` and losses ``L_t``:

    1. EDM: ``u_t = g_t/‖g_t‖``, ``c = argmin_{c ∈ Δ, c_s = c_t for s ~ t} ‖Σ c_t u_t‖²`` (solved exactly;
       ``s ~ t``: coinciding unit directions, ``1 − u_s·u_t ≤ 1e-10``), ``d* = Σ_t c_t u_t / Σ_t (c_t/‖g_t‖)``.
    2. Push ``‖g_t‖`` into a circular buffer of the last ``K = window`` norms; once full,
       ``S_t(k) = Σ buffer_t``. From the ``(K+1)``-th call on (when ``S_t(k−1)`` exists):
       ``δ_t = S_t(k)/S_t(k−1) + log10 L_t``, ``c_t = max(0, α σ(e (δ_t − 1)) + 1 − α)`` (σ logistic,
       ``e`` Euler's number), ``v = d* + Σ_t c_t (g_t − d*)/‖g_t − d*‖``.
    3. Check direction, for ``t = 1..T`` in order: if ``g_t · v < 0``, replace ``v`` by the point where
       the segment from ``g_t`` to ``v`` crosses ``g_t^⊥``: ``v ← ‖g_t‖ tan(π − ∠(g_t, v − g_t)) ŵ``,
       ``ŵ = unit(v − (v·u_t) u_t)``, computed as ``v ← ‖g_t‖/(‖g_t‖ − v·u_t) · (v − (v·u_t) u_t)``.

    Otherwise (the first ``K`` calls) ``d = d*``.

    Where unit gradients coincide (repeated or rank-1 gradients), the paper's ``c`` is not unique and ``d*``
    depends on how a class of coinciding directions shares its weight (up to the ratio of their norms); the
    constraint ``c_s = c_t`` picks the equal split, the optimum of least ``‖c‖`` and the limit of distinct
    directions for ``T = 2``, so ``d*`` depends neither on the task order nor on rounding
    (:func:`edm_direction`). The direction check of step 3 runs in task order, as in the official code: when
    it moves ``v`` for more than one task, the result depends on the task order (not on rounding).

    Paper: Nakamura, Grassi & Wolf, "Leveraging convergence behavior to balance conflicting tasks in
    multi-task learning", Neurocomputing 511:43–53 (2022), arXiv 2204.06698; the rule is that of the
    official code (tiemink/MTL_TaskTensioner ``history_directions.py``), restated as CDTT in Gama &
    Grassi 2025 (arXiv 2505.10347), Proposition 5. EDM: Katrutsa et al., arXiv 2007.06937.

    Note: differences from the official code: the EDM min-norm problem is solved exactly (Wolfe's
    active-set method, :func:`mtrl.balancers._qp.min_norm_simplex`) instead of by Frank–Wolfe (at most
    250 iterations, stopping at 1e-5, as also isl-org/MultiObjectiveOptimization), with coinciding
    directions' weight split equally (the official solver's split follows its iterations);
    a task with a zero gradient makes the shared direction zero for that step and leaves the state
    untouched (as Gama's port; the official code divides by zero); a zero ``g_t − d*`` contributes no
    tension (official: NaN); ``T = 1`` returns the plain gradient (official: unsupported). The tension
    adds up to ``T`` unit vectors whatever the gradient scale (as the official code).
    ``alpha = 0.3`` is the official toy configuration (Gama & Grassi default to 0.2); ``window = 10``
    is the official hard-coded ``MAX_BATCH_ITER``.

    Positive losses only (``log10 L``; in SAC use it on the critic). Stateful: the norm buffer
    ``(T, K)``, the previous window sums ``(T,)`` and the call count are in :meth:`state_dict`.
    Shapes: ``jac (T, P)``, ``losses (T,)`` → ``d (P,)``; ``last_edm_weights (T,)`` (``d* = wᵀJ``,
    ``Σ w = 1``), ``last_tensions (T,)`` (``c``, or None before tensions start) and ``last_weights (T,)``
    (float64 CPU, the effective row weights: ``d = last_weightsᵀJ`` exactly, tensions and direction
    checks included; the engine reports them as the task weights) for logging.
    """

    name = "task_tensioner"
    positive_losses = True
    stateful = True
    #: Loss scaling ``L → S·L``: ``log10 S`` enters the trend, and the unit tensions do not scale with ``S``.
    loss_scale_problem: ClassVar[str | None] = (
        "it adds log10(S) to its trend and unit tensions that do not scale with S"
    )

    def __init__(self, num_tasks: int, alpha: float = 0.3, window: int = 10) -> None:
        super().__init__(num_tasks)
        if not alpha >= 0:
            raise ValueError(f"alpha (tension sensitivity, usually in [0, 1]) must be >= 0, got {alpha!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int (number of gradient norms per task kept), got {window!r}")
        self.alpha = float(alpha)
        self.window = window
        self.reset()

    def reset(self) -> None:
        self.norm_buffer = torch.zeros(self.num_tasks, self.window, dtype=torch.float64)  # (T, K), CPU
        self.prev_window_sum: Tensor | None = None  # S(k−1) (T,), CPU float64
        self.steps = 0  # calls that entered a norm into the buffer
        self.last_edm_weights: Tensor | None = None
        self.last_tensions: Tensor | None = None
        self.last_weights: Tensor | None = None  # β (T,) with d = βᵀJ, for the engine's report

    def tensions(self, window_sum: Tensor, prev_window_sum: Tensor, losses: Tensor) -> Tensor:
        """``c (T,)`` from ``S(k)``, ``S(k−1)`` and ``L`` (all ``(T,)``, float64)."""
        delta = window_sum / prev_window_sum + torch.log10(losses)
        return (self.alpha * torch.sigmoid(math.e * (delta - 1.0)) + 1.0 - self.alpha).clamp(min=0.0)

    @staticmethod
    def tension_direction(jac64: Tensor, d_star: Tensor, tension: Tensor) -> Tensor:
        """``v (P,)``: ``d*`` plus the tensions ``c (T,)`` along unit ``g_t − d*``, then the direction check."""
        return TaskTensioner._tension_step(jac64, d_star, None, tension)[0]

    @staticmethod
    def _tension_step(
        jac64: Tensor, d_star: Tensor, edm_weights: Tensor | None, tension: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """``(v (P,), β (T,) or None)``: :meth:`tension_direction`, and with ``edm_weights`` (``d* = wᵀJ``)
        the row weights with ``v = βᵀJ``: every step keeps ``v`` a combination of the rows
        (``v = Σ_t k_t g_t + (1 − Σ_t k_t) d*`` with ``k_t = c_t/‖g_t − d*‖``, and the check subtracts a
        multiple of ``g_t`` and rescales), so ``β`` is tracked alongside in float64."""
        diff = jac64 - d_star  # (T, P)
        diff_norm = diff.norm(dim=1)
        safe = torch.where(diff_norm > 0, diff_norm, torch.ones_like(diff_norm))
        coef = torch.where(diff_norm > 0, tension.to(jac64) / safe, torch.zeros_like(diff_norm))  # c_t / ‖g_t − d*‖
        v = d_star + coef @ diff
        beta = None
        if edm_weights is not None:
            beta = coef.to(torch.float64) + (1.0 - coef.sum().to(torch.float64)) * edm_weights.to(coef.device)
        norms = jac64.norm(dim=1)
        for t in range(jac64.shape[0]):
            u = jac64[t] / norms[t]
            along = v @ u
            if along < 0:  # ∠(g_t, v) > 90°: move v to where the segment g_t → v crosses g_t^⊥
                factor = norms[t] / (norms[t] - along)
                v = factor * (v - along * u)
                if beta is not None:
                    beta = beta.clone()
                    beta[t] -= float(along / norms[t])
                    beta = float(factor) * beta
        return v, beta

    def aggregate(self, jac: Tensor, losses: Tensor) -> Tensor:
        """``d (P,)`` from ``jac (T, P)`` and positive ``losses (T,)``; advances the norm window."""
        check_jacobian(jac, losses, self.num_tasks)
        self.check(losses)
        if self.num_tasks == 1:
            self.last_weights = torch.ones(1, dtype=torch.float64)
            return jac[0].clone()
        jac64 = jac.to(torch.float64)
        norms = jac64.norm(dim=1)
        if bool((norms == 0).any()):
            self.last_weights = torch.zeros(self.num_tasks, dtype=torch.float64)
            return torch.zeros(jac.shape[1], dtype=jac.dtype, device=jac.device)
        d_star, edm_weights = edm_direction(jac64)
        self.last_edm_weights = edm_weights
        self.last_weights = edm_weights.detach().to(device="cpu", dtype=torch.float64)
        self.last_tensions = None
        self.norm_buffer[:, self.steps % self.window] = norms.cpu()
        self.steps += 1
        if self.steps < self.window:
            return d_star.to(jac.dtype)
        window_sum = self.norm_buffer.sum(dim=1)
        direction = d_star
        if self.prev_window_sum is not None:
            losses64 = losses.detach().to(device="cpu", dtype=torch.float64)
            tension = self.tensions(window_sum, self.prev_window_sum, losses64)
            self.last_tensions = tension
            direction, beta = self._tension_step(jac64, d_star, edm_weights, tension)
            assert beta is not None
            self.last_weights = beta.detach().to(device="cpu", dtype=torch.float64)
        self.prev_window_sum = window_sum
        return direction.to(jac.dtype)

    def state_dict(self) -> dict[str, Any]:
        prev = None if self.prev_window_sum is None else self.prev_window_sum.clone()
        return {"norm_buffer": self.norm_buffer.clone(), "prev_window_sum": prev, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(_STATE_KEYS):
            raise ValueError(f"TaskTensioner state must have keys {list(_STATE_KEYS)}, got {sorted(state)}")
        buffer, prev, steps = state["norm_buffer"], state["prev_window_sum"], state["steps"]
        if not isinstance(buffer, Tensor) or buffer.shape != (self.num_tasks, self.window):
            raise ValueError(f"'norm_buffer' must be a ({self.num_tasks}, {self.window}) tensor, got {buffer!r}")
        if prev is not None and (not isinstance(prev, Tensor) or prev.shape != (self.num_tasks,)):
            raise ValueError(f"'prev_window_sum' must be None or a ({self.num_tasks},) tensor, got {prev!r}")
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"'steps' must be a non-negative int, got {steps!r}")
        self.reset()
        self.norm_buffer = buffer.detach().to(device="cpu", dtype=torch.float64).clone()
        self.prev_window_sum = None if prev is None else prev.detach().to(device="cpu", dtype=torch.float64).clone()
        self.steps = steps

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, window={self.window}"
