"""Every registry balancer through the engine: all strategies agree with ``reference``.

A fresh instance per run keeps stateful and seeded methods comparable. The representation-only keys
(``mgda_ub``, ``aligned_mtl_ub``) are refused at parameter level and compared in their own tests.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from mtrl.balancers import BALANCERS, GradientBalancer, make_balancer
from mtrl.engine import GradientEngine, LinearCapture
from mtrl.nn import BatchedLinear
from tests.engine.helpers import assert_close_lists, grads_of, make_problem

T = 3


KEYS = list(BALANCERS)
PARAMETER_LEVEL_KEYS = [key for key in KEYS if not getattr(BALANCERS[key], "representation_required", False)]


def _run(key: str, strategy: str) -> tuple[list[torch.Tensor], list[torch.Tensor], str]:
    prob = make_problem(T=T, n=4)
    balancer = make_balancer(key, T)
    capture = LinearCapture(prob.net.trunk, T)
    losses = prob.forward(capture)
    report = GradientEngine(balancer, strategy).backward(
        losses, prob.shared(), prob.task(), capture=capture, loss_fn=prob.loss_fn(), heads=prob.heads()
    )
    return grads_of(prob.shared()), grads_of(prob.task()), report.strategy


@pytest.mark.parametrize("key", PARAMETER_LEVEL_KEYS)
def test_registry_balancer_strategies_agree(key: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # imtl: representation fallback (tested below)
        shared_ref, task_ref, _ = _run(key, "reference")
        for strategy in ("batched", "task_partitioned"):
            shared, task, ran = _run(key, strategy)
            assert_close_lists(shared, shared_ref, rtol=1e-5)
            assert_close_lists(task, task_ref, rtol=1e-5)
            balancer_cls = BALANCERS[key]
            if issubclass(balancer_cls, GradientBalancer) and not getattr(balancer_cls, "constant_weights", False):
                assert ran == strategy


@pytest.mark.parametrize("key", ["mgda_ub", "aligned_mtl_ub"])
def test_ub_keys_refuse_parameter_level(key: str) -> None:
    """Without features (or with a parameter-level strategy) a *_ub key would be plain mgda/aligned_mtl."""
    prob = make_problem(T=T, n=4)
    capture = LinearCapture(prob.net.trunk, T)
    plain_key = key.removesuffix("_ub")
    message = rf"'{key}' is defined on gradients w\.r\.t\. the shared representation.*features=z.*"
    with pytest.raises(ValueError, match=message + rf"balancer '{plain_key}' for the parameter-level method"):
        GradientEngine(make_balancer(key, T)).backward(
            prob.forward(capture), prob.shared(), prob.task(), capture=capture
        )
    z = prob.net.features(prob.x)
    for strategy in ("reference", "batched", "task_partitioned"):
        with pytest.raises(ValueError, match=rf"strategy='{strategy}'.*'{plain_key}' for the parameter-level method"):
            GradientEngine(make_balancer(key, T), strategy).backward(
                prob.forward(capture), prob.shared(), prob.task(), features=z, capture=capture
            )
    with pytest.raises(ValueError, match=rf"balancer '{plain_key}' is parameter-level"):
        GradientEngine(make_balancer(plain_key, T), "representation").backward(
            prob.losses(prob.net.heads(z)), prob.shared(), prob.task(), features=z
        )


def test_imtl_without_features_falls_back_and_reports_it() -> None:
    prob = make_problem(T=T, n=4)
    with pytest.warns(UserWarning, match="'imtl' is representation-level"):
        report = GradientEngine(make_balancer("imtl", T)).backward(prob.forward(), prob.shared(), prob.task())
    assert report.representation_fallback and report.strategy == "reference"
    fallback = grads_of(prob.shared())
    prob.clear_grads()
    explicit = GradientEngine(make_balancer("imtl", T, representation_level=False)).backward(
        prob.forward(), prob.shared(), prob.task()
    )
    assert not explicit.representation_fallback
    assert_close_lists(fallback, grads_of(prob.shared()), rtol=1e-12)


REP_KEYS = [  # representation_level may be an instance option (imtl), so ask built instances
    key for key in BALANCERS if getattr(make_balancer(key, T), "representation_level", False)
]


@pytest.mark.parametrize("key", REP_KEYS)
def test_registry_representation_level_balancers(key: str) -> None:
    """auto + features runs the representation strategy: shared params get ∂z/∂θᵀ · aggregate(Z, L)."""
    prob = make_problem(T=T, n=4)
    z = prob.net.features(prob.x)
    losses = prob.losses(prob.net.heads(z))
    manual = make_balancer(key, T)
    terms = manual.scalarize(losses)
    rep = torch.stack([torch.autograd.grad(terms[t], z, retain_graph=True)[0].reshape(-1) for t in range(T)])
    assert isinstance(manual, GradientBalancer)
    dz = manual.aggregate(rep, losses.detach())
    expected = torch.autograd.grad(z, prob.shared(), grad_outputs=dz.view_as(z), retain_graph=True)
    report = GradientEngine(make_balancer(key, T)).backward(losses, prob.shared(), prob.task(), features=z)
    assert report.strategy == "representation"
    assert_close_lists(grads_of(prob.shared()), list(expected), rtol=1e-5)


def test_real_ew_reproduces_sum_backward_bitwise() -> None:
    prob = make_problem(T=4, n=8, dtype=torch.float32)
    prob.forward().sum().backward()
    expected = grads_of(list(prob.net.parameters()))
    prob.clear_grads()
    capture = LinearCapture(prob.net.trunk, 4)
    GradientEngine(make_balancer("ew", 4)).backward(prob.forward(capture), prob.shared(), prob.task(), capture=capture)
    for got, want in zip(grads_of(list(prob.net.parameters())), expected, strict=True):
        assert torch.equal(got, want)


def test_dgr_default_base_is_ew() -> None:
    prob = make_problem(T=T)
    losses = prob.forward()
    plain = torch.autograd.grad(losses.sum(), prob.task(), retain_graph=True)
    report = GradientEngine(make_balancer("dgr", T)).backward(
        losses, prob.shared(), prob.task(), loss_fn=prob.loss_fn(), heads=prob.heads()
    )
    assert report.extra["dgr_reg"] > 0
    assert_close_lists(grads_of(prob.task()), list(plain), rtol=1e-12)


REP_PAIRS = [  # (representation-level balancer, its parameter-level counterpart)
    ("mgda_ub", {}, "mgda", {}),
    ("aligned_mtl_ub", {}, "aligned_mtl", {}),
    ("imtl", {}, "imtl", {"representation_level": False}),
    ("imtl_g", {"representation_level": True}, "imtl_g", {}),
]


@pytest.mark.parametrize(("rep_key", "rep_kw", "param_key", "param_kw"), REP_PAIRS, ids=[p[0] for p in REP_PAIRS])
def test_representation_equals_reference_when_features_are_the_parameters(
    rep_key: str, rep_kw: dict, param_key: str, param_kw: dict
) -> None:
    """Identity encoder ``z = θ·1`` (θ the shared parameter, shaped like the features): ``∇_z = ∇_θ``, so
    the representation strategy must give exactly what ``reference`` gives for the parameter-level
    counterpart: the same weights, shared gradient and head gradients."""
    num_tasks, n, width = 4, 3, 5
    g = torch.Generator().manual_seed(0)
    x_init = torch.randn(num_tasks, n, width, generator=g, dtype=torch.float64)
    y = torch.randn(num_tasks, n, 2, generator=g, dtype=torch.float64) * torch.arange(1, num_tasks + 1)[:, None, None]
    torch.manual_seed(0)
    heads = BatchedLinear(num_tasks, width, 2).double()
    runs = []
    for key, kw, strategy in ((rep_key, rep_kw, "representation"), (param_key, param_kw, "reference")):
        theta = x_init.clone().requires_grad_(True)
        z = theta * 1.0  # the identity encoder
        losses = 0.5 + ((heads(z) - y) ** 2).mean(dim=(1, 2))
        for p in heads.parameters():
            p.grad = None
        report = GradientEngine(make_balancer(key, num_tasks, **kw), strategy).backward(
            losses, [theta], list(heads.parameters()), features=z if strategy == "representation" else None
        )
        assert report.strategy == strategy and not report.representation_fallback
        runs.append((theta.grad, [p.grad for p in heads.parameters()], report))
    (rep_grad, rep_heads, rep_report), (ref_grad, ref_heads, ref_report) = runs
    assert rep_grad is not None and ref_grad is not None and float(ref_grad.abs().max()) > 0
    torch.testing.assert_close(rep_grad, ref_grad, rtol=1e-10, atol=1e-12)
    for a, b in zip(rep_heads, ref_heads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(rep_report.weights, ref_report.weights, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rep_report.grad_norms, ref_report.grad_norms, rtol=1e-10, atol=0.0)


def test_rep_pairs_cover_every_representation_level_balancer() -> None:
    assert set(REP_KEYS) <= {pair[0] for pair in REP_PAIRS}


def test_jacobian_aggregator_report_weights() -> None:
    """task_tensioner reports its effective row weights (``d = wᵀJ``); graddrop has none (``d`` is masked
    per coordinate, not a combination of the rows)."""
    prob = make_problem(T=T, n=4)
    losses = prob.forward()
    rows = [torch.autograd.grad(losses[t], prob.shared(), retain_graph=True) for t in range(T)]
    jac = torch.stack([torch.cat([g.reshape(-1) for g in row]) for row in rows])
    report = GradientEngine(make_balancer("task_tensioner", T)).backward(losses, prob.shared(), prob.task())
    assert report.weights is not None and report.weights.shape == (T,)
    d = torch.cat([g.reshape(-1) for g in grads_of(prob.shared())])
    torch.testing.assert_close(report.weights @ jac, d, rtol=1e-10, atol=1e-14)
    report = GradientEngine(make_balancer("graddrop", T)).backward(prob.forward(), prob.shared(), prob.task())
    assert report.weights is None and report.grad_norms is not None


def test_real_ew_mean_weights_heads_too() -> None:
    """``ew(mean=True)`` is the gradient of ``mean(losses)`` for every parameter, heads included."""
    prob = make_problem(T=4, n=8, dtype=torch.float32)
    prob.forward().mean().backward()
    expected = grads_of(list(prob.net.parameters()))
    prob.clear_grads()
    capture = LinearCapture(prob.net.trunk, 4)
    report = GradientEngine(make_balancer("ew", 4, mean=True)).backward(
        prob.forward(capture), prob.shared(), prob.task(), capture=capture
    )
    assert_close_lists(grads_of(list(prob.net.parameters())), expected, rtol=1e-6)
    torch.testing.assert_close(report.weights, torch.full((4,), 0.25, dtype=torch.float64), rtol=0, atol=0)
