"""What one engine call tells the logger: weights, per-task gradient norms, cosines, condition number.

All statistics come from the Gramian ``G = J Jᵀ (T, T)`` of the objective terms ``S`` (the losses for
most methods) w.r.t. whatever the strategy differentiated: the shared parameters, or the shared
representation for the ``representation`` strategy (``report.strategy`` says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar, overload

import torch
from torch import Tensor

__all__ = ["BalanceReport", "gram_statistics"]


V = TypeVar("V")


class _Statistic(Generic[V]):
    """A statistic of ``G`` on :class:`BalanceReport`: read, it first summarises a pending ``G``
    (:meth:`BalanceReport.set_gram`); assigned, it overrides the value (after that summary)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    @overload
    def __get__(self, report: None, owner: type) -> _Statistic[V]: ...
    @overload
    def __get__(self, report: BalanceReport, owner: type) -> V: ...
    def __get__(self, report: BalanceReport | None, owner: type) -> V | _Statistic[V]:
        if report is None:
            return self
        report._summarise()
        value: V = getattr(report, self.slot)
        return value

    def __set__(self, report: BalanceReport, value: V) -> None:
        report._summarise()
        setattr(report, self.slot, value)


class BalanceReport:
    """Summary of one balanced backward.

    Attributes:
        weights: ``(T,)`` float64 task weights on CPU: ``w`` of a Gramian weighting (the constant
            weights of ``ew``), the effective weights ``∂ Σ_t S_t / ∂ L_t`` of a loss weighting, the
            effective row weights of a Jacobian aggregator that keeps them (``task_tensioner``:
            ``d = wᵀJ``), ``None`` for one whose ``d`` is not a combination of the rows (``graddrop``).
        grad_norms: ``(T,)`` float64 ``√diag(G)``, or ``None`` when ``G`` was not computed (loss
            weightings and ``ew`` without diagnostics: pass ``diagnostics=True`` to the engine or to
            one ``backward`` call, e.g. at log steps, to get norms, cosines and ``cond``).
        cos_min: smallest pairwise cosine ``G_ij / (‖g_i‖‖g_j‖)`` over pairs of non-zero gradients.
        cos_mean: mean of the same cosines.
        cond: ``λ_max / λ_min⁺`` of ``G`` (smallest eigenvalue above the numerical-rank threshold).
        strategy: the strategy that ran (``"plain"``, ``"reference"``, ``"batched"``,
            ``"task_partitioned"``, ``"representation"``, ``"sgsu"``; ``"plain+<s>"`` when a loss
            weighting computed diagnostics with strategy ``s``).
        representation_fallback: True when a representation-level balancer whose paper default is
            feature-level (``imtl``) ran on parameter gradients because no ``features`` were given
            (or a parameter-level strategy was asked for); ``strategy`` says which one ran.
        extra: further scalars (e.g. ``"dgr_reg"``), logged as ``f"{prefix}/{key}"``.

    The engine hands over ``G`` with :meth:`set_gram`; ``grad_norms``, ``cos_min``, ``cos_mean`` and
    ``cond`` are computed from it (:func:`gram_statistics`) on first access, so a step that logs
    nothing pays neither the eigenvalue solve nor, on an accelerator, a device synchronisation.
    Assigning one of them sets it explicitly.
    """

    def __init__(
        self,
        weights: Tensor | None = None,
        grad_norms: Tensor | None = None,
        cos_min: float | None = None,
        cos_mean: float | None = None,
        cond: float | None = None,
        strategy: str = "",
        representation_fallback: bool = False,
        extra: dict[str, float] | None = None,
    ) -> None:
        self.weights = weights
        self.strategy = strategy
        self.representation_fallback = representation_fallback
        self.extra: dict[str, float] = {} if extra is None else extra
        self._grad_norms = grad_norms
        self._cos_min = cos_min
        self._cos_mean = cos_mean
        self._cond = cond
        self._pending: tuple[Tensor, torch.dtype] | None = None  # (G, dtype of J) not yet summarised

    def set_gram(self, gram_TT: Tensor, source_dtype: torch.dtype) -> None:
        """Record ``G (T, T)`` (of a Jacobian computed in ``source_dtype``); its statistics follow lazily."""
        self._pending = (gram_TT.detach(), source_dtype)

    def _summarise(self) -> None:
        if self._pending is not None:
            gram, source_dtype = self._pending
            self._pending = None
            self._grad_norms, self._cos_min, self._cos_mean, self._cond = gram_statistics(gram, source_dtype)

    grad_norms: _Statistic[Tensor | None] = _Statistic()
    cos_min: _Statistic[float | None] = _Statistic()
    cos_mean: _Statistic[float | None] = _Statistic()
    cond: _Statistic[float | None] = _Statistic()

    def __repr__(self) -> str:
        return (
            f"BalanceReport(weights={self.weights!r}, grad_norms={self.grad_norms!r}, cos_min={self.cos_min!r}, "
            f"cos_mean={self.cos_mean!r}, cond={self.cond!r}, strategy={self.strategy!r}, "
            f"representation_fallback={self.representation_fallback!r}, extra={self.extra!r})"
        )

    def scalars(self, prefix: str, task_names: Sequence[str]) -> dict[str, float]:
        """Flat ``{tag: value}`` for the logger, e.g. ``prefix="balancer/critic"`` gives
        ``balancer/critic/weight/<task>``, ``…/grad_norm/<task>``, ``…/cos_min``, ``…/cos_mean``,
        ``…/cond`` and ``…/<extra key>``; fields that are ``None`` are left out."""
        out: dict[str, float] = {}
        for key, values in (("weight", self.weights), ("grad_norm", self.grad_norms)):
            if values is None:
                continue
            if len(task_names) != values.numel():
                raise ValueError(f"task_names has {len(task_names)} names but the report has {values.numel()} tasks")
            for name, value in zip(task_names, values.tolist(), strict=True):
                out[f"{prefix}/{key}/{name}"] = float(value)
        for key, scalar in (("cos_min", self.cos_min), ("cos_mean", self.cos_mean), ("cond", self.cond)):
            if scalar is not None:
                out[f"{prefix}/{key}"] = scalar
        for key, scalar in self.extra.items():
            out[f"{prefix}/{key}"] = float(scalar)
        return out


