"""make_loss_fn: substitutes the given values for the chosen parameters, differentiably."""

from __future__ import annotations

import pytest
import torch

from mtrl.balancers.dgr import DGR
from mtrl.engine import GradientEngine, make_loss_fn
from tests.engine.helpers import GramTestWeighting, make_problem


def test_loss_fn_none_reproduces_losses_and_substitutes() -> None:
    prob = make_problem(T=3)
    loss_fn = prob.loss_fn()
    torch.testing.assert_close(loss_fn(None, None), prob.forward(), rtol=0, atol=0)
    zeros_heads = [torch.zeros_like(p) for p in prob.task()]
    # zero heads predict 0: the losses are the mean squared targets
    torch.testing.assert_close(loss_fn(None, zeros_heads), (prob.y**2).mean(dim=(1, 2)), rtol=1e-12, atol=0)
    shifted = [p.detach() + 0.1 for p in prob.shared()]
    assert not torch.allclose(loss_fn(shifted, None), prob.forward())
    # the substituted values carry gradients
    values = [p.detach().clone().requires_grad_(True) for p in prob.shared()]
    grads = torch.autograd.grad(loss_fn(values, None).sum(), values)
    expected = torch.autograd.grad(prob.forward().sum(), prob.shared())
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=0)


def test_loss_fn_errors() -> None:
    prob = make_problem(T=3)
    stranger = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="not parameters of MultiTaskMLP"):
        make_loss_fn(prob.net, [stranger], prob.task(), lambda fwd: fwd(prob.x))
    loss_fn = prob.loss_fn()
    with pytest.raises(ValueError, match="values for"):
        loss_fn(prob.shared()[:1], None)
    with pytest.raises(ValueError, match="has shape"):
        loss_fn(None, [torch.zeros(1), torch.zeros(1)])


def test_dgr_report_extra_in_scalars() -> None:
    prob = make_problem(T=3)
    report = GradientEngine(DGR(3, base=GramTestWeighting(3))).backward(
        prob.forward(), prob.shared(), prob.task(), loss_fn=prob.loss_fn(), heads=prob.heads()
    )
    scalars = report.scalars("balancer/critic", ["a", "b", "c"])
    assert scalars["balancer/critic/dgr_reg"] == pytest.approx(report.extra["dgr_reg"]) and report.extra["dgr_reg"] > 0
    assert "balancer/critic/weight/a" in scalars and "balancer/critic/cond" in scalars
