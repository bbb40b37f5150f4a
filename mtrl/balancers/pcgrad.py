"""PCGrad: project conflicting task gradients onto each other's normal planes, in random order."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers._linalg import to_numpy64
from mtrl.balancers.base import GramianWeighting

__all__ = ["PCGRAD_VARIANTS", "PCGrad", "pcgrad_coefficients"]

#: ``variant`` values: "yu" (Yu et al.'s Algorithm 1, torchjd's reading) and "metaworld_plus" (Meta-World+'s code).
PCGRAD_VARIANTS: tuple[str, ...] = ("yu", "metaworld_plus")


def pcgrad_coefficients(gram: np.ndarray, orders: np.ndarray, include_self: bool, eps: float) -> np.ndarray:
    """``C (T, T)`` with ``g_i^PC = C[i]ᵀ J``: PCGrad's projections computed from ``G = J Jᵀ`` alone.

    Row ``i`` starts at ``e_i`` and, for ``j = orders[i, 0], orders[i, 1], …``, where ``g_i^PC · g_j < 0``
    subtracts ``(g_i^PC · g_j / (‖g_j‖² + eps)) g_j``; ``j = i`` is skipped unless ``include_self`` (then a row
    can conflict with its own original gradient after earlier projections). All rows advance together.
    """
    num_tasks = gram.shape[0]
    coef = np.eye(num_tasks)
    rows = np.arange(num_tasks)
    diag = np.diag(gram)
    for step in range(orders.shape[1]):
        j = orders[:, step]  # (T,) the task each row projects against at this step
        inner = np.einsum("ij,ij->i", gram[j], coef)  # g_i^PC · g_j
        hit = (inner < 0.0) & (diag[j] + eps > 0.0)
        if not include_self:
            hit &= j != rows
        coef[rows[hit], j[hit]] -= inner[hit] / (diag[j[hit]] + eps)
    return coef


class PCGrad(GramianWeighting):
    """Gradient surgery: remove from each task gradient its components that conflict with the others.

    Update rule: for every task ``i``, start from ``g_i^PC = g_i`` and, for ``j ≠ i`` in a fresh random
    order, if ``g_i^PC · g_j < 0`` set ``g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j``; then
    ``d = Σ_i g_i^PC``. Every ``g_i^PC`` stays a combination ``c_iᵀJ`` of the rows, and
    ``g_i^PC · g_j = (G c_i)_j``, so ``w = Σ_i c_i`` is computed from ``G`` alone.

    Paper: Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, arXiv 2001.06782,
    Algorithm 1.

    Note: reference implementations also compare ``g_i^PC`` with its own original ``g_i`` (which can
    only fire after earlier projections) and differ on whether one permutation is shared by all
    tasks; like torchjd, ``j = i`` is skipped and a fresh permutation is drawn per task and step from
    this balancer's CPU ``torch.Generator`` (the ``(T, T)`` loop runs on the CPU to avoid a device
    synchronisation per comparison).

    ``variant="metaworld_plus"`` is the PCGrad of Meta-World+'s code (rainx0r/metaworld-algorithms,
    ``optim/pcgrad.py``) on the vectors this balancer receives: one permutation per step shared by all
    tasks, ``j = i`` included, ``‖g_j‖² + 1e-8`` in the projection, and the *mean* ``d = (1/T) Σ_i g_i^PC``
    (tests/rl/test_mwplus_equivalence.py checks it against the reference on the same Jacobian and
    permutation). One difference stays, in the SAC engine: the reference projects the whole network's
    gradient, heads included, while here only the shared parameters are balanced and each head receives
    its own task's gradient (docs/mwplus.md).

    Stateful only through its random generator (saved in :meth:`state_dict`).
    """

    name: ClassVar[str] = "pcgrad"
    stateful: ClassVar[bool] = True

    def __init__(self, num_tasks: int, seed: int = 0, variant: Literal["yu", "metaworld_plus"] = "yu") -> None:
        super().__init__(num_tasks)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if variant not in PCGRAD_VARIANTS:
            raise ValueError(f"unknown PCGrad variant {variant!r}; valid choices: {', '.join(PCGRAD_VARIANTS)}")
        self.seed, self.variant = seed, variant
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def loss_scale_problem(self) -> str | None:
        """Loss scaling ``L → S·L`` (``G → S² G``): the coefficients ``(g_i·g_j)/‖g_j‖²`` and their signs are
        invariant, so ``d → S d``; the "metaworld_plus" variant's ``+ 1e-8`` in ``‖g_j‖² + 1e-8`` is not."""
        if self.variant == "metaworld_plus":
            return "pcgrad variant 'metaworld_plus' adds 1e-8 to ‖g_j‖², which a loss scale does not scale"
        return None

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w (T,)`` float64: the sum over tasks of the projected-row coefficients."""
        g = to_numpy64(gram)
        num_tasks = self.num_tasks
        if self.variant == "metaworld_plus":  # one permutation, shared by every task
            perm = torch.randperm(num_tasks, generator=self.generator).numpy()
            coef = pcgrad_coefficients(g, np.tile(perm, (num_tasks, 1)), include_self=True, eps=1e-8)
            return torch.from_numpy(coef.mean(axis=0)).to(gram.device)
        # one fresh permutation per task, drawn in task order from the generator: (T, T), row i = task i's
        perms = torch.stack([torch.randperm(num_tasks, generator=self.generator) for _ in range(num_tasks)]).numpy()
        coef = pcgrad_coefficients(g, perms, include_self=False, eps=0.0)
        return torch.from_numpy(coef.sum(axis=0)).to(gram.device)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"generator"}:
            raise ValueError(f"PCGrad state must have exactly the key 'generator', got {sorted(state)}")
        self.generator.set_state(state["generator"])

    def reset(self) -> None:
        """Re-seed the generator with the constructor's ``seed``."""
        self.generator.manual_seed(self.seed)

    def extra_repr(self) -> str:
        return f"seed={self.seed}" + (f", variant={self.variant!r}" if self.variant != "yu" else "")
