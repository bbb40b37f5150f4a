"""VanillaMLP: LayerNorm and skip connections where Meta-World+'s vanilla MLP puts them; plain trunks unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtrl.nn import LAYER_NORM_EPS, MultiTaskMLP, VanillaMLP, mlp, trunk


def _by_hand(net: VanillaMLP, x: torch.Tensor, layer_norm: bool, skip: bool) -> torch.Tensor:
    """The reference's loop (metaworld_algorithms/nn/base.py MLP.__call__) written out with functional ops."""
    linears = list(net.linears)
    norms = list(net.norms) if net.norms is not None else []
    for i, linear in enumerate(linears):
        if layer_norm and i != 0:
            ln = norms[i - 1]
            x = F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, LAYER_NORM_EPS)
        out = torch.relu(x @ linear.weight.T + linear.bias)
        x = x + out if skip and x.shape[-1] == linear.out_features else out
    if layer_norm:
        ln = norms[-1]
        x = F.layer_norm(x, (x.shape[-1],), ln.weight, ln.bias, LAYER_NORM_EPS)
    return x


@pytest.mark.parametrize(("layer_norm", "skip"), [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("in_features", [5, 8])
def test_forward_is_the_reference_loop(layer_norm: bool, skip: bool, in_features: int) -> None:
    torch.manual_seed(0)
    net = VanillaMLP(in_features, (8, 8, 4), layer_norm=layer_norm, skip=skip).double()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters, so their placement matters
        for ln in net.norms or []:
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 2, in_features, dtype=torch.float64)
    out = net(x)
    assert out.shape == (3, 2, 4)
    torch.testing.assert_close(out, _by_hand(net, x, layer_norm, skip), rtol=1e-12, atol=1e-12)


def test_where_layer_norm_and_skips_sit() -> None:
    net = VanillaMLP(5, (8, 8, 4), layer_norm=True, skip=True)
    # LayerNorm before layers 1 and 2 (widths 8, 8) and before the output (width 4); none on the input
    assert net.norms is not None
    assert [ln.normalized_shape for ln in net.norms] == [(8,), (8,), (4,)]
    assert all(ln.eps == LAYER_NORM_EPS == 1e-6 for ln in net.norms)
    # a skip only where the layer's input width equals its output width
    assert net.skips == (False, True, False)
    assert VanillaMLP(8, (8, 8, 4), skip=True).skips == (True, True, False)
    assert VanillaMLP(8, (8, 8), layer_norm=True).skips == (False, False)
    assert VanillaMLP(8, (8,), skip=True).norms is None


def test_layer_norm_normalises_each_hidden_input_row() -> None:
    """The input of every layer after the first has zero mean and unit variance per row (scale 1, bias 0 at init)."""
    torch.manual_seed(0)
    net = VanillaMLP(5, (16, 16, 16), layer_norm=True)
    seen: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda m, a, o: seen.append(a[0])) for layer in net.linears]
    out = net(torch.randn(4, 5) * 7 + 3)
    for h in handles:
        h.remove()
    assert not torch.allclose(seen[0].mean(-1), torch.zeros(4), atol=1e-3)  # the input is not normalised
    for x in [*seen[1:], out]:
        torch.testing.assert_close(x.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(x.var(-1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_plain_trunk_is_unchanged() -> None:
    """Without either option the trunk is the old Linear-ReLU Sequential: same modules, names and init draws."""
    torch.manual_seed(3)
    old = mlp(6, (8, 8))
    torch.manual_seed(3)
    new = trunk(6, (8, 8))
    assert isinstance(new, nn.Sequential)
    assert [k for k, _ in new.state_dict().items()] == [k for k, _ in old.state_dict().items()]
    for a, b in zip(new.state_dict().values(), old.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert isinstance(trunk(6, (8,), layer_norm=True), VanillaMLP)


def test_multitask_mlp_with_layer_norm_partitions_parameters() -> None:
    net = MultiTaskMLP(3, 5, (8, 8), 2, layer_norm=True, skip=True)
    shared = {id(p) for p in net.shared_parameters()}
    assert {id(p) for ln in net.trunk.modules() if isinstance(ln, nn.LayerNorm) for p in ln.parameters()} <= shared
    assert shared.isdisjoint({id(p) for p in net.task_parameters()})
    assert shared | {id(p) for p in net.task_parameters()} == {id(p) for p in net.parameters()}
    assert net(torch.randn(3, 2, 5)).shape == (3, 2, 2)
    assert net.features(torch.randn(3, 2, 5)).shape == (3, 2, 8)


def test_needs_a_hidden_layer() -> None:
    with pytest.raises(ValueError, match="at least one hidden layer"):
        VanillaMLP(4, (), layer_norm=True)
