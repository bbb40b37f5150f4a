"""Every strategy yields the reference J, G, d and .grad (float64, 1e-5 relative)."""

from __future__ import annotations

import pytest
import torch

from mtrl.engine import BalanceReport, GradientEngine, LinearCapture
from mtrl.engine.strategies import (
    batched_blocks,
    concat_blocks,
    gram_from_blocks,
    partitioned_blocks,
    reference_blocks,
)
from tests.engine.helpers import (
    AggregatorTest,
    GramTestWeighting,
    RepGramTestWeighting,
    assert_close_lists,
    grads_of,
    make_problem,
)

RTOL = 1e-5


@pytest.mark.parametrize("T", [1, 3, 5])
def test_jacobian_blocks_agree(T: int, device: torch.device) -> None:
    prob = make_problem(T=T, device=str(device))
    capture = LinearCapture(prob.net.trunk, T)
    losses = prob.forward(capture)
    ref = concat_blocks(reference_blocks(losses, prob.shared()))
    bat = concat_blocks(batched_blocks(losses, prob.shared()))
    chunked = concat_blocks(batched_blocks(losses, prob.shared(), chunk_size=2))
    part_blocks, _ = partitioned_blocks(capture, losses, prob.shared(), [])
    part = concat_blocks(part_blocks)
    assert ref.shape == (T, sum(p.numel() for p in prob.shared()))
    assert float(ref.norm()) > 0 and (T == 1 or not torch.allclose(ref[0], ref[-1]))  # distinct task rows
    for jac in (bat, chunked, part):
        torch.testing.assert_close(jac, ref, rtol=RTOL, atol=RTOL * float(ref.abs().max()))
    torch.testing.assert_close(gram_from_blocks(part_blocks), (ref @ ref.T).to(torch.float64), rtol=RTOL, atol=0.0)


def _run(
    balancer_cls: type, strategy: str, T: int, device: torch.device, **kw: object
) -> tuple[list, list, BalanceReport]:
    prob = make_problem(T=T, device=str(device))
    capture = LinearCapture(prob.net.trunk, T) if strategy == "task_partitioned" else None
    losses = prob.forward(capture)
    engine = GradientEngine(balancer_cls(T), strategy=strategy)  # type: ignore[arg-type]
    report = engine.backward(losses, prob.shared(), prob.task(), capture=capture, **kw)  # type: ignore[arg-type]
    return grads_of(prob.shared()), grads_of(prob.task()), report


@pytest.mark.parametrize("balancer_cls", [GramTestWeighting, AggregatorTest])
@pytest.mark.parametrize("strategy", ["batched", "task_partitioned"])
def test_engine_strategies_match_reference(balancer_cls: type, strategy: str, device: torch.device) -> None:
    T = 4
    shared_ref, task_ref, rep_ref = _run(balancer_cls, "reference", T, device)
    shared, task, rep = _run(balancer_cls, strategy, T, device)
    assert rep.strategy == strategy and rep_ref.strategy == "reference"
    assert_close_lists(shared, shared_ref, rtol=RTOL)
    assert_close_lists(task, task_ref, rtol=RTOL)
    torch.testing.assert_close(rep.grad_norms, rep_ref.grad_norms, rtol=RTOL, atol=0.0)
    if rep_ref.weights is not None:
        torch.testing.assert_close(rep.weights, rep_ref.weights, rtol=RTOL, atol=0.0)


def test_reference_direction_is_weighted_jacobian(device: torch.device) -> None:
    """d = wᵀJ with w = weights(JJᵀ, L), built by hand from per-task autograd calls."""
    T = 3
    prob = make_problem(T=T, device=str(device))
    losses = prob.forward()
    rows = []
    for t in range(T):
        g = torch.autograd.grad(losses[t], prob.shared(), retain_graph=True)
        rows.append(torch.cat([x.reshape(-1) for x in g]))
    jac = torch.stack(rows)
    balancer = GramTestWeighting(T)
    w = balancer.weights(jac @ jac.T, losses.detach())
    expected = w @ jac
    GradientEngine(balancer, "batched").backward(losses, prob.shared(), prob.task())
    got = torch.cat([p.grad.reshape(-1) for p in prob.shared()])  # type: ignore[union-attr]
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(w, torch.ones_like(w))  # the test weighting is not trivially EW


def test_auto_picks_strategy(device: torch.device) -> None:
    prob = make_problem(T=3, device=str(device))
    capture = LinearCapture(prob.net.trunk, 3)
    engine = GradientEngine(GramTestWeighting(3))
    assert engine.backward(prob.forward(capture), prob.shared(), prob.task(), capture=capture).strategy == (
        "task_partitioned"
    )
    # No capture: batched on accelerators, reference on the CPU (vmap measured no faster there).
    expected = "reference" if device.type == "cpu" else "batched"
    assert engine.backward(prob.forward(), prob.shared(), prob.task()).strategy == expected
    rep_engine = GradientEngine(RepGramTestWeighting(3))
    z = prob.net.features(prob.x)
    losses = prob.losses(prob.net.heads(z))
    assert rep_engine.backward(losses, prob.shared(), prob.task(), features=z).strategy == "representation"


