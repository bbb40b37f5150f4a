"""The balancer interface shared by every method.

Vocabulary: ``T`` tasks, ``P`` flattened shared parameters, ``J`` the
per-task Jacobian ``(T, P)``, ``G = J Jᵀ`` its Gramian ``(T, T)``, ``w`` task weights ``(T,)`` and
``d`` the combined update direction ``(P,)`` (the optimizer descends along ``-d``).

A balancer turns per-task losses into one update. Every balancer first maps the raw losses to
per-task *objective terms* with :meth:`Balancer.scalarize` (the identity unless the method scales or
re-parametrises the losses, e.g. IMTL-L, UW, FAMO); the training objective is ``Σ_t S_t``.

Two families follow:

* :class:`LossWeighting` — every parameter (shared, task-specific and the balancer's own learnable
  parameters) receives ``∇ Σ_t S_t``. Costs one ordinary backward.
* :class:`GradientBalancer` — the shared parameters receive ``d = aggregate(J_S, L)`` where ``J_S`` is
  the Jacobian of the terms ``S_t`` w.r.t. the shared parameters; task-specific parameters receive
  ``∇ Σ_t S_t`` (each head only its own task's, unweighted, gradient).
  :class:`GramianWeighting` is the sub-family whose weights depend only on ``G`` (and the losses):
  ``d = wᵀ J``, so the engine may compute ``G`` without materialising ``J``.

Model-aware methods (DGR, the single-gradient-step update) wrap or replace these and are driven
by the engine through a loss closure; see their own modules.

Only the engine (:mod:`mtrl.engine`) writes ``.grad``; balancers are pure maths plus explicit state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.balancers._linalg import default_rtol

__all__ = [
    "Balancer",
    "GradientBalancer",
    "GramianWeighting",
    "LossWeighting",
    "check_jacobian",
    "check_losses",
]


def check_losses(losses: Tensor, num_tasks: int, *, positive: bool = False, name: str = "") -> None:
    """Validate a per-task loss vector ``(T,)``; raise ``ValueError`` naming the problem and the fix."""
    if not isinstance(losses, Tensor):
        raise TypeError(f"losses must be a torch.Tensor of shape ({num_tasks},), got {type(losses).__name__}")
    if losses.shape != (num_tasks,):
        raise ValueError(
            f"losses must have shape (T,) = ({num_tasks},), one loss per task in fixed task order; "
            f"got shape {tuple(losses.shape)}"
        )
    if positive and bool((losses.detach() <= 0).any()):
        bad = [i for i, v in enumerate(losses.detach().tolist()) if v <= 0]
        raise ValueError(
            f"balancer {name!r} needs strictly positive losses (it takes their log or scales them), "
            f"but tasks {bad} have losses {[losses.detach()[i].item() for i in bad]}. Use it on positive "
            f"losses only (in SAC: the critic), or pick a balancer that accepts any sign (e.g. 'ew')."
        )


def check_jacobian(jac: Tensor, losses: Tensor, num_tasks: int) -> None:
    """Validate ``jac (T, P)`` against ``losses (T,)``."""
    if not isinstance(jac, Tensor) or jac.dim() != 2 or jac.shape[0] != num_tasks:
        shape = tuple(jac.shape) if isinstance(jac, Tensor) else type(jac).__name__
        raise ValueError(f"jac must have shape (T, P) with T = {num_tasks}; got {shape}")
    if losses.shape != (num_tasks,):
        raise ValueError(f"losses must have shape (T,) = ({num_tasks},); got {tuple(losses.shape)}")


class Balancer:
    """Common state handling and checks for every balancer.

    Subclasses set ``name`` (the registry key) and the facts below that differ from the defaults.
    Every fact that a trainer, the engine or the mixed-precision set-up asks about a balancer lives
    here, on the class (or as a property where a hyper-parameter decides it); callers read them from
    ``mtrl.engine.core_balancer(balancer)``, which looks through ``dgr`` to the balancer that weighs
    the losses (``dgr``'s own facts are only ``needs_loss_closure`` and ``loss_scale_problem``).
    """

    name: ClassVar[str] = ""
    #: True when the method is only defined for strictly positive losses (it takes their log or
    #: divides by them); :meth:`check` then refuses a non-positive loss.
    positive_losses: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    #: True when the balancer needs the losses re-evaluated after the optimizer step (FAMO).
    needs_post_step_losses: ClassVar[bool] = False
    #: True when ``engine.backward`` needs ``loss_fn=``, a closure that re-evaluates the losses at
    #: other parameter values (``sgsu``: virtual steps; ``dgr``: dummy heads).
    needs_loss_closure: ClassVar[bool] = False
    #: True when the method computes its weights / direction from per-task gradients w.r.t. the
    #: shared representation ``z`` (the "-UB" / feature-level variants): the engine then runs the
    #: ``representation`` strategy when given ``features=z``. Only such balancers accept
    #: ``strategy="representation"`` (loss weightings accept it too: it only places their diagnostics).
    representation_level: bool = False
    #: True when the method is *defined* at representation level only (``mgda_ub``,
    #: ``aligned_mtl_ub``): the engine raises instead of running it on parameter gradients (which
    #: would silently be the parameter-level method). False with ``representation_level`` True
    #: (``imtl``): without ``features`` the engine falls back to parameter gradients and flags it in
    #: the report (``BalanceReport.representation_fallback``).
    representation_required: ClassVar[bool] = False
    #: The hyper-parameters the method's own paper or code used on Meta-World MT10, as keyword arguments of
    #: the constructor (``{}``: none published, the class defaults apply). The balancer benchmark
    #: (``agents.transfer.benchmark_jobs``) runs every method with these and gives no method tuning of its own.
    metaworld_hparams: ClassVar[Mapping[str, float]] = {}

    @property
    def needs_task_gradients(self) -> bool:
        """True when the shared update combines per-task gradients (the engine forms ``G`` or ``J``);
        False when it is one ordinary backward of ``Σ_t S_t`` (loss weightings, constant weights)."""
        return False

    @property
    def loss_scale_problem(self) -> str | None:
        """``None`` when the update is loss-scale equivariant, ``d(S·L) = S·d(L)`` for every ``S > 0``
        (heads and the balancer's own parameters likewise) with a state that does not depend on ``S``
        — what fp16 training with a GradScaler needs (:mod:`mtrl.vision.amp`) — else why it is not.
        Every registered balancer states its own; this default refuses."""
        return f"balancer {self.name!r} has not been analysed for loss-scale equivariance"

    def __init__(self, num_tasks: int) -> None:
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
        self.num_tasks = num_tasks

    # --- losses -----------------------------------------------------------------------------
    def check(self, losses: Tensor) -> None:
        """Raise a clear error if ``losses`` is not a valid ``(T,)`` vector for this method."""
        check_losses(losses, self.num_tasks, positive=self.positive_losses, name=self.name)

    def scalarize(self, losses: Tensor) -> Tensor:
        """Per-task objective terms ``S (T,)``; the objective is ``S.sum()``. Identity by default."""
        return losses

    def parameters(self) -> list[Tensor]:
        """Learnable parameters of the balancer itself (loss scales, weight logits). Empty by default."""
        return []

    def after_backward(self) -> None:
        """Called by the engine once the ``.grad`` of :meth:`parameters` are written (e.g. to step
        a private optimizer). No-op by default."""

    def post_step(self, losses: Tensor) -> None:
        """Receive the losses re-evaluated after the optimizer step (only when
        ``needs_post_step_losses``). No-op by default."""

    # --- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically after a restart (empty when stateless)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`. Stateless balancers accept only an empty dict."""
        if state:
            raise ValueError(f"balancer {self.name!r} is stateless but got state keys {sorted(state)}")

    def reset(self) -> None:
        """Forget all history (stateless balancers: no-op)."""

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        return f"{type(self).__name__}(num_tasks={self.num_tasks}{', ' + extra if extra else ''})"


class LossWeighting(Balancer):
    """A method that only rescales the losses: all parameters receive ``∇ Σ_t S_t``."""


class GradientBalancer(Balancer, ABC):
    """A method that combines the per-task shared gradients: ``d = aggregate(J, L)``."""

    @property
    def needs_task_gradients(self) -> bool:
        return True

    @abstractmethod
    def aggregate(self, jac: Tensor, losses: Tensor) -> Tensor:
        """Combine ``jac (T, P)`` (rows: per-task gradients) into ``d (P,)``; pure maths."""


class GramianWeighting(GradientBalancer):
    """A method whose weights depend only on the Gramian ``G = J Jᵀ`` and the losses.

    ``d = wᵀ J``. Subclasses implement :meth:`weights`. When ``constant_weights`` is True the
    weights do not depend on ``G`` at all and the engine skips computing it (and the balancer is
    then a loss weighting: every parameter, heads included, receives ``∇ Σ_t w_t S_t``).

    ``weights(gram, losses, rtol)``: ``rtol`` is the relative eigenvalue cut-off below which an
    eigenvalue of ``G`` counts as rounding noise (rank decisions, pseudo-inverses); ``None`` means
    ``T · eps(float64)``, right for a ``G`` of float64 gradients. The engine passes
    ``T · eps(dtype of the Jacobian)``, and :meth:`aggregate` ``T · eps(jac.dtype)``, so both agree
    for a float32 model (see :mod:`mtrl.balancers._linalg`). Methods without rank decisions ignore it.
    """

    constant_weights: ClassVar[bool] = False

    @property
    def needs_task_gradients(self) -> bool:
        return not self.constant_weights

    @abstractmethod
    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Task weights ``w (T,)`` from ``gram (T, T)`` and ``losses (T,)`` (``rtol``: see the class)."""

    def aggregate(self, jac: Tensor, losses: Tensor) -> Tensor:
        check_jacobian(jac, losses, self.num_tasks)
        jac64 = jac.to(torch.float64)
        rtol = default_rtol(self.num_tasks, jac.dtype if jac.is_floating_point() else torch.float64)
        w = self.weights(jac64 @ jac64.T, losses.detach().to(torch.float64), rtol=rtol)
        return (w.to(jac64) @ jac64).to(jac.dtype)
