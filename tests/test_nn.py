"""Batched per-task heads equal a loop of per-task linear layers, and parameters partition cleanly."""

from __future__ import annotations

import pytest
import torch

from mtrl.nn import BatchedLinear, MultiTaskMLP


def test_batched_linear_equals_per_task_loop() -> None:
    torch.manual_seed(0)
    layer = BatchedLinear(num_tasks=3, in_features=5, out_features=2)
    x_TNI = torch.randn(3, 4, 5)
    expected = torch.stack([x_TNI[t] @ layer.weight[t] + layer.bias[t] for t in range(3)])
    torch.testing.assert_close(layer(x_TNI), expected)


def test_heads_receive_only_their_task_gradient() -> None:
    torch.manual_seed(0)
    net = MultiTaskMLP(num_tasks=3, in_features=4, hidden=(8,), out_features=1)
    out_TN1 = net(torch.randn(3, 2, 4))
    out_TN1[1].sum().backward()  # loss of task 1 only
    grad = net.heads.weight.grad
    assert grad is not None
    assert torch.count_nonzero(grad[0]) == 0 and torch.count_nonzero(grad[2]) == 0
    assert torch.count_nonzero(grad[1]) > 0


def test_parameters_partition_and_shape_errors() -> None:
    net = MultiTaskMLP(num_tasks=2, in_features=4, hidden=(8, 8), out_features=3)
    ids = {id(p) for p in net.shared_parameters()} | {id(p) for p in net.task_parameters()}
    assert ids == {id(p) for p in net.parameters()}
    assert not {id(p) for p in net.shared_parameters()} & {id(p) for p in net.task_parameters()}
    with pytest.raises(ValueError, match=r"grouped by task"):
        net(torch.randn(3, 2, 4))
    with pytest.raises(ValueError, match="at least one hidden layer"):
        MultiTaskMLP(2, 4, (), 1)
