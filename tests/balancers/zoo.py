"""A seeded zoo of Jacobians ``(T, P)`` with chosen rank, zero rows and extreme scales.

Every balancer is run over the whole zoo (shape, finiteness, determinism); method property tests
pick the members they need. Each entry: ``(name, jac (T, P) float64, losses (T,) positive)``.
:func:`property_zoo` is the input set of the torchjd-style property tests
(``tests/balancers/test_properties.py``): the zoo at ``T`` ∈ {2, 3, 10} plus rows scaled over
1e-3 … 1e3 and repeated directions (rank-deficient with an equal-projection direction);
:func:`permutation` gives the task permutation they apply.
"""

from __future__ import annotations

import torch
from torch import Tensor

TASK_COUNTS = (1, 2, 3, 10, 50)


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def low_rank(T: int, P: int, rank: int, seed: int) -> Tensor:
    g = _rng(seed)
    left = torch.randn(T, rank, generator=g, dtype=torch.float64)
    return left @ torch.randn(rank, P, generator=g, dtype=torch.float64)


def full_rank(T: int, P: int, seed: int) -> Tensor:
    return torch.randn(T, P, generator=_rng(seed), dtype=torch.float64)


def scaled_rows(T: int, P: int, seed: int, lo: float = -8.0, hi: float = 8.0) -> Tensor:
    """Rows with norms spread log-uniformly over 10^lo … 10^hi."""
    jac = full_rank(T, P, seed)
    exps = torch.linspace(lo, hi, T, dtype=torch.float64) if T > 1 else torch.zeros(1, dtype=torch.float64)
    return jac * (10.0**exps)[:, None]


def zoo(task_counts: tuple[int, ...] = TASK_COUNTS, P: int = 64) -> list[tuple[str, Tensor, Tensor]]:
    out: list[tuple[str, Tensor, Tensor]] = []
    for T in task_counts:
        losses = torch.linspace(0.5, 2.0, T, dtype=torch.float64)
        out.append((f"full_T{T}", full_rank(T, P, seed=T), losses))
        if T > 1:
            out.append((f"rank1_T{T}", low_rank(T, P, 1, seed=100 + T), losses))
            if T // 2 > 1:
                out.append((f"rank{T // 2}_T{T}", low_rank(T, P, T // 2, seed=200 + T), losses))
            zero_row = full_rank(T, P, seed=300 + T)
            zero_row[T // 2] = 0.0
            out.append((f"zero_row_T{T}", zero_row, losses))
            out.append((f"scaled_T{T}", scaled_rows(T, P, seed=400 + T), losses))
            opposite = full_rank(T, P, seed=500 + T)
            opposite[1] = -opposite[0]
            out.append((f"opposite_T{T}", opposite, losses))
        out.append((f"all_zero_T{T}", torch.zeros(T, P, dtype=torch.float64), losses))
        out.append((f"tiny_T{T}", full_rank(T, P, seed=600 + T) * 1e-10, losses))
        out.append((f"huge_T{T}", full_rank(T, P, seed=700 + T) * 1e10, losses))
    return out


def repeated_directions(T: int, P: int, rank: int, seed: int) -> Tensor:
    """Rank ``rank`` with every row a positive multiple of one of ``rank`` generic rows (``1 ∈ range(C)``)."""
    base = full_rank(rank, P, seed)
    scales = 10.0 ** (torch.rand(T, generator=_rng(seed + 1), dtype=torch.float64) * 4 - 2)
    return base[torch.arange(T) % rank] * scales[:, None]


PROPERTY_TASK_COUNTS = (2, 3, 10)


def property_zoo(P: int = 64) -> list[tuple[str, Tensor, Tensor]]:
    """The property tests' inputs: :func:`zoo` at ``T`` ∈ {2, 3, 10}, rows scaled over 1e-3 … 1e3
    (``moderate_T*``) and repeated directions (``repeated_T*``)."""
    out = zoo(PROPERTY_TASK_COUNTS, P)
    for T in PROPERTY_TASK_COUNTS:
        losses = torch.linspace(0.5, 2.0, T, dtype=torch.float64)
        out.append((f"moderate_T{T}", scaled_rows(T, P, seed=800 + T, lo=-3.0, hi=3.0), losses))
        if T > 2:
            out.append((f"repeated_T{T}", repeated_directions(T, P, T // 2 + (T == 3), seed=900 + T), losses))
    return out


def permutation(T: int, seed: int = 0) -> Tensor:
    """A seeded permutation of ``range(T)`` that moves every task when ``T > 1`` (a random derangement)."""
    g = _rng(seed)
    while True:
        perm = torch.randperm(T, generator=g)
        if T == 1 or bool((perm != torch.arange(T)).all()):
            return perm


# A fixed 2x3 Jacobian for the pinned-values table.
PINNED_JAC = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 3.0, 0.5]], dtype=torch.float64)
PINNED_LOSSES = torch.tensor([0.8, 1.5], dtype=torch.float64)
