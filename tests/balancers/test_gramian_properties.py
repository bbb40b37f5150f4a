"""Zoo-wide properties of the Gramian weightings: shape, finiteness, determinism, state, errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mtrl.balancers import BALANCERS, GramianWeighting, make_balancer
from mtrl.balancers.imtl import IMTL
from tests.balancers.zoo import zoo

GRAMIAN_KEYS = (
    "ew",
    "mgda",
    "mgda_ub",
    "pcgrad",
    "cagrad",
    "nash_mtl",
    "upgrad",
    "imtl_g",
    "imtl",
    "aligned_mtl",
    "aligned_mtl_ub",
)
ZOO = zoo()


@pytest.mark.parametrize("key", GRAMIAN_KEYS)
def test_every_gramian_balancer_is_finite_shaped_and_deterministic_on_the_zoo(key: str, device: torch.device) -> None:
    """Two fresh instances (same seed): ``aggregate(J)`` and ``weights(G)ᵀJ`` give identical ``d``."""
    for name, jac, losses in ZOO:
        num_tasks, num_params = jac.shape
        jac, losses = jac.to(device), losses.to(device)
        first = make_balancer(key, num_tasks)
        second = make_balancer(key, num_tasks)
        assert isinstance(first, GramianWeighting) and isinstance(second, GramianWeighting)
        d = first.aggregate(jac, losses)
        assert d.shape == (num_params,) and d.dtype == jac.dtype and d.device == jac.device, (key, name)
        assert bool(torch.isfinite(d).all()), (key, name)
        w = second.weights(jac @ jac.T, losses)
        assert w.shape == (num_tasks,) and w.dtype == torch.float64 and w.device == jac.device, (key, name)
        assert bool(torch.isfinite(w).all()), (key, name)
        if key == "ew":
            torch.testing.assert_close(d, w @ jac, rtol=1e-12, atol=1e-12 * float(jac.abs().max()))
        else:
            assert torch.equal(d, w @ jac), (key, name)
        if name.startswith("all_zero"):
            assert torch.equal(d, torch.zeros_like(d)), (key, name)


def test_float32_jacobian_gives_float32_direction_matching_float64() -> None:
    _, jac, losses = ZOO[[n for n, _, _ in ZOO].index("full_T10")]
    for key in GRAMIAN_KEYS:
        d32 = make_balancer(key, 10).aggregate(jac.float(), losses.float())  # type: ignore[attr-defined]
        d64 = make_balancer(key, 10).aggregate(jac.float().double(), losses)  # type: ignore[attr-defined]
        assert d32.dtype == torch.float32
        torch.testing.assert_close(d32, d64.float(), rtol=1e-5, atol=1e-6, msg=key)


def _next_outputs(balancer: GramianWeighting, jacs: list[Tensor], losses: Tensor) -> list[Tensor]:
    return [balancer.aggregate(jac, losses) for jac in jacs]


@pytest.mark.parametrize("key", ["pcgrad", "nash_mtl"])
def test_state_round_trip_continues_identically(key: str) -> None:
    jacs = [torch.randn(5, 16, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in range(6)]
    losses = torch.ones(5, dtype=torch.float64)
    kwargs = {"update_weights_every": 2} if key == "nash_mtl" else {"seed": 3}
    original = make_balancer(key, 5, **kwargs)
    assert isinstance(original, GramianWeighting) and original.stateful
    _next_outputs(original, jacs[:3], losses)
    restored = make_balancer(key, 5, **kwargs)
    fresh = make_balancer(key, 5, **kwargs)
    assert isinstance(restored, GramianWeighting) and isinstance(fresh, GramianWeighting)
    restored.load_state_dict(original.state_dict())
    for a, b in zip(_next_outputs(original, jacs[3:], losses), _next_outputs(restored, jacs[3:], losses), strict=True):
        assert torch.equal(a, b)
    original.reset()
    for a, b in zip(_next_outputs(original, jacs, losses), _next_outputs(fresh, jacs, losses), strict=True):
        assert torch.equal(a, b)


def _imtl_step(balancer: IMTL, raw: Tensor) -> Tensor:
    scaled = balancer.scalarize(raw)
    (log_scale,) = balancer.parameters()
    log_scale.grad = torch.autograd.grad(scaled.sum(), log_scale)[0]
    balancer.after_backward()
    return scaled.detach()


@pytest.mark.parametrize("key", ["imtl", "imtl_l"])
def test_imtl_state_round_trip_continues_identically(key: str) -> None:
    raw = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64)
    original = make_balancer(key, 3, lr=0.1)
    assert original.state_dict() == {}  # nothing learned yet (the learned-weights convention, _learned.py)
    for _ in range(3):
        _imtl_step(original, raw)  # type: ignore[arg-type]
    restored = make_balancer(key, 3, lr=0.1)
    restored.load_state_dict(original.state_dict())
    for _ in range(3):
        assert torch.equal(_imtl_step(original, raw), _imtl_step(restored, raw))  # type: ignore[arg-type]
    original.reset()
    assert original.parameters() == []


def test_stateless_balancers_reject_state() -> None:
    for key in ("ew", "mgda", "cagrad", "upgrad", "imtl_g", "aligned_mtl"):
        balancer = make_balancer(key, 2)
        assert not balancer.stateful and balancer.state_dict() == {}
        with pytest.raises(ValueError, match="stateless"):
            balancer.load_state_dict({"alpha": 1})


@pytest.mark.parametrize("key", ["imtl", "imtl_l"])
def test_positive_loss_methods_raise_on_non_positive_loss(key: str) -> None:
    balancer = make_balancer(key, 3)
    with pytest.raises(ValueError, match=r"strictly positive losses.*tasks \[1\]"):
        balancer.scalarize(torch.tensor([1.0, -0.5, 2.0]))
    with pytest.raises(ValueError, match="strictly positive"):
        balancer.check(torch.tensor([1.0, 0.0, 2.0]))


def test_mgda_loss_normalisation_needs_positive_losses() -> None:
    make_balancer("mgda", 2, normalization="l2").check(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="strictly positive"):
        make_balancer("mgda", 2, normalization="loss+").check(torch.tensor([1.0, -1.0]))


def test_make_balancer_rejects_unknown_names_and_hparams() -> None:
    with pytest.raises(ValueError, match=r"unknown balancer 'mgdaa'.*aligned_mtl.*upgrad"):
        make_balancer("mgdaa", 3)
    with pytest.raises(ValueError, match=r"unknown hyper-parameter.*\['alpha'\].*c=0.4, rescale=True"):
        make_balancer("cagrad", 3, alpha=0.5)
    assert all(key in BALANCERS for key in [*GRAMIAN_KEYS, "imtl_l"])


@pytest.mark.parametrize(
    ("key", "hparams", "match"),
    [
        ("mgda", {"normalization": "L2"}, r"normalization 'L2'.*\['none', 'l2', 'loss', 'loss\+'\]"),
        ("aligned_mtl", {"scale_mode": "max"}, r"scale_mode 'max'.*\['min', 'median', 'rmse'\]"),
        ("aligned_mtl", {"pref": [1.0, 2.0]}, "3 finite floats"),
        ("cagrad", {"c": -0.1}, "c must be"),
        ("nash_mtl", {"update_weights_every": 0}, "positive int"),
        ("upgrad", {"reg_eps": float("nan")}, "reg_eps"),
        ("imtl_l", {"lr": 0.0}, "lr must be"),
    ],
)
def test_invalid_hyper_parameter_values_raise_with_the_valid_choices(key: str, hparams: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_balancer(key, 3, **hparams)


def test_aggregate_rejects_wrong_shapes() -> None:
    balancer = make_balancer("mgda", 3)
    with pytest.raises(ValueError, match=r"jac must have shape \(T, P\) with T = 3"):
        balancer.aggregate(torch.zeros(2, 4), torch.ones(3))  # type: ignore[attr-defined]
