"""Pinned values: every gradient-level balancer on two fixed 2×3 Jacobians.

The expected directions were produced by the implementations and are each re-derived here by an
independent route (closed form, brute force or a generic scipy solver), so a value can be neither
silently changed nor merely pasted. ``PINNED_JAC`` (zoo.py) has orthogonal rows; ``CONFLICT_JAC``
adds a conflicting pair (``g_1·g_2 = −4``) so that PCGrad and UPGrad actually act.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.optimize import fsolve, minimize_scalar
from torch import Tensor

from mtrl.balancers import make_balancer
from tests.balancers.zoo import PINNED_JAC, PINNED_LOSSES

CONFLICT_JAC = torch.tensor([[1.0, 0.0, 2.0], [-2.0, 1.0, -1.0]], dtype=torch.float64)
JACS = {"pinned": PINNED_JAC, "conflict": CONFLICT_JAC}

# d (P,) for balancer key (default hyper-parameters, seed 0, first call) on each Jacobian.
EXPECTED: dict[str, dict[str, list[float]]] = {
    "ew": {"pinned": [0.0, 3.0, 2.5], "conflict": [-1.0, 1.0, 1.0]},
    "mgda": {
        "pinned": [0.344262295082, 0.983606557377, 1.508196721311],
        "conflict": [-0.421052631579, 0.473684210526, 0.578947368421],
    },
    "pcgrad": {"pinned": [0.0, 3.0, 2.5], "conflict": [-1.533333333333, 1.666666666667, 1.933333333333]},
    "cagrad": {
        "pinned": [0.301107744768, 1.293103448276, 1.679801696434],
        "conflict": [-0.501193704281, 0.563842917316, 0.689141343386],
    },
    "nash_mtl": {
        "pinned": [0.095364713867, 0.662589156449, 0.742887058109],
        "conflict": [-0.502806872419, 0.555861098936, 0.661969551972],
    },
    "upgrad": {"pinned": [0.0, 1.5, 1.25], "conflict": [-0.766632447492, 0.833272233424, 0.966551805288]},
    "imtl_g": {
        "pinned": [0.177557892709, 1.233663160936, 1.383168419532],
        "conflict": [-0.431676725155, 0.477225575052, 0.568323274845],
    },
    "aligned_mtl": {
        "pinned": [0.150784852115, 1.047645443654, 1.174607573942],
        "conflict": [-0.442320743963, 0.479991809417, 0.555333940326],
    },
    "graddrop": {"pinned": [-1.0, 3.0, 2.5], "conflict": [-2.0, 1.0, 2.0]},
    "task_tensioner": {
        "pinned": [0.177557892709, 1.233663160936, 1.383168419532],
        "conflict": [-0.431676725155, 0.477225575052, 0.568323274845],
    },
}


# --- independent references (T = 2) -------------------------------------------------------------
def _mgda(jac: Tensor) -> Tensor:
    g1, g2 = jac
    w1 = float(((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2)))  # Sener & Koltun, Algorithm 1
    w1 = min(max(w1, 0.0), 1.0)
    return w1 * g1 + (1 - w1) * g2


def _pcgrad(jac: Tensor) -> Tensor:
    g1, g2 = jac
    inner = float(g1 @ g2)
    if inner >= 0:
        return g1 + g2
    return g1 - inner / float(g2 @ g2) * g2 + g2 - inner / float(g1 @ g1) * g1


def _cagrad(jac: Tensor, c: float = 0.4) -> Tensor:
    g0 = jac.mean(0)
    radius = c * float(g0.norm())

    def dual(w1: float) -> float:
        g_w = w1 * jac[0] + (1 - w1) * jac[1]
        return float(g_w @ g0) + radius * float(g_w.norm())

    w1 = minimize_scalar(dual, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-13}).x
    g_w = w1 * jac[0] + (1 - w1) * jac[1]
    return (g0 + radius / g_w.norm() * g_w) / (1 + c**2)


def _nash_mtl(jac: Tensor, max_norm: float = 1.0) -> Tensor:
    gram = (jac @ jac.T).numpy()
    g_hat = gram / np.linalg.norm(gram)
    alpha = fsolve(lambda a: a * (g_hat @ a) - 1.0, np.ones(2), xtol=1e-12)
    d = torch.from_numpy(alpha) @ jac
    return d * min(1.0, max_norm / float(d.norm()))


def _upgrad(jac: Tensor, reg_eps: float = 1e-4) -> Tensor:
    """Each QP ``min_{v ≥ u} vᵀAv`` by enumerating which bounds are active (2 variables: 4 cases)."""
    gram = jac @ jac.T
    a = gram / gram.trace() + reg_eps * torch.eye(2, dtype=torch.float64)
    total = torch.zeros(2, dtype=torch.float64)
    for i in range(2):
        u = torch.zeros(2, dtype=torch.float64)
        u[i] = 0.5
        best, best_value = None, math.inf
        for active in itertools.product((True, False), repeat=2):
            v = u.clone()
            free = [k for k in range(2) if not active[k]]
            fixed = [k for k in range(2) if active[k]]
            if free:  # minimise over the free coordinates with the others at their bound
                v[free] = torch.linalg.solve(a[free][:, free], -a[free][:, fixed] @ u[fixed])
            if bool((v >= u - 1e-15).all()) and float(v @ a @ v) < best_value:
                best, best_value = v, float(v @ a @ v)
        assert best is not None
        total += best
    return total @ jac


def _imtl_g(jac: Tensor) -> Tensor:
    unit = jac / jac.norm(dim=1, keepdim=True)
    diff, udiff = jac[0] - jac[1], unit[0] - unit[1]
    a2 = float(jac[0] @ udiff) / float(diff @ udiff)  # Liu et al., Eq. 2
    return (1 - a2) * jac[0] + a2 * jac[1]


def _aligned_mtl(jac: Tensor) -> Tensor:
    u, s, wt = torch.linalg.svd(jac, full_matrices=False)
    return (s.min() * u @ wt).T @ torch.full((2,), 0.5, dtype=torch.float64)  # Procrustes, w = 1/T


def _graddrop(jac: Tensor, seed: int = 0) -> Tensor:
    uniform = torch.rand(jac.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = torch.zeros(jac.shape[1], dtype=torch.float64)
    for p in range(jac.shape[1]):
        column = jac[:, p]
        purity = 0.5 * (1 + float(column.sum()) / float(column.abs().sum()))
        sign = 1.0 if float(uniform[p]) < purity else -1.0  # keep the components of one sign
        out[p] = column[column * sign > 0].sum()
    return out


def _edm(jac: Tensor) -> Tensor:
    unit = jac / jac.norm(dim=1, keepdim=True)
    u1, u2 = unit
    c1 = float(((u2 - u1) @ u2) / ((u1 - u2) @ (u1 - u2)))  # min-norm on the unit vectors
    c = torch.tensor([c1, 1 - c1], dtype=torch.float64)
    gamma = 1.0 / float((c / jac.norm(dim=1)).sum())
    return gamma * (c @ unit)


REFERENCES: dict[str, Callable[[Tensor], Tensor]] = {
    "ew": lambda jac: jac[0] + jac[1],
    "mgda": _mgda,
    "pcgrad": _pcgrad,
    "cagrad": _cagrad,
    "nash_mtl": _nash_mtl,
    "upgrad": _upgrad,
    "imtl_g": _imtl_g,
    "aligned_mtl": _aligned_mtl,
    "graddrop": _graddrop,
    "task_tensioner": _edm,  # first call (window not yet full): the EDM central direction d*
}


@pytest.mark.parametrize("key", sorted(EXPECTED))
@pytest.mark.parametrize("which", sorted(JACS))
def test_pinned_direction(key: str, which: str) -> None:
    jac = JACS[which]
    expected = torch.tensor(EXPECTED[key][which], dtype=torch.float64)
    d = make_balancer(key, 2).aggregate(jac, PINNED_LOSSES)  # type: ignore[attr-defined]
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(REFERENCES[key](jac), expected, rtol=0, atol=1e-6)
