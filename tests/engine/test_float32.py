"""A float32 model with a rank-deficient Jacobian: the engine's direction is the float64 one.

Float32 rounding leaves eigenvalues of ~1e-9…1e-7 ``λ_max`` where ``G`` is singular; with a float64
rank cut-off they count as rank and Aligned-MTL's ``σ = √λ_min`` and IMTL-G's pseudo-inverse were
driven by the noise (measured before the fix, T = 10 rank 5: Aligned-MTL ‖d‖ 0.01 instead of 56,
IMTL-G cosine 0.6). The engine passes ``T · eps(float32)`` as the cut-off, as ``aggregate`` of a float32
``J`` does.
"""

from __future__ import annotations

import copy

import pytest
import torch

from mtrl.balancers import make_balancer
from mtrl.engine import GradientEngine, LinearCapture
from mtrl.nn import MultiTaskMLP

T, RANK, N = 10, 5, 16
KEYS = ("aligned_mtl", "imtl_g", "mgda", "nash_mtl", "upgrad", "cagrad")


def _problem() -> tuple[MultiTaskMLP, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tasks ``t`` and ``t + 5`` share rows, targets and head; task ``t + 5``'s loss is ``c_t`` times task
    ``t``'s (``c_t`` not a power of two, so the rounding differs): ``J`` has rank 5."""
    torch.manual_seed(0)
    net = MultiTaskMLP(T, 20, (64, 64), 2)
    with torch.no_grad():
        net.heads.weight[RANK:] = net.heads.weight[:RANK]
        net.heads.bias[RANK:] = net.heads.bias[:RANK]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(RANK, N, 20, generator=g).repeat(2, 1, 1)
    y = (torch.randn(RANK, N, 2, generator=g) * torch.arange(1, RANK + 1)[:, None, None]).repeat(2, 1, 1)
    scale = torch.cat([torch.ones(RANK), torch.tensor([0.3, 1.7, 3.1, 0.55, 7.3])])
    return net, x, y, scale


def _losses(net: MultiTaskMLP, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return scale.to(x.dtype) * ((net(x) - y) ** 2).mean(dim=(1, 2))


def _float64_direction(key: str) -> torch.Tensor:
    net, x, y, scale = _problem()
    net64 = copy.deepcopy(net).double()
    losses = _losses(net64, x.double(), y.double(), scale.double())
    shared = net64.shared_parameters()
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], shared, retain_graph=True)]) for t in range(T)
    ]
    jac = torch.stack(rows)
    sv = torch.linalg.svdvals(jac)
    assert float(sv[RANK] / sv[0]) < 1e-13  # the float64 Jacobian really has rank 5
    return make_balancer(key, T).aggregate(jac, losses.detach())  # type: ignore[attr-defined]


@pytest.mark.parametrize("strategy", ["task_partitioned", "reference", "batched"])
@pytest.mark.parametrize("key", KEYS)
def test_float32_rank_deficient_engine_matches_float64(key: str, strategy: str) -> None:
    d64 = _float64_direction(key)
    net, x, y, scale = _problem()
    capture = LinearCapture(net.trunk, T)
    with capture.record():
        losses = _losses(net, x, y, scale)
    GradientEngine(make_balancer(key, T), strategy).backward(
        losses, net.shared_parameters(), net.task_parameters(), capture=capture
    )
    d32 = torch.cat([p.grad.reshape(-1) for p in net.shared_parameters()]).double()  # type: ignore[union-attr]
    cos = float(d32 @ d64 / (d32.norm() * d64.norm()))
    ratio = float(d32.norm() / d64.norm())
    assert cos > 1 - 1e-5, (key, cos)
    assert ratio == pytest.approx(1.0, abs=1e-3), (key, ratio)


@pytest.mark.parametrize("key", KEYS)
def test_float32_aggregate_agrees_with_engine(key: str) -> None:
    """``aggregate(J32)`` (float64 maths on a float32 Jacobian) and the engine take the same rank."""
    net, x, y, scale = _problem()
    losses = _losses(net, x, y, scale)
    shared = net.shared_parameters()
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], shared, retain_graph=True)]) for t in range(T)
    ]
    d_agg = make_balancer(key, T).aggregate(torch.stack(rows), losses.detach()).double()  # type: ignore[attr-defined]
    GradientEngine(make_balancer(key, T), "reference").backward(losses, shared, net.task_parameters())
    d_eng = torch.cat([p.grad.reshape(-1) for p in shared]).double()  # type: ignore[union-attr]
    torch.testing.assert_close(d_eng, d_agg, rtol=1e-4, atol=1e-4 * float(d_agg.abs().max()))
