"""Loss weightings UW, DWA, RLW, FAMO and IMTL-L: zoo, determinism, state round-trip and method properties."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import Tensor

from mtrl.balancers import make_balancer
from mtrl.balancers.base import LossWeighting
from mtrl.balancers.dwa import DWA
from mtrl.balancers.famo import FAMO
from mtrl.balancers.rlw import RLW
from mtrl.balancers.uw import UW
from tests.balancers.zoo import TASK_COUNTS

NAMES = ("uw", "dwa", "rlw", "famo", "imtl_l")
POSITIVE_ONLY = ("uw", "dwa", "famo", "imtl_l")


def _loss_sets(T: int, device: torch.device) -> list[Tensor]:
    """Positive losses ``(T,)``: the zoo's linspace, and values spread over 1e-6 … 1e6."""
    spread = torch.logspace(-6, 6, T, dtype=torch.float64) if T > 1 else torch.ones(1, dtype=torch.float64)
    return [torch.linspace(0.5, 2.0, T, dtype=torch.float64).to(device), spread.to(device)]


def _step(balancer: LossWeighting, losses: Tensor, new_losses: Tensor | None = None) -> Tensor:
    """One engine-like step: scalarize, write ``.grad`` of the balancer's parameters, after_backward, post_step."""
    losses = losses.detach().requires_grad_(True)
    terms = balancer.scalarize(losses)
    params = balancer.parameters()
    if params:
        grads = torch.autograd.grad(terms.sum(), params, retain_graph=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
    balancer.after_backward()
    if balancer.needs_post_step_losses:
        balancer.post_step(new_losses if new_losses is not None else 0.9 * losses.detach())
    return terms.detach()


def _roundtrip(state: dict) -> dict:
    """Save and load a state dict the way a checkpoint does (``weights_only`` torch.load)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _loss_sequence(T: int, steps: int, device: torch.device, seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(0.2 + torch.rand(T, generator=g, dtype=torch.float64)).to(device) for _ in range(steps)]


# --- shared behaviour --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T", TASK_COUNTS)
def test_zoo_scalarize_shape_finite_differentiable(name: str, T: int, device: torch.device) -> None:
    for losses in _loss_sets(T, device):
        balancer = make_balancer(name, T, window=1) if name == "dwa" else make_balancer(name, T)
        assert isinstance(balancer, LossWeighting)
        for _ in range(3):  # DWA with window 1 uses loss ratios from the third call on
            x = losses.clone().requires_grad_(True)
            terms = balancer.scalarize(x)
            assert terms.shape == (T,)
            assert terms.device == losses.device
            assert torch.isfinite(terms).all()
            (grad,) = torch.autograd.grad(terms.sum(), x)
            assert torch.isfinite(grad).all()
            assert (grad > 0).all()  # every weighting keeps a positive weight on every loss
            if balancer.needs_post_step_losses:
                balancer.post_step(0.5 * losses)


@pytest.mark.parametrize("name", POSITIVE_ONLY)
def test_positive_loss_methods_reject_non_positive_losses(name: str) -> None:
    balancer = make_balancer(name, 3)
    assert balancer.positive_losses
    with pytest.raises(ValueError, match="strictly positive"):
        balancer.scalarize(torch.tensor([1.0, -0.5, 2.0]))
    with pytest.raises(ValueError, match="strictly positive"):
        balancer.scalarize(torch.tensor([1.0, 0.0, 2.0]))


def test_rlw_accepts_any_sign() -> None:
    assert not RLW.positive_losses
    terms = RLW(3).scalarize(torch.tensor([1.0, -0.5, 2.0]))
    assert torch.isfinite(terms).all()


@pytest.mark.parametrize("name", NAMES)
def test_wrong_loss_shape_raises(name: str) -> None:
    with pytest.raises(ValueError, match="shape"):
        make_balancer(name, 3).scalarize(torch.ones(4))


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_continues_identically(name: str, device: torch.device) -> None:
    T = 4
    hparams = {"window": 3} if name == "dwa" else {}
    first = make_balancer(name, T, **hparams)
    losses = _loss_sequence(T, 16, device)
    assert isinstance(first, LossWeighting)
    for step in range(8):
        _step(first, losses[step], 0.8 * losses[step])
    second = make_balancer(name, T, **hparams)
    assert isinstance(second, LossWeighting)
    second.load_state_dict(_roundtrip(first.state_dict()))
    for step in range(8, 16):
        a = _step(first, losses[step], 0.8 * losses[step])
        b = _step(second, losses[step], 0.8 * losses[step])
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reset_returns_to_initial_behaviour(name: str) -> None:
    T = 3
    hparams = {"window": 2} if name == "dwa" else {}
    balancer = make_balancer(name, T, **hparams)
    assert isinstance(balancer, LossWeighting)
    losses = _loss_sequence(T, 6, torch.device("cpu"))
    reference = [_step(balancer, x) for x in losses]
    balancer.reset()
    again = [_step(balancer, x) for x in losses]
    for a, b in zip(reference, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_bad_state_raises(name: str) -> None:
    with pytest.raises(ValueError):
        make_balancer(name, 3).load_state_dict({"nonsense": 1})


# --- UW ------------------------------------------------------------------------------------------------


def test_uw_formula_at_init() -> None:
    uw = UW(3, init_log_var=0.3)
    losses = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64)
    terms = uw.scalarize(losses)
    torch.testing.assert_close(terms, losses / (2 * math.exp(0.3)) + 0.15)
    assert uw.parameters()[0].dtype == torch.float64
    torch.testing.assert_close(uw.last_weights, torch.full((3,), 0.5 * math.exp(-0.3), dtype=torch.float64))


def test_uw_parameters_created_on_first_losses_device(device: torch.device) -> None:
    uw = UW(2)
    assert uw.parameters() == [] and uw.state_dict() == {}
    uw.scalarize(torch.ones(2, device=device))
    (s,) = uw.parameters()
    assert s.device == device and s.requires_grad and s.dtype == torch.float32


def test_uw_optimum_is_exp_s_equal_loss() -> None:
    """∂S_t/∂s_t = (1 − L_t e^{−s_t})/2 vanishes at e^{s} = L: its own Adam finds it, weights → 1/(2L)."""
    losses = torch.tensor([0.25, 1.0, 3.0], dtype=torch.float64)
    uw = UW(3)
    for _ in range(600):
        _step(uw, losses)
    (s,) = uw.parameters()
    torch.testing.assert_close(s.detach().exp(), losses, rtol=2e-2, atol=0)
    assert uw.last_weights is not None
    torch.testing.assert_close(uw.last_weights, 1 / (2 * losses), rtol=2e-2, atol=0)


# --- DWA -----------------------------------------------------------------------------------------------


def test_dwa_weights_follow_window_loss_ratios() -> None:
    T, window = 3, 2
    dwa = DWA(T, window=window)
    first = torch.tensor([[1.0, 2.0, 4.0], [3.0, 2.0, 2.0]], dtype=torch.float64)  # window means (2, 2, 3)
    second = torch.tensor([[1.0, 1.0, 3.0], [1.0, 3.0, 3.0]], dtype=torch.float64)  # window means (1, 2, 3)
    for losses in (*first, *second):
        dwa.scalarize(losses)
        torch.testing.assert_close(dwa.last_weights, torch.ones(T, dtype=torch.float64))  # < 2 windows done
    ratio = torch.tensor([1 / 2, 2 / 2, 3 / 3], dtype=torch.float64)
    expected = T * torch.exp(ratio / 2.0) / torch.exp(ratio / 2.0).sum()
    losses = torch.tensor([0.7, 0.8, 0.9], dtype=torch.float64, requires_grad=True)
    terms = dwa.scalarize(losses)
    assert dwa.last_weights is not None
    torch.testing.assert_close(dwa.last_weights, expected)
    torch.testing.assert_close(dwa.last_weights.sum(), torch.tensor(float(T), dtype=torch.float64))
    torch.testing.assert_close(terms, expected * losses.detach())
    (grad,) = torch.autograd.grad(terms.sum(), losses)
    torch.testing.assert_close(grad, expected)  # the weights are constants
    # The slowest-descending task (ratio 1) weighs more than the fastest (ratio 1/2).
    assert dwa.last_weights[1] > dwa.last_weights[0]
    dwa.scalarize(losses.detach())  # the weights stay constant inside a window
    torch.testing.assert_close(dwa.last_weights, expected)


def test_dwa_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="window"):
        DWA(2, window=0)
    with pytest.raises(ValueError, match="temp"):
        DWA(2, temp=0.0)


# --- RLW -----------------------------------------------------------------------------------------------


def test_rlw_weights_on_simplex_and_fresh_each_step() -> None:
    rlw = RLW(5, seed=3)
    losses = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    seen = []
    for _ in range(20):
        terms = rlw.scalarize(losses)
        w = rlw.last_weights
        assert w is not None
        assert (w > 0).all()
        torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
        torch.testing.assert_close(terms, w * losses)
        seen.append(w)
    assert not torch.allclose(seen[0], seen[1])


def test_rlw_same_seed_same_weights_other_seed_different() -> None:
    losses = torch.ones(4)
    a, b, c = RLW(4, seed=7), RLW(4, seed=7), RLW(4, seed=8)
    for _ in range(5):
        torch.testing.assert_close(a.scalarize(losses), b.scalarize(losses), rtol=0, atol=0)
    assert not torch.equal(a.scalarize(losses), c.scalarize(losses))


# --- FAMO ----------------------------------------------------------------------------------------------


def test_famo_objective_and_effective_weights() -> None:
    """Uniform z at start: S_t = c z_t log L_t, and ∂ΣS/∂L_t = c z_t / L_t sums to 1."""
    T = 3
    losses = torch.tensor([0.5, 1.0, 4.0], dtype=torch.float64, requires_grad=True)
    famo = FAMO(T)
    terms = famo.scalarize(losses)
    c = 1.0 / (torch.full((T,), 1 / T, dtype=torch.float64) / losses.detach()).sum()
    torch.testing.assert_close(terms, c / T * losses.detach().log())
    (grad,) = torch.autograd.grad(terms.sum(), losses)
    torch.testing.assert_close(grad.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(grad, famo.last_weights)
    assert famo.parameters() == []  # the logits move only in post_step


def test_famo_post_step_favours_the_task_that_decreased_least() -> None:
    T = 3
    famo = FAMO(T, w_lr=0.025, gamma=1e-3)
    before = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    after = torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)  # task 2 decreased least
    famo.scalarize(before)
    famo.post_step(after)
    z = famo.task_probs()
    assert z is not None
    assert z[2] > z[1] > z[0]
    # One Adam step from ξ = 0 (weight decay γ·0 = 0) moves each logit by −lr·sign(δ_t),
    # δ = J_softmax(0)ᵀ Δ computed here by autograd.
    logits = torch.zeros(T, dtype=torch.float64, requires_grad=True)
    (delta,) = torch.autograd.grad(torch.softmax(logits, 0), logits, grad_outputs=before.log() - after.log())
    assert famo.logits is not None
    torch.testing.assert_close(famo.logits.detach(), -0.025 * torch.sign(delta), rtol=1e-6, atol=1e-9)


def test_famo_equal_decrease_keeps_uniform_weights() -> None:
    famo = FAMO(4, gamma=0.0)
    for _ in range(10):
        losses = torch.tensor([0.3, 1.0, 2.0, 5.0], dtype=torch.float64)
        famo.scalarize(losses)
        famo.post_step(0.7 * losses)  # every log-loss drops by the same log(1/0.7)
    z = famo.task_probs()
    assert z is not None
    torch.testing.assert_close(z, torch.full((4,), 0.25, dtype=torch.float64))


def test_famo_post_step_needs_a_preceding_scalarize() -> None:
    famo = FAMO(2)
    with pytest.raises(RuntimeError, match="scalarize"):
        famo.post_step(torch.ones(2))
    famo.scalarize(torch.ones(2))
    famo.post_step(torch.ones(2))
    with pytest.raises(RuntimeError, match="scalarize"):
        famo.post_step(torch.ones(2))
    famo.scalarize(torch.ones(2))
    with pytest.raises(ValueError, match="strictly positive"):
        famo.post_step(torch.tensor([1.0, -1.0]))
