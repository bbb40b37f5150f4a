"""The gradient engine: one call turns per-task losses into ``.grad`` on every parameter.

``engine.backward(losses (T,), shared, task, ...)`` checks the losses, forms the objective terms
``S = balancer.scalarize(losses) (T,)`` and then, by balancer kind:

* loss weighting, or a Gramian weighting with ``constant_weights`` (``ew``): ONE ordinary
  ``torch.autograd.grad`` of ``Σ_t S_t`` (``Σ_t w_t S_t`` on the shared parameters when the
  constant weights are not all ones); ``ew`` reproduces ``sum(losses).backward()`` bit for bit.
  ``G`` is computed only with ``diagnostics=True``.
* Gramian weighting: ``G (T, T)`` by the chosen strategy, ``w = weights(G, L)``, shared params get
  ``d = wᵀJ``. Jacobian aggregator (any other gradient balancer): ``d = aggregate(J, L)``.
* ``sgsu``: the meta-gradient of :class:`~mtrl.balancers.sgsu.SGSU` (needs ``loss_fn``).
* ``dgr``: its base balancer as above, then ``∇θ R`` added to the shared parameters (needs ``loss_fn``).

Task-specific parameters and the balancer's own parameters always get ``∇ Σ_t S_t`` (each head its
own task's unweighted gradient). Strategies for ``J``/``G`` are in :mod:`mtrl.engine.strategies`;
``"auto"`` picks ``representation`` for representation-level balancers given ``features``, else
``task_partitioned`` given a ``capture``, else ``batched`` on accelerators and ``reference`` on the CPU
(where the vmapped backward measured no faster than ``T`` plain calls).

``.grad`` is overwritten. Parameters the losses do not reach get ``None`` on the plain path (as
after ``zero_grad(set_to_none=True); loss.backward()``); on the balanced paths unreached shared
parameters get zeros (they are a zero block of ``J``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from mtrl.balancers.base import Balancer, GradientBalancer, GramianWeighting, LossWeighting
from mtrl.balancers.dgr import DGR
from mtrl.balancers.sgsu import SGSU
from mtrl.engine.capture import LinearCapture
from mtrl.engine.closure import LossClosure
from mtrl.engine.report import BalanceReport, gram_statistics
from mtrl.engine.strategies import (
    Workspace,
    batched_blocks,
    combine_blocks,
    concat_blocks,
    gram_from_blocks,
    partitioned_blocks,
    reference_blocks,
    split_direction,
)

__all__ = ["STRATEGIES", "GradientEngine", "Strategy"]

Strategy = Literal["auto", "reference", "batched", "task_partitioned", "representation"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


def _is_gramian_only(balancer: Balancer) -> bool:
    """True when ``d = wᵀJ`` with ``w`` from ``G`` only (the base ``aggregate`` is not overridden)."""
    return isinstance(balancer, GramianWeighting) and type(balancer).aggregate is GramianWeighting.aggregate


def _write(params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else g.detach()


class GradientEngine:
    """Drive one balancer: ``backward(losses, shared, task, ...)`` writes ``.grad`` and reports.

    Args:
        balancer: any registered balancer (one engine per loss group: critic, actor, encoder).
        strategy: ``"auto"`` | ``"reference"`` | ``"batched"`` | ``"task_partitioned"`` |
            ``"representation"`` (see the module docstring).
        diagnostics: compute ``G`` (grad norms, cosines, condition number) for loss weightings and
            constant-weight balancers too. Default False keeps them at the cost of plain training;
            gradient balancers always compute ``G`` or ``J`` and always report.
        chunk_size: rows of the identity per vectorised backward of the ``batched`` strategy
            (None: all ``T`` at once; smaller trades speed for memory).
    """

    def __init__(
        self,
        balancer: Balancer,
        strategy: str = "auto",
        *,
        diagnostics: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        if not isinstance(balancer, Balancer):
            raise TypeError(f"balancer must be a mtrl Balancer (see make_balancer), got {type(balancer).__name__}")
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self.balancer = balancer
        self.strategy = strategy
        self.diagnostics = diagnostics
        self.chunk_size = chunk_size
        #: J-block buffers of the task_partitioned strategy, reused between calls (about T·P floats);
        #: free them with ``engine.workspace.clear()``.
        self.workspace = Workspace()

    def __repr__(self) -> str:
        return f"GradientEngine({self.balancer!r}, strategy={self.strategy!r}, diagnostics={self.diagnostics})"

    # --- public API -----------------------------------------------------------------------------
    def backward(
        self,
        losses: Tensor,
        shared_params: Sequence[Tensor],
        task_params: Sequence[Tensor] = (),
        *,
        features: Tensor | None = None,
        capture: LinearCapture | None = None,
        loss_fn: LossClosure | None = None,
    ) -> BalanceReport:
        """Write ``.grad`` of ``shared_params``, ``task_params`` and ``balancer.parameters()``.

        Args:
            losses: ``(T,)`` per-task losses attached to the autograd graph, fixed task order.
            shared_params: ``θ``; receive ``d``.
            task_params: task-specific tensors; receive ``∇ Σ_t S_t``.
            features: shared representation ``z (B, …)`` for the ``representation`` strategy.
            capture: a :class:`LinearCapture` that recorded the forward (``task_partitioned``).
            loss_fn: loss closure (``sgsu``, ``dgr``), see :mod:`mtrl.engine.closure`.

        Returns the :class:`BalanceReport`. Calls ``balancer.after_backward()`` once the grads are
        written, and clears ``capture``.
        """
        shared = self._params(shared_params, "shared_params")
        task = self._params(task_params, "task_params")
        overlap = {id(p) for p in shared} & {id(p) for p in task}
        if not shared:
            raise ValueError("shared_params is empty; pass the shared (trunk) parameters")
        if overlap:
            raise ValueError(f"{len(overlap)} tensor(s) appear in both shared_params and task_params")
        self.balancer.check(losses)
        if not losses.requires_grad:
            raise ValueError("losses do not require grad: compute them from the parameters with grad enabled")
        core = self.balancer.base if isinstance(self.balancer, DGR) else self.balancer
        if (isinstance(self.balancer, DGR) or isinstance(core, SGSU)) and loss_fn is None:
            raise ValueError(f"balancer {self.balancer.name!r} needs loss_fn= (see mtrl.engine.make_loss_fn)")
        try:
            report = self._backward_core(core, losses, shared, task, features, capture, loss_fn)
            if isinstance(self.balancer, DGR):
                assert loss_fn is not None
                reg_grads, reg = self.balancer.regularizer_gradient(shared, task, loss_fn)
                for p, g in zip(shared, reg_grads, strict=True):
                    p.grad = g if p.grad is None else p.grad + g
                report.extra["dgr_reg"] = reg
        finally:
            if capture is not None:
                capture.clear()
        self.balancer.after_backward()
        return report

    def post_step(self, new_losses: Tensor) -> None:
        """Give the balancer the losses re-evaluated after ``optimizer.step()`` (FAMO); else no-op."""
        core = self.balancer.base if isinstance(self.balancer, DGR) else self.balancer
        if core.needs_post_step_losses:
            self.balancer.post_step(new_losses.detach())

    # --- dispatch -------------------------------------------------------------------------------
    @staticmethod
    def _params(params: Sequence[Tensor], what: str) -> list[Tensor]:
        out = list(params)
        for p in out:
            if not isinstance(p, Tensor):
                raise TypeError(f"{what} must be a sequence of tensors, got an element of type {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"{what} holds a tensor of shape {tuple(p.shape)} that does not require grad")
        return out

    def _choose(
        self, balancer: Balancer, losses: Tensor, features: Tensor | None, capture: LinearCapture | None
    ) -> str:
        strategy = self.strategy
        if strategy == "auto":
            if getattr(balancer, "representation_level", False) and features is not None:
                return "representation"
            if capture is not None:
                return "task_partitioned"
            # On the CPU the vmapped backward measured no faster than T plain calls (bench_balancers,
            # bench_vision), so it is only the automatic choice on accelerators.
            return "reference" if losses.device.type == "cpu" else "batched"
        if strategy == "representation" and features is None:
            raise ValueError("strategy 'representation' needs features= (the shared representation z)")
        if strategy == "task_partitioned" and capture is None:
            raise ValueError("strategy 'task_partitioned' needs capture= (a LinearCapture that recorded the forward)")
        return strategy

    def _backward_core(
        self,
        core: Balancer,
        losses: Tensor,
        shared: list[Tensor],
        task: list[Tensor],
        features: Tensor | None,
        capture: LinearCapture | None,
        loss_fn: LossClosure | None,
    ) -> BalanceReport:
        terms_T = core.scalarize(losses)
        if terms_T.shape != losses.shape:
            raise ValueError(
                f"{core.name}.scalarize returned shape {tuple(terms_T.shape)}, expected {tuple(losses.shape)}"
            )
        others = task + list(core.parameters())
        if isinstance(core, SGSU):
            assert loss_fn is not None
            return self._sgsu(core, losses, terms_T, shared, others, loss_fn)
        if isinstance(core, LossWeighting) or (isinstance(core, GramianWeighting) and core.constant_weights):
            return self._plain(core, losses, terms_T, shared, others, features, capture)
        if isinstance(core, GradientBalancer):
            return self._balanced(core, losses, terms_T, shared, others, features, capture)
        raise TypeError(
            f"the engine cannot drive {type(core).__name__}: expected a LossWeighting, GradientBalancer, SGSU or DGR"
        )

    # --- paths ----------------------------------------------------------------------------------
    def _plain(
        self,
        core: Balancer,
        losses: Tensor,
        terms_T: Tensor,
        shared: list[Tensor],
        others: list[Tensor],
        features: Tensor | None,
        capture: LinearCapture | None,
    ) -> BalanceReport:
        """One ordinary backward; effective weights ``∂ΣS/∂L`` come from the same call."""
        report = BalanceReport(strategy="plain")
        if self.diagnostics:
            strategy = self._choose(core, losses, features, capture)
            gram = self._diagnostic_gram(strategy, terms_T, shared, features, capture)
            self._fill(report, gram, shared[0].dtype)
            report.strategy = f"plain+{strategy}"
        constant = None
        if isinstance(core, GramianWeighting):
            T = losses.shape[0]
            zeros = torch.zeros(T, T, dtype=torch.float64, device=losses.device)
            constant = core.weights(zeros, losses.detach().to(torch.float64))
        if constant is None or bool((constant == 1).all()):
            objective = terms_T.sum()
            grads = torch.autograd.grad(objective, [losses, *shared, *others], allow_unused=True)
            _write(shared + others, grads[1:])
            if constant is not None:
                report.weights = torch.ones(losses.shape[0], dtype=torch.float64)
            elif grads[0] is not None:  # effective weights ∂ΣS/∂L_t of a loss weighting
                report.weights = grads[0].detach().to(device="cpu", dtype=torch.float64)
            return report
        if others:
            _write(others, torch.autograd.grad(terms_T.sum(), others, retain_graph=True, allow_unused=True))
        weighted = (constant.to(terms_T.dtype) * terms_T).sum()
        _write(shared, torch.autograd.grad(weighted, shared, allow_unused=True))
        report.weights = constant.detach().to("cpu")
        return report

    def _diagnostic_gram(
        self,
        strategy: str,
        terms_T: Tensor,
        shared: list[Tensor],
        features: Tensor | None,
        capture: LinearCapture | None,
    ) -> Tensor:
        if strategy == "representation":
            assert features is not None
            rep = self._jacobian(terms_T, [features], "batched")
            return gram_from_blocks(rep)
        if strategy == "task_partitioned":
            assert capture is not None
            # the diagnostic backward must leave the graph for the plain backward that follows
            blocks, _ = partitioned_blocks(capture, terms_T, shared, [], retain_graph=True, workspace=self.workspace)
            return gram_from_blocks(blocks)
        return gram_from_blocks(self._jacobian(terms_T, shared, strategy))

    def _jacobian(self, terms_T: Tensor, params: list[Tensor], strategy: str) -> list[Tensor]:
        if strategy == "reference":
            return reference_blocks(terms_T, params)
        return batched_blocks(terms_T, params, self.chunk_size)

    def _balanced(
        self,
        core: GradientBalancer,
        losses: Tensor,
        terms_T: Tensor,
        shared: list[Tensor],
        others: list[Tensor],
        features: Tensor | None,
        capture: LinearCapture | None,
    ) -> BalanceReport:
        strategy = self._choose(core, losses, features, capture)
        report = BalanceReport(strategy=strategy)
        losses64 = losses.detach().to(torch.float64)
        gramian_only = _is_gramian_only(core)
        if strategy == "task_partitioned":
            assert capture is not None
            blocks, other_grads = partitioned_blocks(capture, terms_T, shared, others, workspace=self.workspace)
            _write(others, other_grads)
        else:
            if others:
                _write(others, torch.autograd.grad(terms_T.sum(), others, retain_graph=True, allow_unused=True))
            if strategy == "representation":
                assert features is not None
                return self._representation(core, losses, terms_T, shared, features, report)
            blocks = self._jacobian(terms_T, shared, strategy)
        if gramian_only:
            assert isinstance(core, GramianWeighting)
            gram = gram_from_blocks(blocks)
            weights_T = self._weights(core, gram, losses64)
            _write(shared, combine_blocks(weights_T, blocks, shared))
            report.weights = weights_T.detach().to("cpu")
        else:
            jac_TP = concat_blocks(blocks)
            gram = (jac_TP @ jac_TP.T).to(torch.float64)
            d_P = self._aggregate(core, jac_TP, losses)
            _write(shared, split_direction(d_P, shared))
        self._fill(report, gram, blocks[0].dtype)
        return report

    def _representation(
        self,
        core: GradientBalancer,
        losses: Tensor,
        terms_T: Tensor,
        shared: list[Tensor],
        features: Tensor,
        report: BalanceReport,
    ) -> BalanceReport:
        """Per-task ``Z_t = ∇_z S_t`` flattened over the full ``z`` (SamsungLabs layout, not summed over
        the batch), ``G = Z Zᵀ``, then ONE backward through the trunk with ``Σ_t w_t Z_t``."""
        if not features.requires_grad:
            raise ValueError("features do not require grad: pass the shared representation z from the graph")
        (rep_TZ,) = batched_blocks(terms_T, [features], self.chunk_size)
        gram = gram_from_blocks([rep_TZ])
        if _is_gramian_only(core):
            assert isinstance(core, GramianWeighting)
            weights_T = self._weights(core, gram, losses.detach().to(torch.float64))
            dz = weights_T.to(rep_TZ.dtype) @ rep_TZ
            report.weights = weights_T.detach().to("cpu")
        else:
            dz = self._aggregate(core, rep_TZ, losses)
        grads = torch.autograd.grad(features, shared, grad_outputs=dz.view_as(features), allow_unused=True)
        _write(shared, [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, shared, strict=True)])
        self._fill(report, gram, rep_TZ.dtype)
        return report

    def _sgsu(
        self,
        core: SGSU,
        losses: Tensor,
        terms_T: Tensor,
        shared: list[Tensor],
        others: list[Tensor],
        loss_fn: LossClosure,
    ) -> BalanceReport:
        report = BalanceReport(strategy="sgsu")
        if others:
            _write(others, torch.autograd.grad(terms_T.sum(), others, retain_graph=True, allow_unused=True))
        step = core.shared_gradient(losses, shared, loss_fn)
        _write(shared, step.direction)
        self._fill(report, step.gram, shared[0].dtype)
        return report

    # --- helpers --------------------------------------------------------------------------------
    def _weights(self, core: GramianWeighting, gram: Tensor, losses64: Tensor) -> Tensor:
        weights_T = core.weights(gram, losses64)
        if weights_T.shape != (core.num_tasks,):
            raise ValueError(
                f"{core.name}.weights returned shape {tuple(weights_T.shape)}, expected ({core.num_tasks},)"
            )
        return weights_T

    @staticmethod
    def _aggregate(core: GradientBalancer, jac_TP: Tensor, losses: Tensor) -> Tensor:
        d_P = core.aggregate(jac_TP, losses.detach())
        if d_P.shape != (jac_TP.shape[1],):
            raise ValueError(f"{core.name}.aggregate returned shape {tuple(d_P.shape)}, expected ({jac_TP.shape[1]},)")
        return d_P.to(jac_TP.dtype)

    @staticmethod
    def _fill(report: BalanceReport, gram: Tensor, source_dtype: torch.dtype) -> None:
        norms, report.cos_min, report.cos_mean, report.cond = gram_statistics(gram, source_dtype)
        report.grad_norms = norms
