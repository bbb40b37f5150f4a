"""The gradient engine: one call turns per-task losses into ``.grad`` on every parameter.

``engine.backward(losses (T,), shared, task, ...)`` checks the losses, forms the objective terms
``S = balancer.scalarize(losses) (T,)`` and then, by balancer kind:

* loss weighting, or a Gramian weighting with ``constant_weights`` (``ew``): ONE ordinary
  ``torch.autograd.grad`` of ``Σ_t w_t S_t`` (``w = 1`` for a loss weighting, the constant weights
  otherwise) for every parameter, heads included (a constant weighting is a loss weighting);
  ``ew`` reproduces ``sum(losses).backward()`` bit for bit, ``ew(mean=True)`` ``mean(losses)``.
  ``G`` (and with it grad norms, cosines, condition number) is computed only with diagnostics
  (``GradientEngine(..., diagnostics=True)`` or per call ``backward(..., diagnostics=True)``, e.g.
  at log steps); the default costs exactly plain training and reports only the weights.
* Gramian weighting: ``G (T, T)`` by the chosen strategy, ``w = weights(G, L, rtol)``, shared params
  get ``d = wᵀJ``; ``rtol = T·eps(dtype of J)`` is the rank cut-off of the balancer's linear algebra
  (so a float32 model gets the float32 cut-off, as ``balancer.aggregate(J32)`` does and as the
  official Aligned-MTL code uses; for float16/bfloat16 gradients, e.g. autocast features of the
  ``representation`` strategy, it is a conservative cut-off: the rounding of such a ``J`` moves the
  small eigenvalues of ``G`` by only ~``eps²·λ_max``).
  Jacobian aggregator (any other gradient balancer): ``d = aggregate(J, L)``.
* ``sgsu``: the meta-gradient of :class:`~mtrl.balancers.sgsu.SGSU` (needs ``loss_fn``).
* ``dgr``: its base balancer as above, then ``∇θ R`` added to the shared parameters (needs ``loss_fn``
  and ``heads``, the task-head modules its dummy heads copy).
* ``alpha_weights``: its base balancer as above, on the weighted losses ``w ⊙ L``
  (:func:`~mtrl.engine.rules.weighed_losses`).

On the balanced paths task-specific parameters and the balancer's own parameters get ``∇ Σ_t S_t``
(each head its own task's unweighted gradient). Strategies for ``J``/``G`` are in
:mod:`mtrl.engine.strategies`; which one runs is decided by :func:`mtrl.engine.rules.choose_strategy`
(the one place for the strategy rules, also used by the vision trainer's start-up check), reading the
balancer's facts through :func:`~mtrl.engine.rules.core_balancer`. ``"auto"`` picks ``representation``
for representation-level balancers given ``features``, else ``task_partitioned`` given a ``capture``,
else ``batched`` on accelerators and ``reference`` on the CPU (where the vmapped backward measured no
faster than ``T`` plain calls).

Representation level (gradients w.r.t. the shared features ``z`` instead of ``θ``) is a property of
the method, so the engine never switches it silently:

* ``mgda_ub`` / ``aligned_mtl_ub`` (``representation_required``) raise ``ValueError`` without
  ``features=`` or with an explicit parameter-level strategy (the result would be plain
  ``mgda`` / ``aligned_mtl``);
* ``imtl`` (and ``imtl_g(representation_level=True)``), feature-level by paper default, fall back to
  parameter gradients without ``features=`` (or with an explicit parameter-level strategy): the
  report says so (``representation_fallback=True``) and the engine warns once;
* ``strategy="representation"`` with a parameter-level gradient balancer raises ``ValueError`` (it
  would compute the representation-level variant); with a loss weighting it only chooses where the
  diagnostic ``G`` is taken (the update is the plain one either way).

``.grad`` is overwritten. Parameters the losses do not reach get ``None`` on the plain path (as
after ``zero_grad(set_to_none=True); loss.backward()``); on the balanced paths unreached shared
parameters get zeros (they are a zero block of ``J``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from mtrl.balancers._linalg import default_rtol
from mtrl.balancers.base import Balancer, GradientBalancer, GramianWeighting, LossWeighting
from mtrl.balancers.dgr import DGR
from mtrl.balancers.sgsu import SGSU
from mtrl.engine.capture import LinearCapture
from mtrl.engine.closure import LossClosure
from mtrl.engine.report import BalanceReport
from mtrl.engine.rules import choose_strategy, core_balancer, needs_loss_fn, weighed_losses
from mtrl.engine.strategies import (
    VmapStatus,
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
            constant-weight balancers too, on every call. Default False keeps them at the cost of
            plain training; ``backward(..., diagnostics=True)`` asks for them on one call (log steps).
            Gradient balancers always compute ``G`` or ``J`` and always report.
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
        #: set when vmap cannot batch this engine's graph: ``batched`` then runs the reference loop
        #: without retrying (one warning).
        self.vmap_status = VmapStatus()
        self._fallback_warned = False

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
        heads: Sequence[nn.Module] = (),
        diagnostics: bool | None = None,
    ) -> BalanceReport:
        """Write ``.grad`` of ``shared_params``, ``task_params`` and ``balancer.parameters()``.

        Args:
            losses: ``(T,)`` per-task losses attached to the autograd graph, fixed task order.
            shared_params: ``θ``; receive ``d``.
            task_params: task-specific tensors; receive ``∇ Σ_t S_t``.
            features: shared representation ``z (B, …)`` for the ``representation`` strategy.
            capture: a :class:`LinearCapture` that recorded the forward (``task_partitioned``).
            loss_fn: loss closure (``sgsu``, ``dgr``), see :mod:`mtrl.engine.closure`.
            heads: the task-head modules whose parameters are among ``task_params`` (``dgr``: its dummy
                heads are default-initialised copies of them); ignored by every other balancer.
            diagnostics: this call only: True computes ``G`` statistics for loss weightings too
                (the update is unchanged), False skips them; None (default) uses the engine's
                ``diagnostics``.

        Returns the :class:`BalanceReport`. Calls ``balancer.after_backward()`` once the grads are
        written, and clears ``capture``. Raises ``ValueError`` for a representation-level balancer
        that cannot run as asked (see the module docstring).
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
        losses = weighed_losses(self.balancer, losses)  # alpha_weights: the core balancer sees w ⊙ L
        core = core_balancer(self.balancer)
        if needs_loss_fn(self.balancer) and loss_fn is None:
            raise ValueError(f"balancer {self.balancer.name!r} needs loss_fn= (see mtrl.engine.make_loss_fn)")
        if isinstance(self.balancer, DGR) and not heads:
            raise ValueError(
                "balancer 'dgr' needs heads= (the task-head modules; its dummy heads are default-initialised copies)"
            )
        want_diagnostics = self.diagnostics if diagnostics is None else bool(diagnostics)
        try:
            report = self._backward_core(core, losses, shared, task, features, capture, loss_fn, want_diagnostics)
            if isinstance(self.balancer, DGR):
                assert loss_fn is not None
                reg_grads, reg = self.balancer.regularizer_gradient(shared, task, heads, loss_fn)
                for p, g in zip(shared, reg_grads, strict=True):
                    p.grad = g if p.grad is None else p.grad + g
                report.extra["dgr_reg"] = reg
        finally:
            if capture is not None:
                capture.clear()
        self.balancer.after_backward()
        return report

    @property
    def needs_post_step_losses(self) -> bool:
        """True when :meth:`post_step` wants the losses re-evaluated after ``optimizer.step()`` (FAMO, also
        as ``dgr``'s base): the trainers compute them only then."""
        return core_balancer(self.balancer).needs_post_step_losses

    def post_step(self, new_losses: Tensor) -> None:
        """Give the balancer the losses re-evaluated after ``optimizer.step()`` (FAMO); else no-op."""
        if self.needs_post_step_losses:
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
        self,
        balancer: Balancer,
        losses: Tensor,
        features: Tensor | None,
        capture: LinearCapture | None,
        report: BalanceReport | None = None,
    ) -> str:
        """The strategy to run (:func:`mtrl.engine.rules.choose_strategy`); a representation-level balancer
        that falls back to parameter gradients is flagged in ``report`` and warned about once."""
        choice = choose_strategy(
            balancer,
            self.strategy,
            features=features is not None,
            capture=capture is not None,
            accelerator=losses.device.type != "cpu",
        )
        if choice.fallback and report is not None:
            report.representation_fallback = True
            if not self._fallback_warned:
                self._fallback_warned = True
                why = "no features= given" if features is None else f"strategy={self.strategy!r}"
                warnings.warn(
                    f"balancer {balancer.name!r} is representation-level (paper default) but {why}: its weights "
                    f"come from parameter gradients (reported as representation_fallback=True); pass "
                    f"features=z, or build it with representation_level=False to make this explicit",
                    stacklevel=5,
                )
        return choice.strategy

    def _backward_core(
        self,
        core: Balancer,
        losses: Tensor,
        shared: list[Tensor],
        task: list[Tensor],
        features: Tensor | None,
        capture: LinearCapture | None,
        loss_fn: LossClosure | None,
        diagnostics: bool,
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
            return self._plain(core, losses, terms_T, shared, others, features, capture, diagnostics)
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
        diagnostics: bool,
    ) -> BalanceReport:
        """One ordinary backward of ``Σ_t w_t S_t`` for every parameter; a loss weighting's effective
        weights ``∂ΣS/∂L`` come from the same call."""
        report = BalanceReport(strategy="plain")
        if diagnostics:
            strategy = self._choose(core, losses, features, capture)
            gram, source_dtype = self._diagnostic_gram(strategy, terms_T, shared, features, capture)
            self._fill(report, gram, source_dtype)
            report.strategy = f"plain+{strategy}"
        constant = None
        if isinstance(core, GramianWeighting):
            T = losses.shape[0]
            zeros = torch.zeros(T, T, dtype=torch.float64, device=losses.device)
            constant = core.weights(zeros, losses.detach().to(torch.float64))
        if constant is None or bool((constant == 1).all()):
            objective = terms_T.sum()
        else:
            objective = (constant.to(terms_T.dtype) * terms_T).sum()
        grads = torch.autograd.grad(objective, [losses, *shared, *others], allow_unused=True)
        _write(shared + others, grads[1:])
        if constant is not None:
            report.weights = constant.detach().to(device="cpu", dtype=torch.float64)
        elif grads[0] is not None:  # effective weights ∂ΣS/∂L_t of a loss weighting
            report.weights = grads[0].detach().to(device="cpu", dtype=torch.float64)
        return report

    def _diagnostic_gram(
        self,
        strategy: str,
        terms_T: Tensor,
        shared: list[Tensor],
        features: Tensor | None,
        capture: LinearCapture | None,
    ) -> tuple[Tensor, torch.dtype]:
        if strategy == "representation":
            assert features is not None
            blocks = self._jacobian(terms_T, [features], "batched")
        elif strategy == "task_partitioned":
            assert capture is not None
            # the diagnostic backward must leave the graph for the plain backward that follows
            blocks, _ = partitioned_blocks(capture, terms_T, shared, [], retain_graph=True, workspace=self.workspace)
        else:
            blocks = self._jacobian(terms_T, shared, strategy)
        return gram_from_blocks(blocks), blocks[0].dtype

    def _jacobian(self, terms_T: Tensor, params: list[Tensor], strategy: str) -> list[Tensor]:
        if strategy == "reference":
            return reference_blocks(terms_T, params)
        return batched_blocks(terms_T, params, self.chunk_size, self.vmap_status)

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
        report = BalanceReport()
        strategy = self._choose(core, losses, features, capture, report)
        report.strategy = strategy
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
        source_dtype = blocks[0].dtype
        if gramian_only:
            assert isinstance(core, GramianWeighting)
            gram = gram_from_blocks(blocks)
            weights_T = self._weights(core, gram, losses64, source_dtype)
            _write(shared, combine_blocks(weights_T, blocks, shared))
            report.weights = weights_T.detach().to("cpu")
        else:
            jac_TP = concat_blocks(blocks)
            gram = gram_from_blocks([jac_TP])
            d_P = self._aggregate(core, jac_TP, losses)
            _write(shared, split_direction(d_P, shared))
            report.weights = self._effective_weights(core)
        self._fill(report, gram, source_dtype)
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
        (rep_TZ,) = batched_blocks(terms_T, [features], self.chunk_size, self.vmap_status)
        gram = gram_from_blocks([rep_TZ])
        if _is_gramian_only(core):
            assert isinstance(core, GramianWeighting)
            weights_T = self._weights(core, gram, losses.detach().to(torch.float64), rep_TZ.dtype)
            dz = weights_T.to(rep_TZ.dtype) @ rep_TZ
            report.weights = weights_T.detach().to("cpu")
        else:
            dz = self._aggregate(core, rep_TZ, losses)
            report.weights = self._effective_weights(core)
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
    @staticmethod
    def _weights(core: GramianWeighting, gram: Tensor, losses64: Tensor, source_dtype: torch.dtype) -> Tensor:
        rtol = default_rtol(core.num_tasks, source_dtype if source_dtype.is_floating_point else torch.float64)
        weights_T = core.weights(gram, losses64, rtol=rtol)
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
    def _effective_weights(core: GradientBalancer) -> Tensor | None:
        """A Jacobian aggregator's ``last_weights (T,)`` (with ``d = last_weightsᵀJ``) if it keeps them
        (task_tensioner), else None (graddrop: ``d`` is not a combination of the rows)."""
        weights = getattr(core, "last_weights", None)
        if isinstance(weights, Tensor) and weights.shape == (core.num_tasks,):
            return weights.detach().to(device="cpu", dtype=torch.float64)
        return None

    @staticmethod
    def _fill(report: BalanceReport, gram: Tensor, source_dtype: torch.dtype) -> None:
        report.set_gram(gram, source_dtype)  # norms, cosines and cond are computed on first access
