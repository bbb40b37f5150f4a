"""RLW: random loss weighting with fresh softmax-normal weights every step."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.balancers.base import LossWeighting

__all__ = ["RLW"]


class RLW(LossWeighting):
    """Weight the losses by random weights on the simplex, drawn afresh every call: ``S_t = w_t L_t``.

    Update rule: ``ε ~ N(0, I_T)``, ``w = softmax(ε)`` (so ``w_t > 0``, ``Σ_t w_t = 1``), every
    parameter receives ``∇ Σ_t w_t L_t`` with ``w`` constant.

    Paper: Lin, Ye, Zhang & Tsang, "Reasonable Effectiveness of Random Weighting: A Litmus
    Test for Multi-Task Learning", TMLR 2022, arXiv 2111.10603, the RLW update with ``λ̃ ~ N(0, I)``,
    ``λ = softmax(λ̃)`` (the variant LibMTL ships; equation number not verified here).

    Note: weights sum to 1 as in the paper and LibMTL (``F.softmax(torch.randn(T))``), so with equal
    losses the objective is the *mean* of the losses, ``1/T`` of ``ew`` (which sums): compensate with
    the learning rate when comparing against ``ew``. ``ε`` is drawn in float64 on the CPU from a
    private ``torch.Generator`` seeded with ``seed`` (so a run is reproducible on any device), then
    moved to the losses' device and dtype. Any loss sign is accepted.

    Stateful only through the generator state, saved in :meth:`state_dict`. Shapes: ``losses (T,)``
    → ``S (T,)``; ``last_weights (T,)`` the weights of the last call.
    """

    name = "rlw"
    stateful = True
    #: Loss scaling ``L → S·L`` (rows ``S g_t``): weights independent of ``L``, ``d → S d``.
    loss_scale_problem: ClassVar[str | None] = None

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__(num_tasks)
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.last_weights: Tensor | None = None

    def sample_weights(self) -> Tensor:
        """Draw ``w = softmax(ε) (T,)`` (float64, CPU) and advance the generator."""
        eps = torch.randn(self.num_tasks, generator=self.generator, dtype=torch.float64)
        return torch.softmax(eps, dim=0)

    def scalarize(self, losses: Tensor) -> Tensor:
        """``S_t = w_t L_t`` for ``losses (T,)`` → ``S (T,)`` with fresh random ``w``."""
        self.check(losses)
        w = self.sample_weights().to(device=losses.device, dtype=losses.dtype)
        self.last_weights = w
        return w * losses

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"generator"}:
            raise ValueError(f"RLW state must have exactly the key 'generator', got {sorted(state)}")
        self.generator.set_state(state["generator"])

    def reset(self) -> None:
        self.generator.manual_seed(self.seed)
        self.last_weights = None

    def extra_repr(self) -> str:
        return f"seed={self.seed}"
