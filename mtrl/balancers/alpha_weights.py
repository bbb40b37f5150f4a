"""Meta-World+'s α-derived task weights: each task's losses scaled by ``T · softmax(−log α)_t`` before any balancer."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mtrl.balancers._plain import PLAIN_BALANCERS, build_balancer
from mtrl.balancers.base import Balancer

__all__ = ["AlphaWeights", "alpha_task_weights"]

#: Wrappers and closure-driven balancers that cannot be the base (see :class:`AlphaWeights`).
_REFUSED_BASES = ("alpha_weights", "dgr", "sgsu")


def alpha_task_weights(log_alpha_T: Tensor) -> Tensor:
    """``w = T · softmax(−log α) (T,)`` in float64: positive, summing to ``T``, ``w_t = 1`` for equal temperatures.

    A task whose temperature ``α_t`` is small (its policy already as certain as the target entropy
    allows, typically a task being solved) gets a small weight; one whose ``α_t`` is large a large one.
    """
    log_alpha = log_alpha_T.detach().to(torch.float64)
    return log_alpha.shape[0] * torch.softmax(-log_alpha, dim=0)


class AlphaWeights(Balancer):
    """Any base balancer applied to the losses ``w ⊙ L`` weighted by SAC's per-task temperatures.

    Update rule: with the per-task temperatures ``α_t`` of this update (before its temperature step)::

        w = T · softmax(−log α)          (T,), detached: no gradient reaches log α
        base balancer on w_t · L_t        (with ``ew``: every parameter gets ∇ Σ_t w_t L_t)

    Paper: McLean et al., "Meta-World+: An Improved, Standardized, RL Benchmark", 2025 (the
    ``use_task_weights`` option of their baselines). Reference code: rainx0r/metaworld-algorithms,
    commit 30c9991, ``metaworld_algorithms/rl/algorithms/mtsac.py``: ``extract_task_weights`` (the
    weights, from the temperature parameters at the start of ``_update_inner``) and
    ``update_critic`` / ``update_actor`` (every row's squared TD error and actor loss multiplied by its
    task's weight; the temperature loss is not weighted). With ``ew`` and ``mean=True`` this is their
    update; with ``ew`` (sum) it is that times ``T``.

    How it gets ``α``: balancers see only losses, so the SAC agent hands the temperatures over once per
    update with :meth:`set_log_alpha` (``agents.sac.MultiTaskSAC.update``, before the critic step, so
    critic and actor use the same weights, as the reference does). Before the first call the weights
    are all 1 (the base balancer alone, which is also what equal temperatures give); a trainer without
    temperatures (the vision trainer) refuses this balancer. The engine weighs the losses before it
    hands them to the base (:func:`mtrl.engine.rules.weighed_losses`), so the base sees ``w ⊙ L``
    everywhere: its objective terms, the losses its weights or aggregation read, FAMO's post-step
    losses.

    Any base that wraps no other balancer, except ``sgsu``: the closure-driven methods (``sgsu``'s
    virtual step, ``dgr``'s dummy-head regulariser) re-evaluate the losses through a loss closure that
    does not see the weights, and ``dgr`` (itself a wrapper) takes only such plain bases. The facts the engine and the
    trainers read (positive losses, post-step losses, representation level) are the base's:
    ``mtrl.engine.core_balancer`` looks through this wrapper.

    Stateless apart from the base's state (the weights are set anew every update from the agent's own
    temperatures, which its checkpoint holds).

    Args:
        num_tasks: ``T``.
        base: registry key of the balancer applied to the weighted losses (or a built ``Balancer``).
        base_hparams: hyper-parameters of ``base`` (only with a key).
    """

    name = "alpha_weights"

    def __init__(self, num_tasks: int, base: str | Balancer = "ew", base_hparams: dict[str, Any] | None = None) -> None:
        super().__init__(num_tasks)
        if isinstance(base, Balancer):
            if base_hparams:
                raise ValueError("alpha_weights: base_hparams apply only when base is a registry key")
            if base.num_tasks != num_tasks:
                raise ValueError(f"alpha_weights: base balancer has num_tasks={base.num_tasks}, expected {num_tasks}")
            built = base
        elif isinstance(base, str):
            if base in _REFUSED_BASES:
                raise ValueError(
                    f"alpha_weights: base cannot be {base!r}: it re-evaluates the losses through a closure that "
                    f"does not see the weights (or wraps another balancer); pick any other registry key, e.g. 'ew'"
                )
            built = build_balancer(PLAIN_BALANCERS, base, num_tasks, **(base_hparams or {}))
        else:
            raise TypeError(
                f"alpha_weights: base must be a registry key (str) or a Balancer, got {type(base).__name__}"
            )
        if built.name in _REFUSED_BASES:
            raise ValueError(f"alpha_weights: base cannot be {built.name!r}")
        self.base = built
        #: ``w (T,)`` float64 of the current update (ones until :meth:`set_log_alpha`).
        self.weights_T = torch.ones(num_tasks, dtype=torch.float64)

    @property
    def needs_task_gradients(self) -> bool:
        return self.base.needs_task_gradients

    @property
    def loss_scale_problem(self) -> str | None:
        """The base's: the weights do not depend on the losses, so ``d(S·L) = S·d(L)`` iff the base's is."""
        return self.base.loss_scale_problem

    # --- the temperatures --------------------------------------------------------------------
    def set_log_alpha(self, log_alpha_T: Tensor) -> None:
        """Take this update's temperatures ``log α (T,)``: ``weights_T = T · softmax(−log α)``."""
        if not isinstance(log_alpha_T, Tensor) or log_alpha_T.shape != (self.num_tasks,):
            shape = tuple(log_alpha_T.shape) if isinstance(log_alpha_T, Tensor) else type(log_alpha_T).__name__
            raise ValueError(f"alpha_weights: log_alpha must have shape (T,) = ({self.num_tasks},), got {shape}")
        if not bool(torch.isfinite(log_alpha_T).all()):
            raise ValueError(f"alpha_weights: log_alpha must be finite, got {log_alpha_T.tolist()}")
        self.weights_T = alpha_task_weights(log_alpha_T)

    def weigh(self, losses: Tensor) -> Tensor:
        """``w ⊙ L (T,)`` in the dtype and on the device of ``losses`` (differentiable in ``L``)."""
        return self.weights_T.to(device=losses.device, dtype=losses.dtype) * losses

    # --- the base balancer does the rest ----------------------------------------------------
    def check(self, losses: Tensor) -> None:
        self.base.check(losses)

    def scalarize(self, losses: Tensor) -> Tensor:
        """``base.scalarize(w ⊙ L)`` (the engine weighs first and calls the base itself)."""
        return self.base.scalarize(self.weigh(losses))

    def parameters(self) -> list[Tensor]:
        return self.base.parameters()

    def after_backward(self) -> None:
        self.base.after_backward()

    def post_step(self, losses: Tensor) -> None:
        """The base's post-step losses, weighted with this update's weights (as its pre-step ones were)."""
        self.base.post_step(self.weigh(losses))

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"base"}:
            raise ValueError(f"alpha_weights: state must have exactly the key 'base', got {sorted(state)}")
        self.base.load_state_dict(state["base"])

    def reset(self) -> None:
        self.base.reset()
        self.weights_T = torch.ones(self.num_tasks, dtype=torch.float64)

    def extra_repr(self) -> str:
        return f"base={self.base!r}"
