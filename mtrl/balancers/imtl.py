"""IMTL: impartial multi-task learning (gradient balance IMTL-G, loss balance IMTL-L, and both)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers._learned import LearnedWeights
from mtrl.balancers._linalg import cosine_matrix_np, psd_eigh_np, to_numpy64
from mtrl.balancers.base import GramianWeighting, LossWeighting

__all__ = ["IMTL", "IMTLG", "IMTLL", "imtl_g_weights"]


#: ``1 ∈ range(C)`` when its projection onto ``range(C)`` (the kept eigenvectors) misses it by at most this
#: much relative to ``‖1‖``, and ``1 ⟂ range(C)`` when the projection is at most this long; the projection is
#: exact to ~1e-15 (no inverse eigenvalues enter it).
_CONSISTENT_RTOL = 1e-8


def imtl_g_weights(gram: Tensor, rtol: float | None = None) -> Tensor:
    """IMTL-G weights ``w (T,)`` float64 from ``gram (T, T)``: ``Σw = 1`` and equal projections of
    ``d = Jᵀw`` onto every unit task gradient.

    ``w ∝ G⁺·√diag(G)``, evaluated as ``v = D⁺ C⁺ 1`` with ``G = D C D``, ``D = diag(‖g_t‖)``, ``C`` the
    cosine matrix (identical for full-rank ``G``; for rank-deficient ``G`` see the :class:`IMTLG` note),
    normalised to ``w = v / Σ_t v_t`` when ``1 ∈ range(C)`` (an equal-projection direction exists) and
    to ``w = v / |Σ_t v_t|`` otherwise (the least-squares direction, never reversed). ``C⁺`` drops
    eigenvalues at or below ``rtol·λ_max`` (None: ``T·eps(float64)``). Zero-norm tasks get weight 0 (and
    ``1`` counts only the other tasks); the weights are all zero when ``1 ⟂ range(C)`` (its projection onto
    ``range(C)`` is at most ``1e-8·‖1‖`` long, where ``C⁺1 = 0`` exactly and the computed one is round-off
    that would depend on the task order and the CPU) or ``|Σ_t v_t| ≤ 1e-12 Σ_t |v_t|``.
    """
    cos, norms = cosine_matrix_np(to_numpy64(gram))
    vals, vecs, rank = psd_eigh_np(cos, rtol)
    positive = norms > 0
    ones = positive.astype(np.float64)
    v_r = vecs[:, :rank]
    coeff = v_r.T @ ones  # 1 in the basis of range(C): ‖coeff‖ is the length of its projection onto range(C)
    if float(np.linalg.norm(coeff)) <= _CONSISTENT_RTOL * float(np.linalg.norm(ones)):
        # 1 ⟂ range(C) (e.g. only pairs of opposite gradients): C⁺1 = 0 exactly, but the computed coeff is
        # round-off that C⁺ would blow up into O(1) weights changing with the task order and the CPU
        return torch.zeros(gram.shape[0], dtype=torch.float64, device=gram.device)
    v = v_r @ (coeff / vals[:rank])  # C⁺ 1 on the non-zero tasks
    v = np.divide(v, norms, out=np.zeros_like(v), where=positive)
    total, size = float(v.sum()), float(np.abs(v).sum())
    if abs(total) <= 1e-12 * size or size == 0.0:
        return torch.zeros(gram.shape[0], dtype=torch.float64, device=gram.device)
    consistent = float(np.linalg.norm(ones - v_r @ coeff)) <= _CONSISTENT_RTOL * float(np.linalg.norm(ones))
    return torch.from_numpy(v / (total if consistent else abs(total))).to(gram.device)


class IMTLG(GramianWeighting):
    """IMTL-G: the combination of task gradients with equal projection onto every task direction.

    Update rule: ``w`` with ``Σ_t w_t = 1`` such that ``d = Jᵀw`` satisfies ``d·u_1 = d·u_t`` for all ``t``
    (``u_t = g_t/‖g_t‖``); closed form ``w ∝ G⁺·√diag(G)``, evaluated as ``w ∝ D⁺C⁺1`` with
    ``G = DCD``, ``D = diag(‖g_t‖)``, ``C`` the cosine matrix (:func:`imtl_g_weights`). When no ``d``
    has equal projections, the least-squares compromise of the last note.

    Paper: Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021 (OpenReview IMPnRXEWpvr),
    Eq. 1–2 (Gramian/pinv form as in torchjd and the Jacobian-descent paper, arXiv 2406.16232).

    Note: the paper's default computes ``w`` from feature-level gradients ``∇_z L_t`` (§3.1, to back-
    propagate through the backbone once); this class is parameter-level by default, as in LibMTL,
    nash-mtl and SamsungLabs. ``representation_level=True`` gives the paper's feature-level IMTL-G
    (the engine then needs ``features=``; without them it falls back to parameter gradients and
    flags it in the report); the full paper method with IMTL-L is :class:`IMTL`.

    Note: ``D⁺C⁺1`` instead of the spec's ``G⁺·diag(G)^½``. They are equal when ``G`` has full
    rank. With ``U`` the unit rows (``C = UUᵀ``): whenever ``1 ∈ range(C)`` (an equal-projection
    combination exists, e.g. linearly dependent rows that repeat directions) both give the
    equal-projection direction ``d* = U⁺1`` (``Ud* = 1``); ``Σw = 1`` then does not fix ``‖d‖`` (any
    null vector of ``G`` may be added to ``w``) and the forms pick different representatives (here
    ``Dw ∈ range(C)``, there ``w ∈ range(G)``). Cosine space also keeps the solve accurate when norms
    span decades. The paper's Eq. 2 inverts ``DUᵀ`` (LibMTL raises when singular; nash-mtl/SamsungLabs
    add ``1e-8·I``); here ``C⁺`` (eigenvalues below ``rtol·λ_max`` dropped, ``rtol = T·eps`` of the
    gradients' dtype) is defined for every ``G``; zero-norm tasks get weight 0 (the references produce
    NaN). Heads receive their own raw gradient (nash-mtl weights them by ``α_t``).

    Note: when no direction has equal projections onto every task (``1 ∉ range(C)``, generic rank
    deficiency; then none has equal *positive* ones either), IMTL-G is undefined and this class returns
    the least-squares compromise ``d ∝ U⁺1``: its projections ``Ud ∝ CC⁺1`` are the cosine-space
    projection of ``1`` onto ``range(C)`` (as equal as any direction allows, whatever the gradient
    norms), scaled as the paper's weights but oriented so that the projections sum positive,
    ``w = D⁺C⁺1 / |Σ_t (D⁺C⁺1)_t|`` (so ``Σw = ±1``). Its direction is therefore invariant to rescaling
    a task's gradient by any ``c > 0``. The paper's normalisation ``Σw = 1`` is not: on collinear
    gradients ``a_t·v`` with mixed signs it gives ``d ∝ v / Σ_t(1/a_t)``, whose sign flips when one
    ``a_t`` is rescaled (``a = (1, −2, 3)``, ``a₀ → 7``); nor is the spec's ``G⁺·diag(G)^½``
    (``d ∝ J⁺·diag(G)^½``, least squares weighted by ``‖g_t‖²``). When ``1 ∈ range(C)`` (full rank
    included) this is the paper's IMTL-G, ``Σw = 1``: the direction is invariant to rescaling only as
    long as the common projection ``d·u_t`` keeps its sign; it can be negative (every loss increases to
    first order), unguarded, as in every reference.

    Stateless.
    """

    name: ClassVar[str] = "imtl_g"
    #: Loss scaling ``L → S·L``: the weights come from the cosine matrix with ``Σw = 1``, so ``d → S d``.
    loss_scale_problem: ClassVar[str | None] = None

    def __init__(self, num_tasks: int, representation_level: bool = False) -> None:
        super().__init__(num_tasks)
        if not isinstance(representation_level, bool):
            raise TypeError(f"representation_level must be a bool, got {representation_level!r}")
        self.representation_level = representation_level

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w (T,)`` float64, summing to 1 (or all zero)."""
        return imtl_g_weights(gram, rtol)

    def extra_repr(self) -> str:
        return f"representation_level={self.representation_level}" if self.representation_level else ""


