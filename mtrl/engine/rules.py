"""Which strategy the engine runs for a balancer: the one place for the strategy rules.

Both :meth:`GradientEngine.backward <mtrl.engine.GradientEngine.backward>` and the vision trainer's
start-up check call :func:`choose_strategy`; both read the balancer's facts through
:func:`core_balancer` (``dgr`` wraps a base balancer whose rule weighs the losses). The rules:

* a balancer whose update is one ordinary backward (loss weightings, constant weights such as
  ``ew``; ``needs_task_gradients`` False) accepts every strategy: it only says where the diagnostic
  ``G`` is taken;
* a representation-level balancer (``representation_level``) runs ``representation`` when given
  ``features`` and ``auto`` or ``representation``. Otherwise one defined at that level only
  (``representation_required``: ``mgda_ub``, ``aligned_mtl_ub``) is refused — on parameter gradients
  it would silently be ``mgda`` / ``aligned_mtl`` — and one that is feature-level by paper default
  (``imtl``) falls back to parameter gradients, flagged (``StrategyChoice.fallback``), unless the
  caller forbids fallbacks (the vision trainer, whose model always provides ``z``, does);
* ``representation`` with a parameter-level gradient balancer is refused (it would silently compute
  the representation-level variant);
* ``auto`` is ``task_partitioned`` given a capture, else ``reference`` on the CPU (where the vmapped
  backward measured no faster than ``T`` plain calls, ``bench_balancers``/``bench_vision``) and
  ``batched`` on accelerators; ``representation`` needs features and ``task_partitioned`` a capture.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from mtrl.balancers.alpha_weights import AlphaWeights
from mtrl.balancers.base import Balancer
from mtrl.balancers.dgr import DGR

__all__ = [
    "StrategyChoice",
    "StrategyNames",
    "choose_strategy",
    "core_balancer",
    "needs_loss_fn",
    "weighed_losses",
]


def core_balancer(balancer: Balancer) -> Balancer:
    """The balancer whose rule weighs the losses: the base of the wrappers ``dgr`` and ``alpha_weights``,
    else ``balancer`` itself. Its facts (``positive_losses``, ``needs_post_step_losses``,
    ``representation_level``, the strategies) are the run's; ``dgr`` adds only its own
    ``needs_loss_closure`` and ``loss_scale_problem``, ``alpha_weights`` only its task weights."""
    while isinstance(balancer, (DGR, AlphaWeights)):
        balancer = balancer.base
    return balancer


def weighed_losses(balancer: Balancer, losses: Tensor) -> Tensor:
    """The losses the core balancer sees: ``w ⊙ L`` under ``alpha_weights`` (its current task weights),
    else ``losses`` unchanged."""
    while isinstance(balancer, (DGR, AlphaWeights)):
        if isinstance(balancer, AlphaWeights):
            losses = balancer.weigh(losses)
        balancer = balancer.base
    return losses


def needs_loss_fn(balancer: Balancer) -> bool:
    """True when :meth:`GradientEngine.backward` needs ``loss_fn=`` for ``balancer`` (``sgsu``, ``dgr``,
    or a ``dgr`` over ``sgsu``)."""
    return balancer.needs_loss_closure or core_balancer(balancer).needs_loss_closure


@dataclass(frozen=True)
class StrategyNames:
    """How a caller spells its settings in the messages: the strategy option and the hyper-parameter
    that makes a representation-level balancer explicitly parameter-level."""

    strategy: str = "strategy"
    parameter_level: str = "representation_level=False"


@dataclass(frozen=True)
class StrategyChoice:
    """The strategy to run, and whether a representation-level balancer falls back to parameter gradients."""

    strategy: str
    fallback: bool = False


def _parameter_level_key(name: str) -> str:
    """``"mgda_ub"`` → ``", or use balancer 'mgda' for the parameter-level method"`` (empty otherwise)."""
    return f", or use balancer {name[:-3]!r} for the parameter-level method" if name.endswith("_ub") else ""


def choose_strategy(
    balancer: Balancer,
    strategy: str,
    *,
    features: bool,
    capture: bool,
    accelerator: bool = False,
    allow_fallback: bool = True,
    names: StrategyNames | None = None,
) -> StrategyChoice:
    """The strategy the engine runs for ``balancer`` given what the caller provides (module docstring).

    Args:
        balancer: any balancer (``dgr`` is looked through to its base).
        strategy: the requested strategy (``auto`` or one of the engine's strategies).
        features: the caller passes the shared representation ``z``.
        capture: the caller passes a ``LinearCapture`` of the forward.
        accelerator: the losses live on an accelerator (``auto`` then picks ``batched``).
        allow_fallback: False refuses the parameter-level fallback of a representation-level balancer.
        names: how the caller's settings are spelled in the error messages (default: the engine's).

    Raises ``ValueError`` naming the problem and the valid choices.
    """
    core = core_balancer(balancer)
    names = names or StrategyNames()
    name, key = core.name, names.strategy
    fallback = False
    if core.needs_task_gradients:
        if core.representation_level:
            if features and strategy in ("auto", "representation"):
                return StrategyChoice("representation")
            if core.representation_required and not features:
                raise ValueError(
                    f"balancer {name!r} is defined on gradients w.r.t. the shared representation: pass features=z "
                    f"(the representation the task heads read) to engine.backward{_parameter_level_key(name)}"
                )
            if core.representation_required or (strategy != "representation" and not allow_fallback):
                alternative = _parameter_level_key(name) or f", or {names.parameter_level} (parameter-level)"
                raise ValueError(
                    f"balancer {name!r} works on gradients w.r.t. the shared representation, but {key}={strategy!r} "
                    f"differentiates w.r.t. the shared parameters: use auto or representation with features"
                    f"{alternative}"
                )
            fallback = strategy != "representation"
        elif strategy == "representation":
            valid = "auto, reference, batched" + (" or task_partitioned" if capture else "")
            raise ValueError(
                f"{key}='representation' needs a representation-level balancer: balancer {name!r} is "
                f"parameter-level (it would silently become its representation-level variant); use a "
                "representation-level balancer (mgda_ub, aligned_mtl_ub, imtl, imtl_g with "
                f"representation_level=True) or {key} {valid}"
            )
    if strategy == "auto":
        if capture:
            return StrategyChoice("task_partitioned", fallback)
        return StrategyChoice("batched" if accelerator else "reference", fallback)
    if strategy == "representation" and not features:
        raise ValueError(f"{key} 'representation' needs features= (the shared representation z)")
    if strategy == "task_partitioned" and not capture:
        raise ValueError(f"{key} 'task_partitioned' needs capture= (a LinearCapture that recorded the forward)")
    return StrategyChoice(strategy, fallback)
