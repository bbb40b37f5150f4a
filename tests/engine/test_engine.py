"""Engine behaviour: what heads receive, the exact ew path, loss weightings, report, capture, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtrl.balancers.base import LossWeighting
from mtrl.engine import BalanceReport, GradientEngine, LinearCapture
from tests.engine.helpers import (
    AggregatorTest,
    GramTestWeighting,
    HalfTestWeighting,
    OnesTestWeighting,
    RepGramTestWeighting,
    RepRequiredTestWeighting,
    UWTestWeighting,
    assert_close_lists,
    grads_of,
    make_problem,
)


@pytest.mark.parametrize("strategy", ["reference", "batched", "task_partitioned"])
@pytest.mark.parametrize("balancer_cls", [GramTestWeighting, AggregatorTest])
def test_heads_get_only_their_own_unweighted_gradient(strategy: str, balancer_cls: type, device: torch.device) -> None:
    T = 3
    prob = make_problem(T=T, device=str(device))
    capture = LinearCapture(prob.net.trunk, T)
    losses = prob.forward(capture)
    heads = prob.net.heads
    own = [torch.autograd.grad(losses[t], [heads.weight, heads.bias], retain_graph=True) for t in range(T)]
    for t in range(T):  # sanity: task t's loss reaches only slice t of the batched head
        others = [s for s in range(T) if s != t]
        assert float(own[t][0][others].abs().max()) == 0.0 and float(own[t][0][t].abs().max()) > 0
    GradientEngine(balancer_cls(T), strategy).backward(losses, prob.shared(), prob.task(), capture=capture)
    for t in range(T):
        torch.testing.assert_close(heads.weight.grad[t], own[t][0][t], rtol=1e-12, atol=0.0)  # type: ignore[index]
        torch.testing.assert_close(heads.bias.grad[t], own[t][1][t], rtol=1e-12, atol=0.0)  # type: ignore[index]


@pytest.mark.parametrize("with_capture", [False, True])
def test_constant_ones_reproduces_sum_backward_bitwise(with_capture: bool, device: torch.device) -> None:
    prob = make_problem(T=4, n=8, dtype=torch.float32, device=str(device))
    prob.forward().sum().backward()
    expected = grads_of(list(prob.net.parameters()))
    prob.clear_grads()
    capture = LinearCapture(prob.net.trunk, 4) if with_capture else None
    report = GradientEngine(OnesTestWeighting(4)).backward(
        prob.forward(capture), prob.shared(), prob.task(), capture=capture
    )
    for got, want in zip(grads_of(list(prob.net.parameters())), expected, strict=True):
        assert torch.equal(got, want)
    assert report.strategy == "plain" and report.grad_norms is None
    assert torch.equal(report.weights, torch.ones(4, dtype=torch.float64))  # type: ignore[arg-type]


def test_constant_non_unit_weights_are_a_loss_weighting(device: torch.device) -> None:
    """Constant weights ``1/T`` (``ew(mean=True)``): every parameter, heads included, gets ``∇ mean(L)``
    (a constant weighting is a loss weighting; before, heads got the unweighted sum)."""
    T = 3
    prob = make_problem(T=T, device=str(device))
    losses = prob.forward()
    expected = torch.autograd.grad(losses.mean(), prob.shared() + prob.task(), retain_graph=True)
    report = GradientEngine(HalfTestWeighting(T)).backward(losses, prob.shared(), prob.task())
    assert_close_lists(grads_of(prob.shared()) + grads_of(prob.task()), list(expected), rtol=1e-12)
    torch.testing.assert_close(report.weights, torch.full((T,), 1 / T, dtype=torch.float64), rtol=0, atol=0)


def test_loss_weighting_writes_balancer_params_and_effective_weights(device: torch.device) -> None:
    T = 3
    prob = make_problem(T=T, device=str(device))
    balancer = UWTestWeighting(T)
    losses = prob.forward()
    objective = balancer.scalarize(losses).sum()
    expected = torch.autograd.grad(objective, [*prob.shared(), *prob.task(), balancer.log_var], retain_graph=True)
    report = GradientEngine(balancer).backward(losses, prob.shared(), prob.task())
    assert_close_lists(grads_of(prob.shared()) + grads_of(prob.task()), list(expected[:-1]), rtol=1e-12)
    assert balancer.log_var.grad is not None
    # ∂S_t/∂s_t = 1 − exp(−s_t) L_t
    want = 1 - torch.exp(-balancer.log_var.detach()) * losses.detach()
    torch.testing.assert_close(balancer.log_var.grad, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(report.weights, torch.exp(-balancer.log_var.detach()), rtol=1e-12, atol=0.0)
    assert balancer.stepped == 1  # after_backward was called
    assert report.grad_norms is None and report.cond is None


@pytest.mark.parametrize("strategy", ["reference", "batched", "task_partitioned"])
def test_loss_weighting_diagnostics(strategy: str, device: torch.device) -> None:
    T = 3
    prob = make_problem(T=T, device=str(device))
    capture = LinearCapture(prob.net.trunk, T)
    balancer = UWTestWeighting(T)
    losses = prob.forward(capture)
    terms = balancer.scalarize(losses)
    jac = torch.stack(
        [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(terms[t], prob.shared(), retain_graph=True)])
            for t in range(T)
        ]
    )
    plain = torch.autograd.grad(terms.sum(), prob.shared(), retain_graph=True)
    report = GradientEngine(balancer, strategy, diagnostics=True).backward(
        losses, prob.shared(), prob.task(), capture=capture
    )
    assert report.strategy == f"plain+{strategy}"
    torch.testing.assert_close(report.grad_norms, jac.norm(dim=1).cpu(), rtol=1e-10, atol=0.0)
    assert_close_lists(grads_of(prob.shared()), list(plain), rtol=1e-12)


def test_report_statistics(device: torch.device) -> None:
    T = 4
    prob = make_problem(T=T, device=str(device))
    losses = prob.forward()
    jac = torch.stack(
        [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[t], prob.shared(), retain_graph=True)])
            for t in range(T)
        ]
    ).cpu()
    report = GradientEngine(GramTestWeighting(T), "reference").backward(losses, prob.shared(), prob.task())
    unit = jac / jac.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    pairs = cos[torch.triu_indices(T, T, 1).unbind()]
    eig = torch.linalg.eigvalsh(jac @ jac.T)
    assert report.cos_min == pytest.approx(float(pairs.min()), rel=1e-9)
    assert report.cos_mean == pytest.approx(float(pairs.mean()), rel=1e-9)
    assert report.cond == pytest.approx(float(eig[-1] / eig[0]), rel=1e-6)
    names = ["a", "b", "c", "d"]
    scalars = report.scalars("balancer/critic", names)
    assert scalars["balancer/critic/weight/c"] == pytest.approx(float(report.weights[2]))  # type: ignore[index]
    assert scalars["balancer/critic/grad_norm/d"] == pytest.approx(float(jac[3].norm()), rel=1e-9)
    assert {"balancer/critic/cos_min", "balancer/critic/cos_mean", "balancer/critic/cond"} <= set(scalars)
    with pytest.raises(ValueError, match="task_names"):
        report.scalars("x", names[:2])


def test_report_handles_zero_and_rank_deficient_gram() -> None:
    from mtrl.engine.report import gram_statistics

    zero = torch.zeros(3, 3, dtype=torch.float64)
    norms, cmin, cmean, cond = gram_statistics(zero, torch.float64)
    assert torch.equal(norms, torch.zeros(3, dtype=torch.float64)) and cmin is None and cmean is None and cond is None
    g = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)  # rank 1, one zero row
    norms, cmin, cmean, cond = gram_statistics(g @ g.T, torch.float64)
    assert cmin == pytest.approx(1.0) and cmean == pytest.approx(1.0) and cond == pytest.approx(1.0)
    empty = BalanceReport(strategy="plain")
    assert empty.scalars("p", ["a"]) == {}


def test_report_statistics_are_computed_lazily_and_match_the_eager_ones() -> None:
    """``set_gram`` defers the statistics to the first access; they equal :func:`gram_statistics`,
    assigning a field overrides it, and ``scalars`` is the same as for eagerly filled fields."""
    from mtrl.engine.report import gram_statistics

    g = torch.tensor([[1.0, 0.5, 0.0], [0.2, -1.0, 2.0], [3.0, 0.1, 0.3]], dtype=torch.float64)
    gram = g @ g.T
    lazy = BalanceReport(weights=torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64), strategy="reference")
    lazy.set_gram(gram, torch.float32)
    norms, cos_min, cos_mean, cond = gram_statistics(gram, torch.float32)
    eager = BalanceReport(
        weights=lazy.weights, grad_norms=norms, cos_min=cos_min, cos_mean=cos_mean, cond=cond, strategy="reference"
    )
    names = ["a", "b", "c"]
    assert lazy.scalars("balancer/critic", names) == eager.scalars("balancer/critic", names)
    assert torch.equal(lazy.grad_norms, norms) and (lazy.cos_min, lazy.cos_mean, lazy.cond) == (cos_min, cos_mean, cond)
    override = BalanceReport()
    override.set_gram(gram, torch.float64)
    override.cond = 7.0  # an explicit value wins over the pending Gramian, the others still follow from it
    assert override.cond == 7.0 and override.cos_min == pytest.approx(cos_min)
    assert "cond=7.0" in repr(override)


def test_opposite_gradients_cosine_minus_one() -> None:
    from mtrl.engine.report import gram_statistics

    g = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    _, cmin, _, cond = gram_statistics(g @ g.T, torch.float32)
    assert cmin == pytest.approx(-1.0)
    assert cond == pytest.approx(1.0)  # one non-zero eigenvalue


def test_capture_records_only_inside_record_with_grad(device: torch.device) -> None:
    prob = make_problem(T=2, device=str(device))
    capture = LinearCapture(prob.net.trunk, 2)
    prob.net(prob.x)
    assert len(capture) == 0
    with capture.record(), torch.no_grad():
        prob.net(prob.x)
    assert len(capture) == 0
    with capture.record():
        prob.net(prob.x)
    assert len(capture) == len(capture.layers) == 2
    prob.net(prob.x)  # hooks removed on exit
    assert len(capture) == 2


class _Post(LossWeighting):
    name = "post_test"
    needs_post_step_losses = True

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.seen: list[torch.Tensor] = []

    def post_step(self, losses: torch.Tensor) -> None:
        self.seen.append(losses)


def test_post_step_forwards_when_needed() -> None:
    balancer = _Post(2)
    engine = GradientEngine(balancer)
    new = torch.tensor([1.0, 2.0], requires_grad=True)
    engine.post_step(new)
    assert len(balancer.seen) == 1 and torch.equal(balancer.seen[0], new.detach())
    assert not balancer.seen[0].requires_grad
    GradientEngine(UWTestWeighting(2)).post_step(new)  # no-op for others


# --- errors -----------------------------------------------------------------------------------------


def test_error_unknown_strategy_and_bad_args() -> None:
    with pytest.raises(
        ValueError, match="valid strategies: auto, reference, batched, task_partitioned, representation"
    ):
        GradientEngine(GramTestWeighting(2), strategy="fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Balancer"):
        GradientEngine("mgda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_size"):
        GradientEngine(GramTestWeighting(2), chunk_size=0)


def test_error_wrong_loss_shape_and_detached(device: torch.device) -> None:
    prob = make_problem(T=3, device=str(device))
    engine = GradientEngine(GramTestWeighting(3))
    with pytest.raises(ValueError, match=r"shape \(T,\) = \(3,\)"):
        engine.backward(prob.forward()[:2], prob.shared(), prob.task())
    with pytest.raises(ValueError, match="do not require grad"):
        engine.backward(prob.forward().detach(), prob.shared(), prob.task())
    with pytest.raises(ValueError, match="shared_params is empty"):
        engine.backward(prob.forward(), [], prob.task())
    with pytest.raises(ValueError, match="both shared_params and task_params"):
        engine.backward(prob.forward(), prob.shared(), prob.shared()[:1])


def test_error_strategy_needs_inputs(device: torch.device) -> None:
    prob = make_problem(T=3, device=str(device))
    with pytest.raises(ValueError, match="needs capture="):
        GradientEngine(GramTestWeighting(3), "task_partitioned").backward(prob.forward(), prob.shared(), prob.task())
    with pytest.raises(ValueError, match="needs features="):
        GradientEngine(RepGramTestWeighting(3), "representation").backward(prob.forward(), prob.shared(), prob.task())


def test_error_capture_recorded_nothing(device: torch.device) -> None:
    prob = make_problem(T=3, device=str(device))
    capture = LinearCapture(prob.net.trunk, 3)
    with pytest.raises(ValueError, match="recorded nothing"):
        GradientEngine(GramTestWeighting(3)).backward(prob.forward(), prob.shared(), prob.task(), capture=capture)


def test_error_shared_param_not_covered(device: torch.device) -> None:
    prob = make_problem(T=3, device=str(device))
    capture = LinearCapture(prob.net.trunk[0], 3)  # only the first layer is hooked
    with pytest.raises(ValueError, match=r"not the weight/bias of an nn\.Linear"):
        GradientEngine(GramTestWeighting(3)).backward(
            prob.forward(capture), prob.shared(), prob.task(), capture=capture
        )


def test_error_batch_not_divisible(device: torch.device) -> None:
    prob = make_problem(T=3, n=4, device=str(device))
    capture = LinearCapture(prob.net.trunk, 3)
    with capture.record():
        z = prob.net.trunk(prob.x.reshape(12, -1)[:10])  # 10 rows for 3 tasks
    losses = torch.stack([z[:4].sum(), z[4:8].sum(), z[8:].sum()]) ** 2
    with pytest.raises(ValueError, match="not divisible by T = 3"):
        GradientEngine(GramTestWeighting(3)).backward(losses, prob.shared(), capture=capture)


@pytest.mark.skipif(
    not hasattr(torch.autograd.graph, "get_gradient_edge"), reason="in-place activations need torch >= 2.2"
)
def test_inplace_activation_after_a_hooked_layer_matches_reference(device: torch.device) -> None:
    """``nn.ReLU(inplace=True)`` right after a hooked Linear: the capture differentiates at the layer's
    output edge (the pre-activation value), so ``task_partitioned`` equals ``reference``. (Until the
    capture held gradient edges instead of the output tensors this was refused as an in-place edit.)"""
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)).double().to(device)
    capture = LinearCapture(trunk, 2)
    x = torch.randn(2, 5, 3, dtype=torch.float64, device=device)
    grads = []
    for strategy in ("reference", "task_partitioned"):
        with capture.record():
            losses = (trunk(x) ** 2).mean(dim=(1, 2))
        GradientEngine(GramTestWeighting(2), strategy).backward(losses, list(trunk.parameters()), capture=capture)
        grads.append(grads_of(list(trunk.parameters())))
    assert float(grads[0][0].abs().max()) > 0
    assert_close_lists(grads[1], grads[0], rtol=1e-10)


def test_error_inplace_activation_detected_without_gradient_edges(
    device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the capture must hold the output tensors (torch < 2.2), an in-place edit of a hooked
    layer's output is still detected and refused."""
    import mtrl.engine.capture as capture_module

    monkeypatch.setattr(capture_module, "_get_gradient_edge", None)
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)).double().to(device)
    capture = LinearCapture(trunk, 2)
    x = torch.randn(2, 5, 3, dtype=torch.float64, device=device)
    with capture.record():
        losses = (trunk(x) ** 2).mean(dim=(1, 2))
    with pytest.raises(ValueError, match="modified in place"):
        GradientEngine(GramTestWeighting(2)).backward(losses, list(trunk.parameters()), capture=capture)


