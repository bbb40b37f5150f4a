"""task_partitioned on trunks with LayerNorm (and skips): the capture hooks the LayerNorms too, J equals reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtrl.balancers import make_balancer
from mtrl.engine import GradientEngine, LinearCapture
from mtrl.engine.strategies import partitioned_blocks, reference_blocks
from mtrl.nn import MultiTaskMLP
from tests.engine.helpers import assert_close_lists, grads_of

T, N, IN = 3, 4, 6


def _problem(skip: bool) -> tuple[MultiTaskMLP, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = MultiTaskMLP(T, IN, (8, 8, 8), 2, layer_norm=True, skip=skip).double()
    with torch.no_grad():  # LayerNorm scales away from 1 so that their gradients are not special
        for ln in net.trunk.modules():
            if isinstance(ln, nn.LayerNorm):
                ln.weight.uniform_(0.5, 1.5)
                ln.bias.uniform_(-0.5, 0.5)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, N, IN, generator=g, dtype=torch.float64)
    y = torch.randn(T, N, 2, generator=g, dtype=torch.float64) * torch.arange(1, T + 1)[:, None, None]
    return net, x, y


@pytest.mark.parametrize("skip", [False, True])
def test_partitioned_jacobian_of_layer_norm_trunk_equals_reference(skip: bool) -> None:
    net, x, y = _problem(skip)
    capture = LinearCapture(net, T)
    assert sum(isinstance(m, nn.LayerNorm) for m in capture.layers) == 3
    with capture.record():
        losses = ((net(x) - y) ** 2).mean(dim=(1, 2))
    shared = net.shared_parameters()
    expected = reference_blocks(losses, shared)
    blocks, _ = partitioned_blocks(capture, losses, shared, [])
    assert_close_lists(blocks, expected, rtol=1e-10)


@pytest.mark.parametrize("key", ["upgrad", "pcgrad", "imtl_g"])
def test_balancers_through_the_engine_agree_across_strategies(key: str) -> None:
    results = []
    for strategy in ("reference", "task_partitioned"):
        net, x, y = _problem(skip=True)
        capture = LinearCapture(net, T)
        with capture.record():
            losses = ((net(x) - y) ** 2).mean(dim=(1, 2))
        report = GradientEngine(make_balancer(key, T), strategy).backward(
            losses, net.shared_parameters(), net.task_parameters(), capture=capture
        )
        assert report.strategy == strategy
        results.append(grads_of(list(net.parameters())))
    assert_close_lists(results[1], results[0], rtol=1e-10)


def test_layer_norm_without_affine_parameters_is_not_hooked() -> None:
    module = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4, elementwise_affine=False), nn.LayerNorm((2, 2)))
    capture = LinearCapture(module, 2)
    assert capture.layers == [module[0]]  # no parameters, or normalised over more than the last dimension
