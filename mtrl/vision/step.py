"""The balanced step of a dense multi-task model: losses → balancer → gradients, the seam where the engine plugs in.

One step (:class:`BalancedStep`, top to bottom)::

    z = model.features(x)                       # shared representation (upcast to float32 under AMP)
    preds = model.decode(z)                     # {task: (B, C_t, H, W)}
    losses = multi_task_losses(tasks, preds, batch)            # (T,) fixed task order
    engine.backward(losses, model.shared_parameters(), model.task_parameters(),
                    features=z   (representation-level balancers: mgda_ub, aligned_mtl_ub, imtl),
                    loss_fn=...  (sgsu, dgr: recompute the losses with substituted parameters))
    optimizer.step()
    engine.post_step(losses after the step)     # FAMO only

Only the engine writes ``.grad``. Mixed precision (:mod:`mtrl.vision.amp`): under autocast the representation
is upcast, ``z = model.features(x).float()``, so the representation-level Gramians come from float32 ``∇_z``.
fp16 needs a GradScaler, which hands the engine ``S·L`` and divides the ``.grad`` it writes by ``S``; that is
exact only for scale-equivariant balancers (``d(S·L) = S·d(L)``), which the trainer checks at start-up.

:func:`strategy_problem` is the start-up check of a balancer/strategy pair on a dense model: the engine's own
rules (:func:`mtrl.engine.choose_strategy`) with the vision configuration's setting names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

from mtrl.balancers import Balancer
from mtrl.engine import (
    BalanceReport,
    GradientEngine,
    LossClosure,
    Strategy,
    StrategyNames,
    choose_strategy,
    core_balancer,
    make_loss_fn,
    needs_loss_fn,
)
from mtrl.vision.losses import multi_task_losses
from mtrl.vision.models import MultiTaskDenseModel
from mtrl.vision.tasks import TaskSpec

__all__ = ["STRATEGY_NAMES", "BalancedStep", "strategy_problem"]

#: how the vision configuration spells the settings named in strategy errors.
STRATEGY_NAMES = StrategyNames("balancer.strategy", "balancer.hparams.representation_level=false")


def strategy_problem(balancer: Balancer, strategy: str) -> str | None:
    """Why ``strategy`` cannot run ``balancer`` on a dense model, which always provides ``z`` (None when it
    can): the engine's rules (:func:`mtrl.engine.choose_strategy`), with no parameter-level fallback of a
    representation-level balancer (an explicit ``balancer.hparams.representation_level=false`` says so)."""
    try:
        choose_strategy(balancer, strategy, features=True, capture=False, allow_fallback=False, names=STRATEGY_NAMES)
    except ValueError as err:
        return str(err)
    return None


class BalancedStep:
    """One balanced optimisation step of a multi-task dense model: the seam where the engine plugs in.

    ``step(x (B,3,H,W), targets {task: target}) -> (losses (T,) detached, BalanceReport)``: forward through
    ``features``/``decode``, per-task losses, one ``engine.backward`` (features ``z`` for representation-level
    balancers, a loss closure for sgsu/dgr), ``optimizer.step()``, and FAMO's ``post_step``.

    Under autocast (``amp_dtype``) ``z`` is upcast to float32 before decoding, so ``∇_z`` (the
    representation-level Jacobian) is float32 while the convolutions still run in ``amp_dtype``. With a
    ``scaler`` (fp16) the engine receives ``scaler.scale(losses)``: only correct for scale-equivariant
    balancers (:func:`mtrl.vision.amp.fp16_refusal`; the trainer refuses the others).
    """

    def __init__(
        self,
        model: MultiTaskDenseModel,
        tasks: Sequence[TaskSpec],
        balancer: Balancer,
        optimizer: torch.optim.Optimizer,
        *,
        strategy: Strategy = "auto",
        diagnostics: bool = False,
        amp_dtype: torch.dtype | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model, self.tasks, self.balancer, self.optimizer = model, tuple(tasks), balancer, optimizer
        self.amp_dtype, self.scaler = amp_dtype, scaler
        core = core_balancer(balancer)
        self.representation = core.representation_level
        self.needs_closure = needs_loss_fn(balancer)
        if self.representation and not getattr(model, "representation_exact", True):
            raise ValueError(
                f"balancer {balancer.name!r} differentiates w.r.t. the shared representation, but "
                f"{type(model).__name__} applies shared parameters after it (SegNet-MTAN's shared attention convs); "
                "use a parameter-level balancer (e.g. 'mgda', 'aligned_mtl', 'imtl_g') "
                "or model.share_attention_convs=false"
            )
        problem = strategy_problem(balancer, strategy)
        if problem is not None:
            raise ValueError(problem)
        #: pass z to the engine: representation-level balancers, or diagnostics placed on z
        self.pass_features = self.representation or strategy == "representation"
        self.engine = GradientEngine(balancer, strategy=strategy, diagnostics=diagnostics)
        self.needs_post_step = self.engine.needs_post_step_losses
        self.shared = model.shared_parameters()
        self.task_params = model.task_parameters()
        self.heads = model.head_modules()

    def autocast(self) -> AbstractContextManager[Any]:
        """Mixed-precision context (a no-op without an AMP dtype)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.shared[0].device.type, dtype=self.amp_dtype)

    def losses(self, preds: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
        """Per-task losses ``(T,)`` in float32, fixed task order."""
        return multi_task_losses(self.tasks, {k: v.float() for k, v in preds.items()}, targets)

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(z, preds)``: the shared representation (float32 under autocast) and the per-task predictions."""
        with self.autocast():
            z = self.model.features(x)
            if self.amp_dtype is not None and z.is_floating_point():
                z = z.float()  # ∇_z in float32: representation-level Gramians are not built from bf16/fp16
            preds = self.model.decode(z)
        return z, preds

    def loss_fn(self, x: Tensor, targets: dict[str, Tensor]) -> LossClosure:
        """LossClosure ``(shared_values, task_values) -> (T,)`` on this batch (``torch.func.functional_call``)."""

        def compute(forward: Callable[..., Any]) -> Tensor:
            with self.autocast():
                preds = forward(x)
            return self.losses(preds, targets)

        return make_loss_fn(self.model, self.shared, self.task_params, compute)

    def __call__(
        self, x: Tensor, targets: dict[str, Tensor], diagnostics: bool | None = None
    ) -> tuple[Tensor, BalanceReport]:
        """One step; ``diagnostics=True`` asks the engine for G statistics of loss weightings too (log steps)."""
        self.model.train()
        z, preds = self.forward(x)
        losses = self.losses(preds, targets)  # (T,)
        report = self.engine.backward(
            self.scaler.scale(losses) if self.scaler is not None else losses,
            self.shared,
            self.task_params,
            features=z if self.pass_features else None,
            loss_fn=self.loss_fn(x, targets) if self.needs_closure else None,
            heads=self.heads,
            diagnostics=diagnostics,
        )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.needs_post_step:
            with torch.no_grad(), self.autocast():
                self.engine.post_step(self.losses(self.model(x), targets))
        return losses.detach(), report