@pytest.mark.skipif(not hasattr(torch.autograd.graph, "get_gradient_edge"), reason="needs torch >= 2.2")
def test_capture_does_not_keep_layer_outputs_alive(device: torch.device) -> None:
    """The recorded calls hold gradient edges, not the pre-activation outputs, so those are freed
    after the forward as without a capture (keeping them slowed the next backward by ~10%)."""
    import gc
    import weakref

    prob = make_problem(T=3, device=str(device))
    capture = LinearCapture(prob.net.trunk, 3)
    outputs: list[weakref.ref[torch.Tensor]] = []
    handles = [
        layer.register_forward_hook(lambda m, a, out: outputs.append(weakref.ref(out))) for layer in capture.layers
    ]
    losses = prob.forward(capture)
    for handle in handles:
        handle.remove()
    gc.collect()
    assert len(capture) == len(outputs) > 0
    assert all(ref() is None for ref in outputs)
    engine = GradientEngine(GramTestWeighting(3), "task_partitioned")
    engine.backward(losses, prob.shared(), prob.task(), capture=capture)
    assert all(p.grad is not None for p in prob.shared())


def test_error_inplace_edit_of_a_recorded_input_detected(device: torch.device) -> None:
    """Editing a hooked layer's input in place after the call would change the recorded ``X``: refused."""

    class EditsInput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first, self.second = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.first(x)
            out = self.second(h)
            h.mul_(2.0)  # after `second` read it; the losses do not use the edited h
            return out

    torch.manual_seed(0)
    net = EditsInput().double().to(device)
    capture = LinearCapture(net, 2)
    with capture.record():
        losses = (net(torch.randn(2, 5, 3, dtype=torch.float64, device=device)) ** 2).mean(dim=(1, 2))
    with pytest.raises(ValueError, match="modified in place"):
        GradientEngine(GramTestWeighting(2)).backward(losses, list(net.parameters()), capture=capture)