class IMTLL(LossWeighting):
    """IMTL-L: learn a scale per task so that every scaled loss tends to 1.

    Update rule: ``S_t = e^{s_t} L_t − s_t`` (learnable ``s (T,)``, initialised at 0); all parameters
    receive ``∇ Σ_t S_t``; ``∂S_t/∂s_t = e^{s_t}L_t − 1`` vanishes at ``e^{s_t} L_t = 1``.

    Paper: Liu et al., ICLR 2021 (OpenReview IMPnRXEWpvr), Eq. 6 (``a = e``, ``b = 1``) and
    Algorithm 1. Positive losses only (the paper assumes ``L_t > 0``; with ``L ≤ 0``, ``s → +∞``).

    Note: the paper steps ``s`` with the network's SGD learning rate and LibMTL leaves ``s`` to the
    model's optimizer (weight decay included); here ``s`` is owned by a private Adam with learning
    rate ``lr`` (default 1e-3, the Adam default of Kingma & Ba, ICLR 2015), no weight decay
    (:class:`~mtrl.balancers._learned.LearnedWeights`), created on the device and in the dtype of the
    first losses seen (the default dtype for integer losses) and following them.

    Stateful: ``s`` and its Adam state (``{}`` before the first losses).
    """

    name: ClassVar[str] = "imtl_l"
    positive_losses: ClassVar[bool] = True
    stateful: ClassVar[bool] = True
    #: Loss scaling ``L → S·L``: ``e^s`` tracks ``1/(S·L)`` and the private Adam sees ``S``-scaled gradients.
    loss_scale_problem: ClassVar[str | None] = (
        "its learned loss scale converges to 1/(S*L) and its Adam sees S-scaled gradients"
    )

    def __init__(self, num_tasks: int, lr: float = 1e-3) -> None:
        super().__init__(num_tasks)
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"IMTL-L lr must be a finite float > 0 (default 1e-3), got {lr!r}")
        self.lr = float(lr)
        self._log_scale = LearnedWeights(self.name, "log_scale", num_tasks, self.lr)

    @property
    def log_scale(self) -> Tensor | None:
        """``s (T,)``, or None before the first losses."""
        return self._log_scale.value

    def scale(self) -> Tensor | None:
        """Current loss scales ``e^{s} (T,)`` (detached), or None before the first losses."""
        return None if self.log_scale is None else self.log_scale.detach().exp()

    def scalarize(self, losses: Tensor) -> Tensor:
        """``S (T,) = e^{s} ⊙ L − s``, differentiable w.r.t. the losses and ``s``."""
        self.check(losses)
        dtype = losses.dtype if losses.is_floating_point() else torch.get_default_dtype()
        s = self._log_scale.ensure(0.0, dtype, losses.device)
        return s.exp() * losses - s

    def parameters(self) -> list[Tensor]:
        return self._log_scale.parameters()

    def after_backward(self) -> None:
        """One private Adam step on ``s`` from the ``.grad`` written by the engine, then clear it."""
        self._log_scale.step()

    def state_dict(self) -> dict[str, Any]:
        return self._log_scale.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._log_scale.load_state_dict(state)

    def reset(self) -> None:
        self._log_scale.reset()

    def extra_repr(self) -> str:
        return f"lr={self.lr}"


