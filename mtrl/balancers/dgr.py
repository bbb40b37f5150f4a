"""Dummy Gradient norm Regularization (DGR): penalise the head-gradient norm of fixed random heads.

Shin, Do & Son, "Learning Representation for Multitask Learning through Self-Supervised Auxiliary
Learning", ECCV 2024, arXiv 2409.16651; official code Sinseokwon/LearningUnivforMTL (commit dacf8bb).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from mtrl.balancers._dummy_heads import default_initialised_copy, fresh_values, head_tensors, placed
from mtrl.balancers._plain import PLAIN_BALANCERS, build_balancer
from mtrl.balancers.base import Balancer

__all__ = ["DGR", "default_initialised_copy"]

_MODES = ("exact", "fd")


class DGR(Balancer):
    """Any base balancer plus the gradient of a dummy-head gradient-norm regulariser on the shared params.

    With ``N_d`` sets of fixed, randomly initialised dummy heads ``φ̃ⁿ`` (default-initialised copies of
    the task-head modules) and the dummy loss ``D_n(θ) = Σ_t L_t(θ, φ̃ⁿ)``::

        R(θ) = (λ / N_d) · Σ_n ‖∇_{φ̃ⁿ} D_n(θ)‖²            shared params: d_base + ∇θ R

    The real heads get nothing from ``R`` (they receive what the base balancer gives them); the
    dummy heads never move. ``mode="exact"`` differentiates ``R`` by double backward;
    ``mode="fd"`` is the official two-point finite difference along ``u = ∇_φ̃ D / ‖∇_φ̃ D‖``
    (``compute_hessian`` in DGR_train.py)::

        ∇θ R_n ≈ 2 (D_n(φ̃ + εu) − D_n(φ̃)) (∇θ D_n(φ̃ + εu) − ∇θ D_n(φ̃)) / ε²

    Paper: Shin, Do & Son, "Learning Representation for Multitask Learning through Self-Supervised
    Auxiliary Learning", ECCV 2024, arXiv 2409.16651. The full text was not available, so no
    equation number is cited: ``R`` is derived from the official code (Sinseokwon/LearningUnivforMTL,
    commit dacf8bb, SceneUnderstanding/DGR_train.py: the dummy-head loss and ``compute_hessian``),
    and the derivation is checked numerically (``tests/engine/test_dgr.py``: double backward against
    ``torch.func``, and ``fd`` against ``exact`` to first order in ``ε``).

    Note: whether the paper writes the norm squared and per-task or summed is unverified (the code
    squares the norm of the summed dummy loss, as here). ``mode="exact"`` (the default) is not in the
    official code, which uses ``fd``; both compute the same ``∇θ R`` (``fd`` to ``O(ε)``). The official
    code has no guard for ``∇_φ̃ D = 0`` (division by zero → NaN); here that dummy set then contributes
    zero.

    Note: dummy heads, as in the official code, are fresh copies of the real head modules with PyTorch's
    default initialisation: each head is deep-copied and every submodule that owns parameters or
    buffers is re-initialised by its own ``reset_parameters()`` (``nn.Linear``/``nn.Conv2d``: weight
    ``U(±1/√fan_in)`` with ``fan_in = in·kh·kw``, bias ``U(±1/√fan_in)``; GroupNorm/BatchNorm: weight 1,
    bias 0, fresh running statistics; mtrl's ``BatchedLinear``: ``U(±1/√in)``), drawn once, on first use,
    from the CPU generator seeded with ``seed`` (the global random state is left untouched). Buffers
    are part of the dummies: a dummy BatchNorm keeps its own running statistics, so the dummy forwards
    never move the real heads' (the closure receives them as ``buffers=``). Task parameters outside
    the given heads (e.g. SAC's learned task embedding, an input of the shared trunk) keep their real
    values in the dummy losses.

    Needs ``loss_fn`` and ``heads`` in ``engine.backward`` (``loss_fn(None, values)`` evaluates the
    losses with the dummies standing in for the heads' parameters). Stateful: the dummy heads and the
    base balancer's state. Its facts other than ``needs_loss_closure`` and ``loss_scale_problem`` are
    its base's: read them through ``mtrl.engine.core_balancer``.

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
            if base == "dgr":
                raise ValueError("dgr: base cannot be 'dgr' itself; pick any other registry key, e.g. 'ew'")
            self.base = build_balancer(PLAIN_BALANCERS, base, num_tasks, **(base_hparams or {}))
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
        #: ``[N_d][n_params + n_buffers]``: per dummy set, the parameters then the buffers of the fresh
        #: head copies (heads in the order given, each head's ``parameters()`` then ``buffers()``).
        self.dummies: list[list[Tensor]] | None = None

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
    def dummy_heads(self, heads: Sequence[nn.Module]) -> list[list[Tensor]]:
        """The ``N_d`` dummy sets for ``heads`` (created on first use): per set, the parameters (requiring
        grad) then the buffers of default-initialised copies of ``heads``, on the real tensors' devices."""
        head_params, head_buffers = head_tensors(heads)
        if not head_params:
            raise ValueError("dgr needs task-specific parameters (heads) to copy into dummy heads; got none")
        real = head_params + head_buffers
        if self.dummies is None:
            gen = torch.Generator().manual_seed(self.seed)
            self.dummies = [fresh_values(heads, gen) for _ in range(self.num_dummy)]
        shapes = [tuple(t.shape) for t in real]
        for n, dummy_set in enumerate(self.dummies):
            if [tuple(d.shape) for d in dummy_set] != shapes:
                raise ValueError(
                    f"dgr: dummy heads have shapes {[tuple(d.shape) for d in dummy_set]} but the heads' "
                    f"parameters and buffers have {shapes}"
                )
            pairs = enumerate(zip(dummy_set, real, strict=True))
            self.dummies[n] = [placed(d, r, grad=i < len(head_params)) for i, (d, r) in pairs]
        return self.dummies

    def regularizer_gradient(
        self,
        shared_params: Sequence[Tensor],
        task_params: Sequence[Tensor],
        heads: Sequence[nn.Module],
        loss_fn: Callable[..., Tensor],
    ) -> tuple[list[Tensor], float]:
        """``(∇θ R per shared parameter, R)``; ``loss_fn(None, values)`` gives the dummy losses ``(T,)``
        with ``values`` the task parameters, the heads' replaced by a dummy set (``heads``: the modules
        whose parameters are among ``task_params``)."""
        params = list(shared_params)
        head_params, head_buffers = head_tensors(heads)
        position = {id(p): i for i, p in enumerate(task_params)}
        outside = [tuple(p.shape) for p in head_params if id(p) not in position]
        if outside:
            raise ValueError(f"dgr: head parameters with shapes {outside} are not among the task parameters")
        total = [torch.zeros_like(p) for p in params]
        reg = 0.0
        scale = self.lam / self.num_dummy
        for dummy_set in self.dummy_heads(heads):
            dummies, dummy_buffers = dummy_set[: len(head_params)], dummy_set[len(head_params) :]
            buffers = list(zip(head_buffers, dummy_buffers, strict=True))

            def evaluate(values: Sequence[Tensor], buffers: list[tuple[Tensor, Tensor]] = buffers) -> Tensor:
                substituted = list(task_params)
                for p, value in zip(head_params, values, strict=True):
                    substituted[position[id(p)]] = value
                losses = loss_fn(None, substituted, buffers=buffers) if buffers else loss_fn(None, substituted)
                if losses.shape != (self.num_tasks,):
                    raise ValueError(
                        f"dgr: loss_fn must return losses of shape ({self.num_tasks},), got {tuple(losses.shape)}"
                    )
                return losses.sum()

            dummy_loss = evaluate(dummies)
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
                grads, sq = self._finite_difference(evaluate, dummies, dummy_loss, params)
                reg += scale * sq
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc.add_(g, alpha=scale)
        return total, reg

    def _finite_difference(
        self,
        evaluate: Callable[[Sequence[Tensor]], Tensor],
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
        shifted_loss = evaluate(shifted)
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
        # requires_grad is set on the parameter part when the heads are known (dummy_heads)
        self.dummies = None if dummies is None else [[d.detach().clone() for d in s] for s in dummies]
        self.base.load_state_dict(state["base"])

    def reset(self) -> None:
        """Reset the base balancer; the dummy heads stay (they are fixed by design)."""
        self.base.reset()

    def extra_repr(self) -> str:
        return f"base={self.base!r}, lam={self.lam}, num_dummy={self.num_dummy}, mode={self.mode!r}, eps={self.eps}"