def test_capture_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        LinearCapture(nn.ReLU(), 2)
    with pytest.raises(ValueError, match="num_tasks"):
        LinearCapture(nn.Linear(2, 2), 0)


def test_grad_overwritten_not_accumulated(device: torch.device) -> None:
    prob = make_problem(T=3, device=str(device))
    engine = GradientEngine(GramTestWeighting(3), "batched")
    engine.backward(prob.forward(), prob.shared(), prob.task())
    first = grads_of(prob.shared())
    engine.backward(prob.forward(), prob.shared(), prob.task())
    assert_close_lists(grads_of(prob.shared()), first, rtol=1e-12)
    assert math.isfinite(float(first[0].sum()))



# --- representation level: never switched silently ---------------------------------------------------


def _features_problem(device: torch.device) -> tuple:
    prob = make_problem(T=3, device=str(device))
    z = prob.net.features(prob.x)
    return prob, z, prob.losses(prob.net.heads(z))


def test_representation_required_balancer_refuses_parameter_level(device: torch.device) -> None:
    prob, z, losses = _features_problem(device)
    engine = GradientEngine(RepRequiredTestWeighting(3))
    with pytest.raises(ValueError, match=r"'rep_required_test' is defined on gradients w\.r\.t\. the.*features=z"):
        engine.backward(losses, prob.shared(), prob.task())
    capture = LinearCapture(prob.net.trunk, 3)
    for strategy in ("reference", "batched", "task_partitioned"):
        with pytest.raises(ValueError, match=rf"strategy='{strategy}' differentiates w\.r\.t\. the shared parameters"):
            GradientEngine(RepRequiredTestWeighting(3), strategy).backward(
                prob.forward(capture), prob.shared(), prob.task(), features=z, capture=capture
            )
    report = GradientEngine(RepRequiredTestWeighting(3)).backward(losses, prob.shared(), prob.task(), features=z)
    assert report.strategy == "representation" and not report.representation_fallback


