"""Dummy Gradient norm Regularization (DGR): penalise the head-gradient norm of fixed random heads.

Shin, Do & Son, "Learning Representation for Multitask Learning through Self-Supervised Auxiliary
Learning", ECCV 2024, arXiv 2409.16651; official code Sinseokwon/LearningUnivforMTL (commit dacf8bb).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from mtrl.balancers.base import Balancer

__all__ = ["DGR"]

_MODES = ("exact", "fd")


class DGR(Balancer):
    """Any base balancer plus the gradient of a dummy-head gradient-norm regulariser on the shared params.

    With ``N_d`` sets of fixed, randomly initialised dummy heads ``φ̃ⁿ`` (copies of the task
    parameters' shapes) and the dummy loss ``D_n(θ) = Σ_t L_t(θ, φ̃ⁿ)`` (balancers.md §2.3)::

        R(θ) = (λ / N_d) · Σ_n ‖∇_{φ̃ⁿ} D_n(θ)‖²            shared params: d_base + ∇θ R

    The real heads get nothing from ``R`` (they receive what the base balancer gives them); the
    dummy heads never move. ``mode="exact"`` differentiates ``R`` by double backward;
    ``mode="fd"`` is the official two-point finite difference along ``u = ∇_φ̃ D / ‖∇_φ̃ D‖``
    (balancers.md §2.4, ``compute_hessian`` in DGR_train.py)::

        ∇θ R_n ≈ 2 (D_n(φ̃ + εu) − D_n(φ̃)) (∇θ D_n(φ̃ + εu) − ∇θ D_n(φ̃)) / ε²

    Paper: Shin, Do & Son, "Learning Representation for Multitask Learning through Self-Supervised
    Auxiliary Learning", ECCV 2024, arXiv 2409.16651. The full text was not available, so no
    equation number is cited: ``R`` is derived from the official code (Sinseokwon/LearningUnivforMTL,
    commit dacf8bb, SceneUnderstanding/DGR_train.py: the dummy-head loss and ``compute_hessian``),
    and the derivation was checked numerically (balancers.md §2.3–2.4).

    Note: whether the paper writes the norm squared and per-task or summed is unverified (the code
    squares the norm of the summed dummy loss, as here). ``mode="exact"`` (the default) is not in the
    official code, which uses ``fd``; both compute the same ``∇θ R`` (``fd`` to ``O(ε)``). The official
    code has no guard for ``∇_φ̃ D = 0`` (division by zero → NaN); here that
    dummy set then contributes zero. Dummy heads are drawn once, on first use, from ``seed`` with
    PyTorch's ``nn.Linear`` default ``U(±1/√fan_in)``; with mtrl's ``(T, in, out)`` batched-weight
    layout ``fan_in = shape[-2]`` for tensors of ≥ 2 dims, and a bias-like tensor (``dim < 2`` or
    ``shape[-2] == 1``, e.g. ``BatchedLinear.bias (T, 1, out)``) uses the fan_in of the preceding
    weight (1 if none precedes it). The official code draws them with each head's own default init.

    Needs ``loss_fn`` in ``engine.backward`` (``loss_fn(None, dummies)`` evaluates the losses with
    the dummies as task parameters). Stateful: the dummy heads and the base balancer's state. Its facts
    other than ``needs_loss_closure`` and ``loss_scale_problem`` are its base's: read them through
    ``mtrl.engine.core_balancer``.

    Args:
        num_tasks: ``T``.
        base: registry key of the balancer that produces ``d_base`` (or a built ``Balancer``).
        base_hparams: hyper-parameters of ``base`` (only with a key).
        lam: ``λ ≥ 0`` (official SceneUnderstanding default 0.1).
        num_dummy: ``N_d ≥ 1`` (official default 1).
        mode: ``"exact"`` (double backward) or ``"fd"`` (official finite difference).
        eps: ``ε > 0`` of ``fd`` (official SceneUnderstanding default 1e-3).
        seed: seed of the dummy heads.
    """

    name = "dgr"
    stateful = True
    needs_loss_closure = True
    #: Loss scaling ``L → S·L``: ``∇θ R`` comes from the unscaled closure and is then divided by ``S``
    #: (with a scaled closure it would scale with ``S²``).
    loss_scale_problem: ClassVar[str | None] = (
        "its regulariser gradient comes from the unscaled loss closure (1/S after unscaling, S^2 if scaled)"
    )

    def __init__(
        self,
        num_tasks: int,
        base: str | Balancer = "ew",
        base_hparams: dict[str, Any] | None = None,
        lam: float = 0.1,
        num_dummy: int = 1,
        mode: Literal["exact", "fd"] = "exact",
        eps: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__(num_tasks)
        if isinstance(base, Balancer):
            if base_hparams:
                raise ValueError("dgr: base_hparams apply only when base is a registry key, not a built balancer")
            if base.num_tasks != num_tasks:
                raise ValueError(f"dgr: base balancer has num_tasks={base.num_tasks}, expected {num_tasks}")
            self.base = base
        elif isinstance(base, str):
            from mtrl.balancers.registry import make_balancer  # lazy: the registry imports this module

            if base == "dgr":
                raise ValueError("dgr: base cannot be 'dgr' itself; pick any other registry key, e.g. 'ew'")
            self.base = make_balancer(base, num_tasks, **(base_hparams or {}))
        else:
            raise TypeError(f"dgr: base must be a registry key (str) or a Balancer, got {type(base).__name__}")
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0:
            raise ValueError(f"dgr: lam must be a float >= 0, got {lam!r}")
        if isinstance(num_dummy, bool) or not isinstance(num_dummy, int) or num_dummy < 1:
            raise ValueError(f"dgr: num_dummy must be an int >= 1, got {num_dummy!r}")
        if mode not in _MODES:
            raise ValueError(f"dgr: unknown mode {mode!r}; valid modes: {', '.join(_MODES)}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"dgr: eps must be a float > 0, got {eps!r}")
        self.lam = float(lam)
        self.num_dummy = num_dummy
        self.mode = mode
        self.eps = float(eps)
        self.seed = seed
        self.dummies: list[list[Tensor]] | None = None  # [N_d][len(task_params)]

    # --- the base balancer is what the engine drives ---------------------------------------
    def check(self, losses: Tensor) -> None:
        self.base.check(losses)

    def scalarize(self, losses: Tensor) -> Tensor:
        return self.base.scalarize(losses)

    def parameters(self) -> list[Tensor]:
        return self.base.parameters()

    def after_backward(self) -> None:
        self.base.after_backward()

    def post_step(self, losses: Tensor) -> None:
        self.base.post_step(losses)

    # --- dummy heads ----------------------------------------------------------------------------
    def dummy_heads(self, task_params: Sequence[Tensor]) -> list[list[Tensor]]:
        """The ``N_d`` dummy sets, each a list shaped like ``task_params`` (created on first use)."""
        if not task_params:
            raise ValueError("dgr needs task-specific parameters (heads) to copy into dummy heads; got none")
        if self.dummies is None:
            gen = torch.Generator().manual_seed(self.seed)
            self.dummies = [
                [d.to(p.device).requires_grad_(True) for d, p in zip(_draw(task_params, gen), task_params, strict=True)]
                for _ in range(self.num_dummy)
            ]
        shapes = [tuple(p.shape) for p in task_params]
        dummy_shapes = [tuple(d.shape) for d in self.dummies[0]]
        if dummy_shapes != shapes:
            raise ValueError(f"dgr: dummy heads have shapes {dummy_shapes} but task_params have {shapes}")
        return self.dummies

    def regularizer_gradient(
        self,
        shared_params: Sequence[Tensor],
        task_params: Sequence[Tensor],
        loss_fn: Callable[[Sequence[Tensor] | None, Sequence[Tensor] | None], Tensor],
    ) -> tuple[list[Tensor], float]:
        """``(∇θ R per shared parameter, R)``; ``loss_fn(None, dummies)`` gives the dummy losses ``(T,)``."""
        params = list(shared_params)
        total = [torch.zeros_like(p) for p in params]
        reg = 0.0
        scale = self.lam / self.num_dummy
        for dummies in self.dummy_heads(task_params):
            dummy_loss = self._dummy_loss(loss_fn, dummies)
            grads: Sequence[Tensor | None]
            if self.mode == "exact":
                head_grads = torch.autograd.grad(dummy_loss, dummies, create_graph=True, allow_unused=True)
                squares = [(g * g).sum() for g in head_grads if g is not None]
                sq_norm = torch.stack(squares).sum() if squares else dummy_loss.new_zeros(())
                grads = (
                    torch.autograd.grad(sq_norm, params, allow_unused=True)
                    if sq_norm.requires_grad
                    else [None] * len(params)
                )
                reg += scale * float(sq_norm.detach())
            else:
                grads, sq = self._finite_difference(loss_fn, dummies, dummy_loss, params)
                reg += scale * sq
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc.add_(g, alpha=scale)
        return total, reg

    def _dummy_loss(self, loss_fn: Callable[..., Tensor], dummies: Sequence[Tensor]) -> Tensor:
        losses = loss_fn(None, list(dummies))
        if losses.shape != (self.num_tasks,):
            raise ValueError(f"dgr: loss_fn must return losses of shape ({self.num_tasks},), got {tuple(losses.shape)}")
        return losses.sum()

    def _finite_difference(
        self,
        loss_fn: Callable[..., Tensor],
        dummies: Sequence[Tensor],
        dummy_loss: Tensor,
        params: list[Tensor],
    ) -> tuple[list[Tensor | None], float]:
        """Official two-point estimate of ``∇θ ‖∇_φ̃ D‖²`` (and ``‖∇_φ̃ D‖²``)."""
        maybe = torch.autograd.grad(dummy_loss, dummies, retain_graph=True, allow_unused=True)
        head_grads = [g if g is not None else torch.zeros_like(d) for g, d in zip(maybe, dummies, strict=True)]
        sq = float(sum(float((g * g).sum()) for g in head_grads))
        if sq == 0.0:  # no direction to probe; the official code would divide by zero here
            return [None] * len(params), 0.0
        grads0 = torch.autograd.grad(dummy_loss, params, allow_unused=True)
        step = self.eps / math.sqrt(sq)
        with torch.no_grad():
            shifted = [d + step * g for d, g in zip(dummies, head_grads, strict=True)]
        shifted_loss = self._dummy_loss(loss_fn, shifted)
        grads1 = torch.autograd.grad(shifted_loss, params, allow_unused=True)
        factor = 2.0 * float(shifted_loss.detach() - dummy_loss.detach()) / self.eps**2
        out: list[Tensor | None] = []
        for g0, g1, p in zip(grads0, grads1, params, strict=True):
            if g0 is None and g1 is None:
                out.append(None)
                continue
            g0_ = g0 if g0 is not None else torch.zeros_like(p)
            g1_ = g1 if g1 is not None else torch.zeros_like(p)
            out.append(factor * (g1_ - g0_))
        return out, sq

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        dummies = None if self.dummies is None else [[d.detach().clone() for d in s] for s in self.dummies]
        return {"dummies": dummies, "base": self.base.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"dummies", "base"}:
            raise ValueError(f"dgr: state must have exactly the keys ['base', 'dummies'], got {sorted(state)}")
        dummies = state["dummies"]
        if dummies is not None and len(dummies) != self.num_dummy:
            raise ValueError(f"dgr: state has {len(dummies)} dummy sets, expected num_dummy={self.num_dummy}")
        self.dummies = None if dummies is None else [[d.clone().requires_grad_(True) for d in s] for s in dummies]
        self.base.load_state_dict(state["base"])

    def reset(self) -> None:
        """Reset the base balancer; the dummy heads stay (they are fixed by design)."""
        self.base.reset()

    def extra_repr(self) -> str:
        return f"base={self.base!r}, lam={self.lam}, num_dummy={self.num_dummy}, mode={self.mode!r}, eps={self.eps}"


def _draw(task_params: Sequence[Tensor], gen: torch.Generator) -> list[Tensor]:
    """One dummy set on CPU: ``U(±1/√fan_in)`` per tensor (fan_in rule in the class docstring)."""
    out: list[Tensor] = []
    fan_in = 1
    for p in task_params:
        bias_like = p.dim() < 2 or p.shape[-2] == 1
        if not bias_like:
            fan_in = p.shape[-2]
        bound = 1.0 / math.sqrt(fan_in)
        out.append((torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2.0 - 1.0) * bound)
    return out
