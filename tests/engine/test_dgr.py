"""DGR through the engine: λ = 0 is the base balancer; exact ∇θR is the double-backward value; fd agrees."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from mtrl.balancers.dgr import DGR
from mtrl.engine import GradientEngine, make_loss_fn
from tests.engine.helpers import GramTestWeighting, Problem, assert_close_lists, grads_of, make_problem


def _run(prob: Problem, balancer: DGR | GramTestWeighting) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    prob.clear_grads()
    report = GradientEngine(balancer, "reference").backward(
        prob.forward(), prob.shared(), prob.task(), loss_fn=prob.loss_fn(), heads=prob.heads()
    )
    return grads_of(prob.shared()), grads_of(prob.task()), report.extra.get("dgr_reg", 0.0)


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def _expected_reg_grad(prob: Problem, dummies: list[list[torch.Tensor]], lam: float) -> list[torch.Tensor]:
    """∇θ (λ/N) Σ_n ‖∇_φ̃ Σ_t L_t(θ, φ̃ⁿ)‖², independently with torch.func."""
    names = [n for n, _ in prob.net.named_parameters()]
    shared_names = [n for n in names if n.startswith("trunk.")]
    head_names = [n for n in names if n.startswith("heads.")]
    theta = tuple(p.detach() for n, p in prob.net.named_parameters() if n.startswith("trunk."))

    def dummy_loss(th: tuple[torch.Tensor, ...], phi: tuple[torch.Tensor, ...]) -> torch.Tensor:
        params = dict(zip(shared_names, th, strict=True)) | dict(zip(head_names, phi, strict=True))
        return prob.losses(functional_call(prob.net, params, (prob.x,))).sum()

    def reg(th: tuple[torch.Tensor, ...]) -> torch.Tensor:
        total = torch.zeros((), dtype=prob.x.dtype)
        for phi in dummies:
            head_grads = grad(dummy_loss, argnums=1)(th, tuple(d.detach() for d in phi))
            total = total + sum((g * g).sum() for g in head_grads)
        return lam / len(dummies) * total

    return [g.detach() for g in grad(reg)(theta)]


def test_dgr_lambda_zero_equals_base() -> None:
    prob = make_problem(T=3)
    base_shared, base_task, _ = _run(prob, GramTestWeighting(3))
    shared, task, reg = _run(prob, DGR(3, base=GramTestWeighting(3), lam=0.0))
    assert reg == 0.0
    for a, b in zip(shared + task, base_shared + base_task, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("num_dummy", [1, 2])
def test_dgr_exact_matches_func_and_heads_get_nothing(num_dummy: int) -> None:
    prob = make_problem(T=3)
    base_shared, base_task, _ = _run(prob, GramTestWeighting(3))
    balancer = DGR(3, base=GramTestWeighting(3), lam=0.5, num_dummy=num_dummy, seed=3)
    shared, task, reg = _run(prob, balancer)
    assert balancer.dummies is not None and len(balancer.dummies) == num_dummy
    expected = _expected_reg_grad(prob, balancer.dummies, lam=0.5)
    reg_grad = [a - b for a, b in zip(shared, base_shared, strict=True)]
    assert_close_lists(reg_grad, expected, rtol=1e-9)
    assert float(_flat(reg_grad).norm()) > 1e-3 * float(_flat(base_shared).norm())  # the term is not negligible
    for a, b in zip(task, base_task, strict=True):
        assert torch.equal(a, b)
    assert reg > 0


def test_dgr_fd_agrees_with_exact_to_first_order_in_eps() -> None:
    """The official two-point estimate has O(ε) truncation error: in float64 the
    error must shrink ~10× per 10× smaller ε, and at ε = 1e-5 be below 1e-3 relative."""
    prob = make_problem(T=3)
    exact, _, reg_exact = _run(prob, DGR(3, base=GramTestWeighting(3), lam=1.0, mode="exact"))
    errors = []
    for eps in (1e-3, 1e-4, 1e-5):
        fd, _, reg_fd = _run(prob, DGR(3, base=GramTestWeighting(3), lam=1.0, mode="fd", eps=eps))
        errors.append(float((_flat(fd) - _flat(exact)).norm() / _flat(exact).norm()))
        assert reg_fd == pytest.approx(reg_exact, rel=1e-12)
    assert errors[2] < 1e-3
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5


def test_dgr_fd_guard_zero_head_gradient() -> None:
    prob = make_problem(T=2)
    balancer = DGR(2, base=GramTestWeighting(2), lam=1.0, mode="fd")
    loss_fn = prob.loss_fn()
    for zero_loss in (
        lambda s, t: loss_fn(s, t) * 0.0,  # dummies used, head gradient exactly zero
        lambda s, t: (prob.net(prob.x) * 0.0).sum(dim=(1, 2)),  # dummies not even used
    ):
        grads, reg = balancer.regularizer_gradient(prob.shared(), prob.task(), prob.heads(), zero_loss)
        assert reg == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)


def test_dgr_dummy_init_and_state_roundtrip() -> None:
    prob = make_problem(T=3)
    balancer = DGR(3, base=GramTestWeighting(3), seed=7)
    dummies = balancer.dummy_heads(prob.heads())
    weight, bias = (d.detach() for d in dummies[0])
    fan_in = prob.net.heads.in_features
    assert weight.shape == prob.net.heads.weight.shape and bias.shape == prob.net.heads.bias.shape
    assert float(weight.abs().max()) <= 1 / math.sqrt(fan_in) and float(bias.abs().max()) <= 1 / math.sqrt(fan_in)
    assert float(weight.std()) > 0.3 / math.sqrt(fan_in)  # spread over the interval, not a constant
    assert dummies[0][0].requires_grad and not torch.equal(weight, prob.net.heads.weight.detach())
    again = DGR(3, base=GramTestWeighting(3), seed=7).dummy_heads(prob.heads())
    assert all(torch.equal(a, b) for a, b in zip(dummies[0], again[0], strict=True))
    restored = DGR(3, base=GramTestWeighting(3), seed=99)
    restored.load_state_dict(balancer.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.dummy_heads(prob.heads())[0], dummies[0], strict=True))
    with pytest.raises(ValueError, match=r"exactly the keys \[.base., .dummies.\]"):
        restored.load_state_dict({"nope": 1})


def test_dgr_errors() -> None:
    prob = make_problem(T=3)
    with pytest.raises(ValueError, match="needs loss_fn"):
        GradientEngine(DGR(3, base=GramTestWeighting(3))).backward(prob.forward(), prob.shared(), prob.task())
    with pytest.raises(ValueError, match="valid modes: exact, fd"):
        DGR(3, base=GramTestWeighting(3), mode="fast")  # type: ignore[arg-type]
    for kwargs in ({"lam": -1.0}, {"num_dummy": 0}, {"eps": 0.0}):
        with pytest.raises(ValueError):
            DGR(3, base=GramTestWeighting(3), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_tasks"):
        DGR(3, base=GramTestWeighting(2))
    with pytest.raises(ValueError, match="cannot be 'dgr'"):
        DGR(3, base="dgr")
    with pytest.raises(ValueError, match="needs task-specific parameters"):
        DGR(3, base=GramTestWeighting(3)).dummy_heads([torch.nn.ReLU()])


def _dgr_grads(T: int, mode: str, base: str) -> tuple[list[torch.Tensor], float]:
    prob = make_problem(T=T, n=2, seed=T)
    report = GradientEngine(DGR(T, base=base, lam=0.5, mode=mode, seed=1), "reference").backward(  # type: ignore[arg-type]
        prob.forward(), prob.shared(), prob.task(), loss_fn=prob.loss_fn(), heads=prob.heads()
    )
    return grads_of(prob.shared()) + grads_of(prob.task()), report.extra["dgr_reg"]


@pytest.mark.parametrize(("mode", "base"), [("exact", "ew"), ("fd", "ew"), ("exact", "mgda")])
@pytest.mark.parametrize("T", [1, 2, 3, 10, 50])
def test_dgr_shapes_finite_and_deterministic(T: int, mode: str, base: str) -> None:
    grads, reg = _dgr_grads(T, mode, base)
    prob = make_problem(T=T, n=2, seed=T)
    for g, p in zip(grads, prob.shared() + prob.task(), strict=True):
        assert g.shape == p.shape and g.dtype == p.dtype and bool(torch.isfinite(g).all())
    assert math.isfinite(reg) and reg > 0
    again, reg_again = _dgr_grads(T, mode, base)
    assert all(torch.equal(a, b) for a, b in zip(grads, again, strict=True)) and reg == reg_again


def _train(prob: Problem, engine: GradientEngine, optimizer: torch.optim.Optimizer, steps: int) -> list[torch.Tensor]:
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        engine.backward(prob.forward(), prob.shared(), prob.task(), loss_fn=prob.loss_fn(), heads=prob.heads())
        optimizer.step()
    return [p.detach().clone() for p in prob.net.parameters()]


def test_dgr_state_round_trip_continues_training_identically() -> None:
    """Checkpoint after 3 steps (network, optimizer, DGR state with its base's), restore into fresh
    objects built with OTHER seeds, train 3 more steps: bit-identical parameters. The base is seeded
    PCGrad, whose generator state is part of the DGR state."""
    import copy
    import io

    def build(seed: int) -> tuple[Problem, DGR, GradientEngine, torch.optim.Optimizer]:
        prob = make_problem(T=3)
        balancer = DGR(3, base="pcgrad", base_hparams={"seed": seed}, lam=0.5, seed=seed)
        return prob, balancer, GradientEngine(balancer, "reference"), torch.optim.SGD(prob.net.parameters(), lr=0.05)

    prob, balancer, engine, optimizer = build(seed=5)
    _train(prob, engine, optimizer, 3)
    buffer = io.BytesIO()
    torch.save(
        {"net": prob.net.state_dict(), "opt": optimizer.state_dict(), "balancer": balancer.state_dict()}, buffer
    )
    expected = _train(prob, engine, optimizer, 3)

    def resume(load_balancer: bool) -> list[torch.Tensor]:
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=True)
        prob2, balancer2, engine2, optimizer2 = build(seed=99)
        prob2.net.load_state_dict(checkpoint["net"])
        optimizer2.load_state_dict(checkpoint["opt"])
        balancer2.load_state_dict(copy.deepcopy(checkpoint["balancer"]))
        if not load_balancer:  # the dummy heads only: the base PCGrad restarts its own (other) generator
            balancer2.base.reset()
        return _train(prob2, engine2, optimizer2, 3)

    assert all(torch.equal(a, b) for a, b in zip(resume(True), expected, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(resume(False), expected, strict=True))  # the base state matters


class _ConvHead(nn.Module):
    """A dense head with every layer kind whose default initialisation the dummies must reproduce."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
            nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, c_out, 1),
        )  # fmt: skip
        self.fc = nn.Linear(c_out, c_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(z).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNet(nn.Module):
    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleList([_ConvHead(16, 2) for _ in range(num_tasks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.trunk(x)
        return torch.stack([h(z) for h in self.heads])  # (T, B, 2, H, W)


def _conv_problem(num_tasks: int = 2) -> tuple[_ConvNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = _ConvNet(num_tasks).double()
    with torch.no_grad():  # real heads far from any default initialisation: the dummies must not copy them
        for head in net.heads:
            for p in head.parameters():
                p.fill_(5.0)
            for b in head.buffers():
                b.fill_(7)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 6, 5, generator=g, dtype=torch.float64)
    y = torch.randn(num_tasks, 4, 2, 6, 5, generator=g, dtype=torch.float64)
    return net, x, y


def test_dgr_dummy_heads_have_pytorch_default_initialisation() -> None:
    """Conv weights and biases ``U(±1/√(in·kh·kw))`` spread over the interval, Linear ``U(±1/√in)``, GroupNorm and
    BatchNorm weight 1 and bias 0, fresh BatchNorm statistics; seeded, independent of the real heads' values, and
    the global random state is untouched."""
    net, _, _ = _conv_problem()
    state = torch.get_rng_state()
    balancer = DGR(2, seed=3, num_dummy=2)
    sets = balancer.dummy_heads(list(net.heads))
    assert torch.equal(torch.get_rng_state(), state)
    assert len(sets) == 2 and not torch.equal(sets[0][0], sets[1][0])  # two independent draws
    names = [f"{n}" for n, _ in net.heads.named_parameters()] + [f"{n}" for n, _ in net.heads.named_buffers()]
    real = list(net.heads.parameters()) + list(net.heads.buffers())
    num_params = len(list(net.heads.parameters()))
    for dummies in sets:
        assert [tuple(d.shape) for d in dummies] == [tuple(r.shape) for r in real]
        values = dict(zip(names, dummies, strict=True))
        for t in range(2):
            for layer, fan_in in ((0, 3 * 3 * 16), (3, 3 * 3 * 8), (6, 8)):
                bound = 1 / math.sqrt(fan_in)  # 1/12 and 0.118 for the 3×3 convs (the old rule drew ±0.58)
                weight, bias = values[f"{t}.body.{layer}.weight"].detach(), values[f"{t}.body.{layer}.bias"].detach()
                assert float(weight.abs().max()) <= bound and float(bias.abs().max()) <= bound
                if weight.numel() > 500:  # U(±b) has std b/√3
                    assert 0.9 * bound / math.sqrt(3) < float(weight.std()) < 1.1 * bound / math.sqrt(3)
            fc_weight = values[f"{t}.fc.weight"].detach()
            assert float(fc_weight.abs().max()) <= 1 / math.sqrt(2) and float(fc_weight.abs().max()) > 0
            for norm in (1, 4):
                assert torch.equal(values[f"{t}.body.{norm}.weight"].detach(), torch.ones(8, dtype=torch.float64))
                assert torch.equal(values[f"{t}.body.{norm}.bias"].detach(), torch.zeros(8, dtype=torch.float64))
            assert torch.equal(values[f"{t}.body.4.running_mean"], torch.zeros(8, dtype=torch.float64))
            assert torch.equal(values[f"{t}.body.4.running_var"], torch.ones(8, dtype=torch.float64))
            assert int(values[f"{t}.body.4.num_batches_tracked"]) == 0
        assert all(d.requires_grad for d in dummies[:num_params])
        assert not any(d.requires_grad for d in dummies[num_params:])  # buffers
    again = DGR(2, seed=3, num_dummy=2).dummy_heads(list(net.heads))
    assert all(torch.equal(a, b) for sa, sb in zip(sets, again, strict=True) for a, b in zip(sa, sb, strict=True))


def test_dgr_dummy_batchnorm_keeps_its_own_statistics() -> None:
    """A dummy forward in train mode moves the dummy BatchNorm's running statistics, never the real head's; the
    regulariser is finite, positive and reaches only the shared trunk."""
    net, x, y = _conv_problem()
    real_stats = [b.clone() for b in net.heads.buffers()]
    shared, task = list(net.trunk.parameters()), list(net.heads.parameters())
    loss_fn = make_loss_fn(net, shared, task, lambda forward: ((forward(x) - y) ** 2).mean(dim=(1, 2, 3, 4)))
    balancer = DGR(2, seed=3)
    grads, reg = balancer.regularizer_gradient(shared, task, list(net.heads), loss_fn)
    assert reg > 0 and all(bool(torch.isfinite(g).all()) for g in grads) and float(grads[0].abs().max()) > 0
    assert all(torch.equal(a, b) for a, b in zip(real_stats, net.heads.buffers(), strict=True))
    assert balancer.dummies is not None
    running_mean = balancer.dummies[0][len(task)]  # the first buffer: head 0's BatchNorm running_mean
    assert float(running_mean.abs().max()) > 0 and int(balancer.dummies[0][len(task) + 2]) == 1


def test_dgr_refuses_heads_it_cannot_initialise() -> None:
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(3))

    with pytest.raises(ValueError, match=r"Scale owns parameters or buffers but has no reset_parameters"):
        DGR(2).dummy_heads([Scale()])
    prob = make_problem(T=3)
    with pytest.raises(ValueError, match="needs heads="):
        GradientEngine(DGR(3)).backward(prob.forward(), prob.shared(), prob.task(), loss_fn=prob.loss_fn())