@pytest.mark.parametrize("balancer_cls", [GramTestWeighting, AggregatorTest])
def test_parameter_level_balancer_refuses_representation_strategy(balancer_cls: type, device: torch.device) -> None:
    prob, z, losses = _features_problem(device)
    with pytest.raises(ValueError, match=r"is parameter-level.*mgda_ub, aligned_mtl_ub, imtl"):
        GradientEngine(balancer_cls(3), "representation").backward(losses, prob.shared(), prob.task(), features=z)
    # auto with features: the parameter-level method, features ignored
    report = GradientEngine(balancer_cls(3)).backward(losses, prob.shared(), prob.task(), features=z)
    assert report.strategy == ("reference" if device.type == "cpu" else "batched")
    assert not report.representation_fallback


def test_representation_level_fallback_is_reported_and_warned_once(device: torch.device) -> None:
    prob, z, losses = _features_problem(device)
    engine = GradientEngine(RepGramTestWeighting(3))
    with pytest.warns(UserWarning, match="representation-level.*no features= given"):
        report = engine.backward(losses, prob.shared(), prob.task())
    assert report.representation_fallback and report.strategy in ("reference", "batched")
    fallback = grads_of(prob.shared())
    prob.clear_grads()
    GradientEngine(GramTestWeighting(3), report.strategy).backward(prob.forward(), prob.shared(), prob.task())
    assert_close_lists(fallback, grads_of(prob.shared()), rtol=1e-12)  # = the parameter-level weighting
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per engine
        again = engine.backward(prob.forward(), prob.shared(), prob.task())
    assert again.representation_fallback
    _, z, losses = _features_problem(device)
    assert not engine.backward(losses, prob.shared(), prob.task(), features=z).representation_fallback
    _, z, losses = _features_problem(device)
    with pytest.warns(UserWarning, match="strategy='reference'"):
        explicit = GradientEngine(RepGramTestWeighting(3), "reference").backward(
            losses, prob.shared(), prob.task(), features=z
        )
    assert explicit.representation_fallback and explicit.strategy == "reference"


