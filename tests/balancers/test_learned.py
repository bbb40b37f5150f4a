"""The learned-weights convention (``mtrl/balancers/_learned.py``) shared by UW, IMTL-L, IMTL, FAMO and GradNorm."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mtrl.balancers import Balancer, make_balancer
from mtrl.balancers._learned import LearnedWeights

T = 3
#: registry key → the key of its learned tensor in the state dict
LEARNED = {"uw": "log_var", "imtl_l": "log_scale", "imtl": "log_scale", "famo": "logits", "gradnorm": "task_weights"}


def _step(balancer: Balancer, k: int) -> Tensor:
    """One engine-like step on seeded losses (and a seeded Gramian for GradNorm); returns its output."""
    gen = torch.Generator().manual_seed(k)
    losses = 0.2 + torch.rand(T, generator=gen, dtype=torch.float64)
    if balancer.name == "gradnorm":
        jac = torch.randn(T, 5, generator=gen, dtype=torch.float64)
        return balancer.aggregate(jac, losses)  # type: ignore[attr-defined]
    x = losses.clone().requires_grad_(True)
    terms = balancer.scalarize(x)
    params = balancer.parameters()
    if params:
        for p, g in zip(params, torch.autograd.grad(terms.sum(), params), strict=True):
            p.grad = g
    balancer.after_backward()
    if balancer.needs_post_step_losses:
        balancer.post_step(0.9 * losses)
    return terms.detach()


@pytest.mark.parametrize("key", sorted(LEARNED))
def test_state_before_first_use_is_empty_and_loads_as_fresh(key: str) -> None:
    balancer = make_balancer(key, T)
    assert balancer.state_dict() == {} and balancer.parameters() == []
    assert getattr(balancer, "last_weights", None) is None
    reference = [_step(balancer, k) for k in range(3)]
    assert sorted(balancer.state_dict()) != []
    balancer.load_state_dict({})  # back to the state before the first use
    assert balancer.state_dict() == {}
    for k, expected in enumerate(reference):
        assert torch.equal(_step(balancer, k), expected)


@pytest.mark.parametrize("key", ["imtl_l", "imtl"])
def test_imtl_l_state_saved_before_first_use_by_older_versions_loads(key: str) -> None:
    balancer = make_balancer(key, T)
    _step(balancer, 0)
    balancer.load_state_dict({"log_scale": None, "optimizer": None})
    assert balancer.state_dict() == {} and balancer.parameters() == []


@pytest.mark.parametrize("key", sorted(LEARNED))
def test_state_dict_is_a_snapshot(key: str) -> None:
    """Later steps do not change a state already taken (Adam's moments are copied, not shared)."""
    balancer = make_balancer(key, T)
    for k in range(3):
        _step(balancer, k)
    state = balancer.state_dict()
    assert LEARNED[key] in state and "optimizer" in state
    moments = {name: v.clone() for name, v in state["optimizer"]["state"][0].items()}
    value = state[LEARNED[key]].clone()
    expected = [_step(balancer, k) for k in range(3, 6)]
    assert torch.equal(state[LEARNED[key]], value)
    for name, v in moments.items():
        assert torch.equal(state["optimizer"]["state"][0][name], v), name
    restored = make_balancer(key, T)
    restored.load_state_dict(state)
    for k, out in zip(range(3, 6), expected, strict=True):
        assert torch.equal(_step(restored, k), out)


def test_learned_weights_follow_dtype_with_their_adam_moments() -> None:
    learned = LearnedWeights("test", "theta", T, lr=0.1)
    theta = learned.ensure(0.5, torch.float32, torch.device("cpu"))
    learned.step(torch.ones(T, dtype=torch.float32))
    moved = learned.ensure(0.5, torch.float64, torch.device("cpu"))
    assert moved.dtype == torch.float64 and moved.requires_grad
    torch.testing.assert_close(moved, theta.detach().to(torch.float64))
    assert learned.optimizer is not None
    assert learned.optimizer.state[moved]["exp_avg"].dtype == torch.float64
    learned.step()  # no gradient: no step
    torch.testing.assert_close(moved, theta.detach().to(torch.float64))
    with pytest.raises(ValueError, match=r"keys \['optimizer', 'theta'\]"):
        learned.load_state_dict({"theta": torch.zeros(T)})
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        learned.load_state_dict({"theta": torch.zeros(2), "optimizer": {}})
