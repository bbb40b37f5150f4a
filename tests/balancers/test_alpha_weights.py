"""alpha_weights: w = T·softmax(−log α), the base balancer on w ⊙ L, through the engine."""

from __future__ import annotations

import math

import pytest
import torch

from mtrl.balancers import make_balancer
from mtrl.balancers.alpha_weights import AlphaWeights, alpha_task_weights
from mtrl.engine import GradientEngine, LinearCapture, core_balancer
from tests.engine.helpers import assert_close_lists, grads_of, make_problem

T = 3
LOG_ALPHA = torch.tensor([0.3, -1.2, 0.8])


def test_weights_are_t_times_softmax_of_minus_log_alpha() -> None:
    w = alpha_task_weights(LOG_ALPHA)
    by_hand = [T * math.exp(-a) / sum(math.exp(-b) for b in LOG_ALPHA.tolist()) for a in LOG_ALPHA.tolist()]
    torch.testing.assert_close(w, torch.tensor(by_hand, dtype=torch.float64), rtol=1e-12, atol=0)
    assert math.isclose(float(w.sum()), T, rel_tol=1e-12) and bool((w > 0).all())
    assert int(w.argmax()) == int(LOG_ALPHA.argmin())  # the smallest temperature weighs most
    torch.testing.assert_close(alpha_task_weights(torch.full((5,), -2.0)), torch.ones(5, dtype=torch.float64))
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(alpha_task_weights(LOG_ALPHA[perm]), w[perm])


def test_set_log_alpha_checks_its_input_and_defaults_to_ones() -> None:
    balancer = make_balancer("alpha_weights", T)
    assert isinstance(balancer, AlphaWeights)
    assert torch.equal(balancer.weights_T, torch.ones(T, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape \(T,\) = \(3,\)"):
        balancer.set_log_alpha(torch.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        balancer.set_log_alpha(torch.tensor([0.0, math.inf, 0.0]))
    balancer.set_log_alpha(LOG_ALPHA)
    torch.testing.assert_close(balancer.weights_T, alpha_task_weights(LOG_ALPHA))


@pytest.mark.parametrize("base", ["sgsu", "dgr", "alpha_weights"])
def test_refused_bases(base: str) -> None:
    with pytest.raises(ValueError, match=f"base cannot be '{base}'"):
        make_balancer("alpha_weights", T, base=base)


def _weighted_run(base: str, strategy: str = "auto", **base_hparams: object) -> tuple[list[torch.Tensor], str]:
    prob = make_problem(T=T, n=4)
    balancer = make_balancer("alpha_weights", T, base=base, base_hparams=base_hparams)
    assert isinstance(balancer, AlphaWeights)
    balancer.set_log_alpha(LOG_ALPHA)
    capture = LinearCapture(prob.net.trunk, T)
    report = GradientEngine(balancer, strategy).backward(
        prob.forward(capture), prob.shared(), prob.task(), capture=capture
    )
    return grads_of(prob.shared() + prob.task()), report.strategy


def test_with_ew_every_parameter_gets_the_gradient_of_the_weighted_sum() -> None:
    got, _ = _weighted_run("ew")
    prob = make_problem(T=T, n=4)
    w = alpha_task_weights(LOG_ALPHA).to(torch.float64)
    (w * prob.forward()).sum().backward()
    assert_close_lists(got, grads_of(prob.shared() + prob.task()), rtol=1e-12)


@pytest.mark.parametrize(("base", "hparams"), [("upgrad", {}), ("pcgrad", {"seed": 4}), ("uw", {})])
def test_any_base_sees_the_weighted_losses(base: str, hparams: dict[str, object]) -> None:
    """alpha_weights(base) on L gives what base gives on w ⊙ L (its objective terms, weights and state alike)."""
    for strategy in ("reference", "task_partitioned"):
        got, ran = _weighted_run(base, strategy, **hparams)
        prob = make_problem(T=T, n=4)
        capture = LinearCapture(prob.net.trunk, T)
        with capture.record():
            weighted = alpha_task_weights(LOG_ALPHA) * prob.losses(prob.net(prob.x))
        GradientEngine(make_balancer(base, T, **hparams), strategy).backward(
            weighted, prob.shared(), prob.task(), capture=capture
        )
        assert_close_lists(got, grads_of(prob.shared() + prob.task()), rtol=1e-10)
        if base != "uw":  # uw is a loss weighting: one plain backward whatever the strategy
            assert ran == strategy


def test_facts_and_state_are_the_bases() -> None:
    balancer = make_balancer("alpha_weights", T, base="famo")
    assert isinstance(balancer, AlphaWeights)
    assert core_balancer(balancer) is balancer.base and balancer.base.name == "famo"
    assert GradientEngine(balancer).needs_post_step_losses
    assert balancer.loss_scale_problem == balancer.base.loss_scale_problem
    assert set(balancer.state_dict()) == {"base"}
    with pytest.raises(ValueError, match="exactly the key 'base'"):
        balancer.load_state_dict({})
    # a positive-loss base refuses non-positive losses as it does alone
    with pytest.raises(ValueError, match="strictly positive"):
        make_balancer("alpha_weights", T, base="uw").check(torch.tensor([1.0, -1.0, 2.0]))
