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
    RepAggregatorTest,
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
    dz = RepAggregatorTest(T).aggregate(rep, losses.detach())
    expected = torch.autograd.grad(z, prob.shared(), grad_outputs=dz.view_as(z), retain_graph=True)
    report = GradientEngine(RepAggregatorTest(T), strategy="representation").backward(
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


def _unbatchable_terms() -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, dtype=torch.float64)
    return (_ItemInBackward.apply(x @ w.T) ** 2).sum(0), w  # (3,)


def test_batched_falls_back_to_reference_where_vmap_fails() -> None:
    terms, w = _unbatchable_terms()
    for _ in range(2):  # without a status: the fallback warns on every call
        with pytest.warns(UserWarning, match="using the reference loop"):
            blocks = batched_blocks(terms, [w])
        torch.testing.assert_close(blocks[0], reference_blocks(terms, [w])[0], rtol=0, atol=0)


def test_engine_remembers_the_vmap_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """One warning per engine, and later calls go straight to the loop (no vmap retry)."""
    import warnings

    engine = GradientEngine(GramTestWeighting(3), "batched")
    terms, w = _unbatchable_terms()
    with pytest.warns(UserWarning, match="for this engine from now on"):
        engine.backward(terms, [w])
    assert engine.vmap_status.failed and "Batching rule" in engine.vmap_status.reason
    first = w.grad.clone()  # type: ignore[union-attr]
    batched_calls = []
    original = torch.autograd.grad

    def counting_grad(*args: object, **kwargs: object) -> object:
        batched_calls.append(bool(kwargs.get("is_grads_batched", False)))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    terms = (_ItemInBackward.apply(torch.randn(5, 4, dtype=torch.float64) @ w.T) ** 2).sum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.backward(terms, [w])
    assert batched_calls and not any(batched_calls)  # only the per-task loop ran
    assert w.grad is not None and not torch.equal(w.grad, first)


class _FailingBackward(torch.autograd.Function):
    """A backward that fails for a reason unrelated to vmap (stands for OOM or a real bug)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory (simulated)")


def test_batched_does_not_hide_other_errors() -> None:
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    terms = (_FailingBackward.apply(torch.randn(5, 4, dtype=torch.float64) @ w.T) ** 2).sum(0)
    engine = GradientEngine(GramTestWeighting(3), "batched")
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.backward(terms, [w])
    assert not engine.vmap_status.failed


@pytest.mark.parametrize("T", [2, 10, 20])  # 20: above GRAM_SMALL_T, the wider chunk
def test_gram_from_float32_blocks_is_accurate_at_large_p(T: int) -> None:
    """Chunked float32 products summed in float64: the rounding eigenvalues of a rank-1 ``G`` stay far
    below the ``T·eps(float32)·λ_max`` rank cut-off even at ``P = 3·10⁵`` (one float32 ``J Jᵀ`` measured
    ~1e-6 relative there, above the cut-off at T = 2)."""
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(1, 300_000, generator=g)
    jac = direction * (0.5 + torch.rand(T, 1, generator=g))  # rank 1, float32
    blocks = [jac[:, :1000], jac[:, 1000:101_000], jac[:, 101_000:]]
    gram = gram_from_blocks(blocks)
    exact = jac.double() @ jac.double().T
    eig = torch.linalg.eigvalsh(gram)
    cutoff = T * torch.finfo(torch.float32).eps * float(eig[-1])
    assert gram.dtype == torch.float64
    assert float((gram - exact).abs().max()) <= 1e-8 * float(exact.diagonal().sum())
    assert float(eig[:-1].abs().max()) < 0.1 * cutoff


def test_gram_from_blocks_mixes_narrow_wide_and_low_precision_blocks() -> None:
    """Narrow blocks (biases) are summed through one concatenated product, blocks of other dtypes
    separately; every layout gives ``J Jᵀ`` of the concatenated Jacobian."""
    g = torch.Generator().manual_seed(3)
    for T in (3, 20):
        wide = torch.randn(T, 5000, generator=g, dtype=torch.float64)
        narrow = [torch.randn(T, k, generator=g, dtype=torch.float64) for k in (7, 400, 1)]
        half = torch.randn(T, 300, generator=g).to(torch.bfloat16)
        for blocks in ([wide, *narrow], narrow, [narrow[0]], [narrow[0].float(), narrow[1]], [wide, half, narrow[1]]):
            jac = torch.cat([b.double() for b in blocks], dim=1)
            tol = 1e-5 if any(b.dtype != torch.float64 for b in blocks) else 1e-12
            exact = jac @ jac.T
            torch.testing.assert_close(gram_from_blocks(blocks), exact, rtol=tol, atol=tol * float(exact.trace()))