def test_representation_strategy_matches_manual(device: torch.device) -> None:
    """Z_t = ∇_z S_t over the full flattened z, G = ZZᵀ, then ONE backward with Σ w_t Z_t."""
    T = 3
    prob = make_problem(T=T, device=str(device))
    z = prob.net.features(prob.x)
    losses = prob.losses(prob.net.heads(z))
    rows = [torch.autograd.grad(losses[t], z, retain_graph=True)[0].reshape(-1) for t in range(T)]
    rep = torch.stack(rows)
    balancer = RepGramTestWeighting(T)
    w = balancer.weights(rep @ rep.T, losses.detach())
    expected = torch.autograd.grad(z, prob.shared(), grad_outputs=(w @ rep).view_as(z), retain_graph=True)
    head_expected = torch.autograd.grad(losses.sum(), prob.task(), retain_graph=True)
    report = GradientEngine(balancer).backward(losses, prob.shared(), prob.task(), features=z)
    assert_close_lists(grads_of(prob.shared()), list(expected), rtol=RTOL)
    assert_close_lists(grads_of(prob.task()), list(head_expected), rtol=RTOL)
    torch.testing.assert_close(report.grad_norms, rep.norm(dim=1).cpu(), rtol=RTOL, atol=0.0)


def test_representation_with_jacobian_aggregator(device: torch.device) -> None:
    T = 3
    prob = make_problem(T=T, device=str(device))
    z = prob.net.features(prob.x)
    losses = prob.losses(prob.net.heads(z))
    rep = torch.stack([torch.autograd.grad(losses[t], z, retain_graph=True)[0].reshape(-1) for t in range(T)])
    dz = AggregatorTest(T).aggregate(rep, losses.detach())
    expected = torch.autograd.grad(z, prob.shared(), grad_outputs=dz.view_as(z), retain_graph=True)
    report = GradientEngine(AggregatorTest(T), strategy="representation").backward(
        losses, prob.shared(), prob.task(), features=z
    )
    assert report.weights is None
    assert_close_lists(grads_of(prob.shared()), list(expected), rtol=RTOL)


def test_layer_called_twice_accumulates(device: torch.device) -> None:
    """A trunk applied to two inputs inside one record (e.g. obs and next obs) sums both calls."""
    T = 3
    prob = make_problem(T=T, device=str(device))
    x2 = torch.flip(prob.x, dims=[1]) * 0.5

    def losses_of() -> torch.Tensor:
        return prob.losses(prob.net(prob.x)) + 0.3 * prob.losses(prob.net(x2))

    capture = LinearCapture(prob.net.trunk, T)
    with capture.record():
        losses = losses_of()
    assert len(capture) == 2 * len(capture.layers)
    GradientEngine(GramTestWeighting(T), "task_partitioned").backward(
        losses, prob.shared(), prob.task(), capture=capture
    )
    part = grads_of(prob.shared())
    assert len(capture) == 0  # freed after backward
    prob.clear_grads()
    GradientEngine(GramTestWeighting(T), "reference").backward(losses_of(), prob.shared(), prob.task())
    assert_close_lists(part, grads_of(prob.shared()), rtol=RTOL)


def test_flat_rows_are_task_major(device: torch.device) -> None:
    """Rows given as a flat (B, in) batch, task-major, partition like (T, n, in)."""
    T, n = 3, 4
    prob = make_problem(T=T, n=n, device=str(device))
    trunk, heads = prob.net.trunk, prob.net.heads

    def losses_of() -> torch.Tensor:
        z = trunk(prob.x.reshape(T * n, -1)).reshape(T, n, -1)
        return prob.losses(heads(z))

    capture = LinearCapture(trunk, T)
    with capture.record():
        losses = losses_of()
    GradientEngine(GramTestWeighting(T), "task_partitioned").backward(
        losses, prob.shared(), prob.task(), capture=capture
    )
    part = grads_of(prob.shared())
    GradientEngine(GramTestWeighting(T), "reference").backward(losses_of(), prob.shared(), prob.task())
    assert_close_lists(part, grads_of(prob.shared()), rtol=RTOL)


class _ItemInBackward(torch.autograd.Function):
    """Identity×2 whose backward reads a Python scalar: vmap cannot batch it (no rule for aten::item)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        return g * (2.0 if float(g.abs().sum().item()) >= 0 else 0.0)


def test_batched_falls_back_to_reference_where_vmap_fails() -> None:
    import mtrl.engine.strategies as strategies

    strategies._vmap_warned = False
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, dtype=torch.float64)
    terms = (_ItemInBackward.apply(x @ w.T) ** 2).sum(0)  # (3,)
    with pytest.warns(UserWarning, match="using the reference loop"):
        blocks = batched_blocks(terms, [w])
    torch.testing.assert_close(blocks[0], reference_blocks(terms, [w])[0], rtol=0, atol=0)