def gram_statistics(
    gram_TT: Tensor, source_dtype: torch.dtype
) -> tuple[Tensor, float | None, float | None, float | None]:
    """``(grad_norms (T,), cos_min, cos_mean, cond)`` of a Gramian ``G (T, T)``, computed in float64 on CPU.

    ``source_dtype`` is the dtype the Jacobian was computed in: an eigenvalue counts as non-zero when
    it exceeds ``T · eps(source_dtype) · λ_max`` (the rounding level of ``G``). Pairs involving a zero
    gradient are left out of the cosines; ``None`` when no pair (or no non-zero eigenvalue) remains.
    """
    gram = gram_TT.detach().to(device="cpu", dtype=torch.float64)
    gram = 0.5 * (gram + gram.T)
    T = gram.shape[0]
    norms_T = gram.diagonal().clamp_min(0.0).sqrt()
    cos_min: float | None = None
    cos_mean: float | None = None
    nonzero = norms_T > 0
    if T > 1 and int(nonzero.sum()) > 1:
        idx = torch.nonzero(nonzero).flatten()
        sub = gram[idx][:, idx] / (norms_T[idx, None] * norms_T[None, idx])
        i, j = torch.triu_indices(len(idx), len(idx), offset=1)
        pairs = sub[i, j].clamp(-1.0, 1.0)
        cos_min, cos_mean = float(pairs.min()), float(pairs.mean())
    cond: float | None = None
    eig = torch.linalg.eigvalsh(gram)
    lam_max = float(eig[-1])
    if lam_max > 0:
        tol = T * torch.finfo(source_dtype).eps * lam_max
        positive = eig[eig > tol]
        cond = lam_max / float(positive[0])
    return norms_T, cos_min, cos_mean, cond
