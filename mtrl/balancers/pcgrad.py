"""PCGrad: project conflicting task gradients onto each other's normal planes, in random order."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from mtrl.balancers._linalg import to_numpy64
from mtrl.balancers.base import GramianWeighting

__all__ = ["PCGrad"]


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

    Stateful only through its random generator (saved in :meth:`state_dict`).
    """

    name: ClassVar[str] = "pcgrad"
    stateful: ClassVar[bool] = True
    #: Loss scaling ``L → S·L`` (``G → S² G``): the coefficients ``(g_i·g_j)/‖g_j‖²`` and their signs
    #: are invariant, so ``d → S d``.
    loss_scale_problem: ClassVar[str | None] = None

    def __init__(self, num_tasks: int, seed: int = 0) -> None:
        super().__init__(num_tasks)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        """Weights ``w (T,)`` float64: the sum over tasks of the projected-row coefficients."""
        g = to_numpy64(gram)
        num_tasks = self.num_tasks
        # one fresh permutation per task, drawn in task order from the generator: (T, T), row i = task i's
        perms = torch.stack([torch.randperm(num_tasks, generator=self.generator) for _ in range(num_tasks)]).numpy()
        coef = np.eye(num_tasks)  # row i: g_i^PC = coef[i]ᵀJ; all tasks advance through their orders together
        rows = np.arange(num_tasks)
        diag = np.diag(g)
        for step in range(num_tasks):
            j = perms[:, step]  # (T,) the task each row projects against at this step
            inner = np.einsum("ij,ij->i", g[j], coef)  # g_i^PC · g_j
            hit = (j != rows) & (inner < 0.0) & (diag[j] > 0.0)
            coef[rows[hit], j[hit]] -= inner[hit] / diag[j[hit]]
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
        return f"seed={self.seed}"
