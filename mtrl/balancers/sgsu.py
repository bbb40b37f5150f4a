"""Single gradient step update (SGSU): a one-step MAML meta-gradient for the shared parameters.

Lee & Son, "Multitask Learning with Single Gradient Step Update for Task Balancing",
arXiv 2005.09910, Neurocomputing 467:442–453 (2022).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    """Shared parameters follow the meta-gradient of one virtual gradient step per task.

    Update rule::

        θ'_t = θ − a · ĝ_t,   ĝ_t = ∇θ L_t(θ) / ‖∇θ L_t(θ)‖    (one virtual step per task, default)
               (``normalize=False``: ĝ_t = ∇θ L_t(θ), MAML's SGD step with inner lr a)
        d    = ∇θ Σ_t L_t(θ'_t(θ))                         (second order, default; through ĝ_t)
        d    ≈ Σ_t ∇L_t(θ'_t)                               (``first_order=True``: θ'_t treated as θ + const)

    ``‖·‖`` is the norm over all shared parameters; a task with a zero gradient takes no step.
    Task-specific parameters (heads) step on their own unweighted loss (``∇ Σ_t L_t``), separately
    from the shared update. ``a → 0`` gives ``∇θ Σ_t L_t``, i.e. ``ew``.

    Paper: Lee & Son, "Multitask Learning with Single Gradient Step Update for Task Balancing",
    Neurocomputing 467:442–453 (2022), arXiv 2005.09910. Only the abstract was available (no full
    text, no code anywhere searched), so no equation or algorithm number could be checked.

    Note: a RECONSTRUCTION from the abstract (MAML with a one-step inner loop whose meta-"tasks" are
    the MTL tasks; the paper's details are unknown). Choices made here, each possibly
    different from the paper: one minibatch for the inner and the outer loss (no support/query
    split); each task evaluated only at its own adapted ``θ'_t`` (``loss_fn(θ'_t, None)[t]``), not
    ``Σ_k L_k(θ'_t)``; second order by default; ``a`` fixed (not learned); the heads' gradient at the
    pre-update ``θ``; the outer step is the caller's optimizer on ``d``.

    Note: the inner step is taken on the *normalised* task gradient with a fixed length ``a = 0.03``
    (our choice; the paper's inner step is unknown). An SGD inner step with the SAC references' Adam
    learning rate (3e-4, this class's earlier default) made the method ``ew``: an SGD step of 3e-4 is
    far shorter than an Adam step of 3e-4 (cosine between the SGSU and ``ew`` directions 0.9997–1.0000
    on the MT10 critic). On normalised gradients the step length, and with it the effect, no longer
    depends on the scale of the losses (Q-targets, depth units), and ``S·L`` gives ``S·d``. ``a`` comes
    from a sweep of that cosine at initialisation (``python scripts/sgsu_sweep.py``: grid ``a`` ∈ {0.003,
    0.01, 0.02, 0.03, 0.05, 0.1}; an MT10-shaped critic with TD targets scaled ×0.1, ×1 and ×10, the
    toy-suite critic and the small synthetic-scenes model; table in the README): 0.03 is the smallest
    grid value whose cosine on the MT10 critic is ≤ 0.99 at every target scale (0.972, 0.985, 0.987),
    and it keeps a descent direction of ``Σ_t L_t`` everywhere (toy critic 0.991, synthetic model 0.81),
    where 0.05 bends the synthetic model to 0.54 and 0.1 the small-target critic to 0.18. An SGD step
    (``normalize=False``) has no such value: at lr 0.01 the MT10 cosine is 0.9999 / 0.999 / 0.988 across
    the target scales and the synthetic model's 0.43.

    Cost: ``T`` inner gradients (kept in the graph when second order), ``T`` forwards at ``θ'_t``
    through the loss closure and ``T`` (double) backwards. Needs ``loss_fn`` in
    ``engine.backward``. Stateless.

    Args:
        num_tasks: ``T``.
        inner_lr: ``a ≥ 0``: the length of the virtual step in parameter space (with ``normalize``),
            else the SGD learning rate of the virtual step.
        first_order: drop the Hessian term (first-order MAML).
        normalize: step along the unit task gradient (default) instead of the raw gradient.
    """

    name = "sgsu"
    needs_loss_closure = True

    def __init__(
        self, num_tasks: int, inner_lr: float = 0.03, first_order: bool = False, normalize: bool = True
    ) -> None:
        super().__init__(num_tasks)
        if isinstance(inner_lr, bool) or not isinstance(inner_lr, (int, float)) or not inner_lr >= 0:
            raise ValueError(f"sgsu: inner_lr must be a float >= 0, got {inner_lr!r}")
        if not isinstance(first_order, bool):
            raise TypeError(f"sgsu: first_order must be a bool (True or False), got {first_order!r}")
        if not isinstance(normalize, bool):
            raise TypeError(f"sgsu: normalize must be a bool (True or False), got {normalize!r}")
        self.inner_lr = float(inner_lr)
        self.first_order = first_order
        self.normalize = normalize

    @property
    def loss_scale_problem(self) -> str | None:
        """Loss scaling ``L → S·L``: the outer losses come from the unscaled loss closure, so ``d`` is not
        multiplied by ``S`` (and the GradScaler divides it by ``S``); without ``normalize`` the virtual step
        is also ``S`` times too long."""
        if self.normalize:
            return "its direction comes from the unscaled loss closure, so the GradScaler's division by S shrinks it"
        return "its virtual step uses S-scaled gradients while the outer losses are unscaled"

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
            adapted = [p - g for p, g in zip(params, self._step(inner), strict=True)]
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

    def _step(self, inner: list[Tensor]) -> list[Tensor]:
        """The virtual step ``a · ĝ_t`` per shared parameter (zero for a zero gradient)."""
        if not self.normalize:
            return [self.inner_lr * g for g in inner]
        norm = torch.stack([(g * g).sum() for g in inner]).sum().sqrt()
        if not bool(norm > 0):
            return [torch.zeros_like(g) for g in inner]
        scale = self.inner_lr / norm
        return [scale * g for g in inner]

    def extra_repr(self) -> str:
        return f"inner_lr={self.inner_lr}, first_order={self.first_order}, normalize={self.normalize}"
