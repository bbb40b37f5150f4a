"""Single gradient step update (SGSU): a one-step MAML meta-gradient for the shared parameters.

Lee & Son, "Multitask Learning with Single Gradient Step Update for Task Balancing",
arXiv 2005.09910, Neurocomputing 467:442–453 (2022).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mtrl.balancers.base import Balancer

__all__ = ["SGSU", "SGSUStep"]


@dataclass(frozen=True)
class SGSUStep:
    """Result of :meth:`SGSU.shared_gradient`: ``direction`` per shared parameter, and the Gramian
    ``gram (T, T)`` float64 of the inner (virtual-step) gradients ``∇θ L_t(θ)``, for the report."""

    direction: list[Tensor]
    gram: Tensor


class SGSU(Balancer):
    """Shared parameters follow the meta-gradient of one virtual SGD step per task.

    Update rule::

        θ'_t = θ − a · ∇θ L_t(θ)                         (one virtual step per task, inner lr a)
        d    = ∇θ Σ_t L_t(θ'_t)  =  Σ_t (I − a H_t) ∇L_t(θ'_t)      (second order, default)
        d    ≈ Σ_t ∇L_t(θ'_t)                             (``first_order=True``: θ'_t treated as θ + const)

    Task-specific parameters (heads) step on their own unweighted loss (``∇ Σ_t L_t``), separately
    from the shared update. ``a → 0`` gives ``∇θ Σ_t L_t``, i.e. ``ew``.

    Paper: Lee & Son, "Multitask Learning with Single Gradient Step Update for Task Balancing",
    Neurocomputing 467:442–453 (2022), arXiv 2005.09910. Only the abstract was available (no full
    text, no code anywhere searched), so no equation or algorithm number could be checked.

    Note: a RECONSTRUCTION from the abstract (MAML with a one-step inner loop whose meta-"tasks" are
    the MTL tasks; balancers.md §1.3 lists the open choices). Choices made here, each possibly
    different from the paper: one minibatch for the inner and the outer loss (no support/query
    split); each task evaluated only at its own adapted ``θ'_t`` (``loss_fn(θ'_t, None)[t]``), not
    ``Σ_k L_k(θ'_t)``; second order by default; ``a`` fixed (not learned); the heads' gradient at the
    pre-update ``θ``; the outer step is the caller's optimizer on ``d``.

    Cost: ``T`` inner gradients (kept in the graph when second order), ``T`` forwards at ``θ'_t``
    through the loss closure and ``T`` (double) backwards. Needs ``loss_fn`` in
    ``engine.backward``. Stateless.

    Args:
        num_tasks: ``T``.
        inner_lr: ``a ≥ 0``. The paper's value is unknown (balancers.md §1.3); the default 3e-4 is
            the Adam learning rate of the multi-task SAC references, so a virtual step is the size
            of a real one.
        first_order: drop the Hessian term (first-order MAML).
    """

    name = "sgsu"
    needs_loss_closure = True
    #: Loss scaling ``L → S·L``: the virtual step ``θ − a·S∇L`` is ``S`` times too long and the outer losses
    #: come from the unscaled closure.
    loss_scale_problem: ClassVar[str | None] = (
        "its virtual step uses S-scaled gradients while the outer losses are unscaled"
    )

    def __init__(self, num_tasks: int, inner_lr: float = 3e-4, first_order: bool = False) -> None:
        super().__init__(num_tasks)
        if isinstance(inner_lr, bool) or not isinstance(inner_lr, (int, float)) or not inner_lr >= 0:
            raise ValueError(f"sgsu: inner_lr must be a float >= 0, got {inner_lr!r}")
        if not isinstance(first_order, bool):
            raise TypeError(f"sgsu: first_order must be a bool (True or False), got {first_order!r}")
        self.inner_lr = float(inner_lr)
        self.first_order = first_order

    def shared_gradient(
        self,
        losses: Tensor,
        shared_params: Sequence[Tensor],
        loss_fn: Callable[[Sequence[Tensor] | None, Sequence[Tensor] | None], Tensor],
    ) -> SGSUStep:
        """Meta-gradient ``d`` (one tensor per shared parameter) for ``losses (T,)`` attached to the graph.

        ``loss_fn(shared_values, None)`` must recompute the ``(T,)`` losses on the same batch with
        ``shared_values`` substituted for ``shared_params`` (see ``mtrl.engine.make_loss_fn``).
        The graph of ``losses`` is retained (the engine differentiates it for the heads as well).
        """
        self.check(losses)
        params = list(shared_params)
        direction = [torch.zeros_like(p) for p in params]
        inner_rows: list[Tensor] = []
        for t in range(self.num_tasks):
            grads = torch.autograd.grad(
                losses[t], params, retain_graph=True, create_graph=not self.first_order, allow_unused=True
            )
            inner = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]
            inner_rows.append(torch.cat([g.detach().reshape(-1) for g in inner]))
            if self.first_order:
                inner = [g.detach() for g in inner]
            adapted = [p - self.inner_lr * g for p, g in zip(params, inner, strict=True)]
            meta_losses = loss_fn(adapted, None)
            if meta_losses.shape != (self.num_tasks,):
                raise ValueError(
                    f"sgsu: loss_fn must return the per-task losses of shape ({self.num_tasks},), "
                    f"got {tuple(meta_losses.shape)}"
                )
            outer = torch.autograd.grad(meta_losses[t], params, retain_graph=True, allow_unused=True)
            for acc, g in zip(direction, outer, strict=True):
                if g is not None:
                    acc.add_(g)
        jac_TP = torch.stack(inner_rows).to(torch.float64)
        return SGSUStep([d.detach() for d in direction], jac_TP @ jac_TP.T)

    def extra_repr(self) -> str:
        return f"inner_lr={self.inner_lr}, first_order={self.first_order}"