class IMTL(GramianWeighting):
    """Hybrid IMTL: IMTL-L scales the losses, IMTL-G balances the gradients of the scaled losses.

    Update rule: ``S_t = e^{s_t} L_t − s_t`` (:class:`IMTLL`); ``w = IMTL-G(G_S)`` with ``G_S`` the
    Gramian of ``∇ e^{s_t} L_t`` (``−s_t`` has no gradient w.r.t. the shared part), ``d = Σ_t w_t ∇S_t``;
    heads receive ``∇ S_t`` (scaled, not ``w``-weighted) and ``s`` receives ``∂S_t/∂s_t``.

    Paper: Liu et al., ICLR 2021 (OpenReview IMPnRXEWpvr), Algorithm 1 (feature-level gradients
    ``∇_z``: ``representation_level=True`` by default).

    Note: LibMTL computes ``w`` from parameter gradients by default (``representation_level=False``
    here) or from batch-summed feature gradients; here the feature gradients are the full flattened
    ``∇_z``. ``s`` uses a private Adam (see :class:`IMTLL`). Positive losses only.

    Stateful: ``s`` and its Adam state (``{}`` before the first losses).
    """

    name: ClassVar[str] = "imtl"
    positive_losses: ClassVar[bool] = True
    stateful: ClassVar[bool] = True
    #: Loss scaling ``L → S·L``: as IMTL-L, its ``e^s`` tracks ``1/(S·L)`` and its Adam sees ``S``-scaled gradients.
    loss_scale_problem: ClassVar[str | None] = (
        "its IMTL-L loss scale converges to 1/(S*L) and its Adam sees S-scaled gradients"
    )

    def __init__(self, num_tasks: int, lr: float = 1e-3, representation_level: bool = True) -> None:
        super().__init__(num_tasks)
        if not isinstance(representation_level, bool):
            raise TypeError(f"representation_level must be a bool, got {representation_level!r}")
        self.loss_balance = IMTLL(num_tasks, lr=lr)
        self.representation_level = representation_level

    def scalarize(self, losses: Tensor) -> Tensor:
        """``S (T,) = e^{s} ⊙ L − s`` (IMTL-L)."""
        return self.loss_balance.scalarize(losses)

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """IMTL-G weights ``w (T,)`` float64 on the Gramian of the scaled-loss gradients."""
        return imtl_g_weights(gram, rtol)

    def parameters(self) -> list[Tensor]:
        return self.loss_balance.parameters()

    def after_backward(self) -> None:
        self.loss_balance.after_backward()

    def state_dict(self) -> dict[str, Any]:
        return self.loss_balance.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_balance.load_state_dict(state)

    def reset(self) -> None:
        self.loss_balance.reset()

    def extra_repr(self) -> str:
        return f"lr={self.loss_balance.lr}, representation_level={self.representation_level}"