def test_loss_weighting_representation_strategy_is_diagnostics_only(device: torch.device) -> None:
    prob, z, losses = _features_problem(device)
    balancer = UWTestWeighting(3)
    terms = balancer.scalarize(losses)
    rep = torch.stack([torch.autograd.grad(terms[t], z, retain_graph=True)[0].reshape(-1) for t in range(3)])
    plain = torch.autograd.grad(terms.sum(), prob.shared(), retain_graph=True)
    report = GradientEngine(balancer, "representation", diagnostics=True).backward(
        losses, prob.shared(), prob.task(), features=z
    )
    assert report.strategy == "plain+representation"
    torch.testing.assert_close(report.grad_norms, rep.norm(dim=1).cpu(), rtol=1e-10, atol=0.0)
    assert_close_lists(grads_of(prob.shared()), list(plain), rtol=1e-12)


def test_diagnostics_per_call_override(device: torch.device) -> None:
    """Trainers ask for G statistics at log steps only: ``backward(..., diagnostics=True)``."""
    prob = make_problem(T=3, device=str(device))
    engine = GradientEngine(OnesTestWeighting(3))
    assert engine.backward(prob.forward(), prob.shared(), prob.task()).grad_norms is None
    plain = grads_of(prob.shared())
    logged = engine.backward(prob.forward(), prob.shared(), prob.task(), diagnostics=True)
    assert logged.grad_norms is not None and logged.cond is not None and logged.cos_min is not None
    assert_close_lists(grads_of(prob.shared()), plain, rtol=0)  # the update is unchanged
    assert engine.backward(prob.forward(), prob.shared(), prob.task()).grad_norms is None
    always = GradientEngine(OnesTestWeighting(3), diagnostics=True)
    assert always.backward(prob.forward(), prob.shared(), prob.task(), diagnostics=False).grad_norms is None
