"""Gradient-level balancers GradNorm, GradDrop and TaskTensioner: zoo, determinism, state and maths."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import Tensor

from mtrl.balancers import make_balancer
from mtrl.balancers._qp import min_norm_simplex
from mtrl.balancers.base import GradientBalancer
from mtrl.balancers.graddrop import GradDrop
from mtrl.balancers.gradnorm import GradNorm
from mtrl.balancers.task_tensioner import TaskTensioner, edm_direction
from tests.balancers.zoo import PINNED_JAC, PINNED_LOSSES, full_rank, repeated_directions, zoo

NAMES = ("gradnorm", "graddrop", "task_tensioner")
ZOO = zoo()


def _roundtrip(state: dict) -> dict:
    """Save and load a state dict the way a checkpoint does (``weights_only`` torch.load)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _jac_sequence(T: int, P: int, steps: int, seed: int, scale: float = 1.0) -> list[tuple[Tensor, Tensor]]:
    """Seeded ``(jac (T, P), losses (T,))`` pairs: gradient norms and losses that vary between steps."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        jac = scale * torch.randn(T, P, generator=g, dtype=torch.float64) * (0.5 + torch.rand(T, 1, generator=g))
        losses = 0.2 + 3.0 * torch.rand(T, generator=g, dtype=torch.float64)
        out.append((jac, losses))
    return out


# --- shared behaviour --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_zoo_shape_and_finite(name: str, device: torch.device) -> None:
    """Every zoo member, for enough calls that the stateful methods reach their steady-state branch."""
    for member, jac, losses in ZOO:
        T, P = jac.shape
        balancer = make_balancer(name, T)
        assert isinstance(balancer, GradientBalancer)
        for _ in range(12):  # task_tensioner: K = 10 EDM calls, then tensions
            d = balancer.aggregate(jac.to(device), losses.to(device))
            assert d.shape == (P,), member
            assert d.dtype == jac.dtype and d.device == device, member
            assert torch.isfinite(d).all(), member


@pytest.mark.parametrize("name", NAMES)
def test_float32_input_gives_float32_output(name: str) -> None:
    jac, losses = full_rank(3, 8, seed=1).float(), torch.tensor([0.5, 1.0, 2.0])
    balancer = make_balancer(name, 3)
    assert isinstance(balancer, GradientBalancer)
    d = balancer.aggregate(jac, losses)
    assert d.dtype == torch.float32 and torch.isfinite(d).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_outputs(name: str) -> None:
    sequence = _jac_sequence(4, 16, 14, seed=5)
    a, b = make_balancer(name, 4), make_balancer(name, 4)
    assert isinstance(a, GradientBalancer) and isinstance(b, GradientBalancer)
    for jac, losses in sequence:
        torch.testing.assert_close(a.aggregate(jac, losses), b.aggregate(jac, losses), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_continues_identically(name: str) -> None:
    sequence = _jac_sequence(3, 10, 24, seed=11)
    first = make_balancer(name, 3)
    assert isinstance(first, GradientBalancer)
    for jac, losses in sequence[:12]:
        first.aggregate(jac, losses)
    second = make_balancer(name, 3)
    assert isinstance(second, GradientBalancer)
    second.load_state_dict(_roundtrip(first.state_dict()))
    for jac, losses in sequence[12:]:
        torch.testing.assert_close(first.aggregate(jac, losses), second.aggregate(jac, losses), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reset_returns_to_initial_behaviour(name: str) -> None:
    sequence = _jac_sequence(3, 6, 13, seed=2)
    balancer = make_balancer(name, 3)
    assert isinstance(balancer, GradientBalancer)
    reference = [balancer.aggregate(jac, losses) for jac, losses in sequence]
    balancer.reset()
    for (jac, losses), d in zip(sequence, reference, strict=True):
        torch.testing.assert_close(balancer.aggregate(jac, losses), d, rtol=0, atol=0)


@pytest.mark.parametrize("name", ("gradnorm", "task_tensioner"))
def test_positive_loss_methods_reject_non_positive_losses(name: str) -> None:
    balancer = make_balancer(name, 2)
    assert isinstance(balancer, GradientBalancer) and balancer.positive_losses
    with pytest.raises(ValueError, match="strictly positive"):
        balancer.aggregate(PINNED_JAC, torch.tensor([0.5, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("name", NAMES)
def test_bad_shapes_and_state_raise(name: str) -> None:
    balancer = make_balancer(name, 2)
    assert isinstance(balancer, GradientBalancer)
    with pytest.raises(ValueError, match="shape"):
        balancer.aggregate(torch.ones(3, 4), PINNED_LOSSES)
    with pytest.raises(ValueError):
        balancer.load_state_dict({"nonsense": 1})


# --- GradNorm ------------------------------------------------------------------------------------------


def test_gradnorm_first_weights_are_ones_and_aggregate_is_weighted_sum() -> None:
    gradnorm = GradNorm(2)
    d = gradnorm.aggregate(PINNED_JAC, PINNED_LOSSES)
    torch.testing.assert_close(d, PINNED_JAC.sum(dim=0))  # w(0) = 1
    assert gradnorm.task_weights is not None
    w = gradnorm.task_weights.detach().clone()  # updated (and renormalised to sum T) by the first call
    torch.testing.assert_close(w.sum(), torch.tensor(2.0, dtype=torch.float64))
    assert not torch.equal(w, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(gradnorm.aggregate(PINNED_JAC, PINNED_LOSSES), w @ PINNED_JAC)


def test_gradnorm_equalises_weighted_gradient_norms_on_fixed_gramian() -> None:
    """With constant losses r_t = 1: the target is the mean weighted norm, so w_t ‖g_t‖ equalise."""
    norms = torch.tensor([1.0, 2.0, 5.0, 0.5], dtype=torch.float64)
    gram = torch.diag(norms**2)
    losses = torch.tensor([1.0, 0.3, 2.0, 0.7], dtype=torch.float64)
    gradnorm = GradNorm(4)
    spreads = []
    for _ in range(300):
        w = gradnorm.weights(gram, losses)
        torch.testing.assert_close(w.sum(), torch.tensor(4.0, dtype=torch.float64))
        weighted = w * norms
        spreads.append(float(weighted.std() / weighted.mean()))
    assert spreads[-1] < 0.05 < spreads[0]
    assert spreads[-1] < spreads[50] < spreads[0]
    ideal = 4 * (1 / norms) / (1 / norms).sum()  # w ∝ 1/‖g_t‖, Σ w = T
    torch.testing.assert_close(w, ideal, rtol=0.05, atol=0)


def test_gradnorm_favours_the_task_that_trains_slowest() -> None:
    """Equal gradient norms: the task whose loss ratio L/L(0) stays highest (r_t > 1) gets more weight."""
    gram = torch.eye(3, dtype=torch.float64)
    gradnorm = GradNorm(3, alpha=1.5)
    gradnorm.weights(gram, torch.ones(3, dtype=torch.float64))  # L(0) = 1
    for _ in range(100):
        w = gradnorm.weights(gram, torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64))
    assert w[0] > w[1] > w[2]


def test_gradnorm_zero_gramian_keeps_weights() -> None:
    gradnorm = GradNorm(3)
    for _ in range(3):
        w = gradnorm.weights(torch.zeros(3, 3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(w, torch.ones(3, dtype=torch.float64))


# --- GradDrop ------------------------------------------------------------------------------------------


def test_graddrop_coordinates_are_sums_of_same_sign_components() -> None:
    jac = full_rank(5, 400, seed=3)
    d = GradDrop(5, seed=1).aggregate(jac, torch.ones(5))
    positive = jac.clamp(min=0).sum(dim=0)
    negative = jac.clamp(max=0).sum(dim=0)
    kept_positive = d == positive
    kept_negative = d == negative
    assert bool((kept_positive | kept_negative).all())  # each d_p sums the components of one sign
    assert bool((d[kept_positive & ~kept_negative] > 0).all()) and bool((d[kept_negative & ~kept_positive] < 0).all())
    # Both signs are chosen somewhere, more often the dominant one (probability P_p of keeping positives).
    purity = GradDrop(5).sign_purity(jac)
    assert 0 < int(kept_positive.sum()) < 400
    assert float(purity[kept_positive].mean()) > float(purity[kept_negative].mean())


def test_graddrop_sign_purity_formula() -> None:
    purity = GradDrop(2).sign_purity(PINNED_JAC)
    # columns: (1, −1) → ½(1 + 0/2); (0, 3) → 1; (2, 0.5) → 1
    torch.testing.assert_close(purity, torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(GradDrop(2).sign_purity(torch.zeros(2, 3)), torch.full((3,), 0.5))


def test_graddrop_agreeing_signs_give_the_sum() -> None:
    jac = full_rank(4, 50, seed=9)
    jac = jac.abs() * torch.sign(jac[0])  # every column has one sign
    torch.testing.assert_close(GradDrop(4, seed=2).aggregate(jac, torch.ones(4)), jac.sum(dim=0))


def test_graddrop_leak() -> None:
    jac = full_rank(3, 30, seed=4)
    torch.testing.assert_close(GradDrop(3, leak=1.0).aggregate(jac, torch.ones(3)), jac.sum(dim=0))
    no_leak = GradDrop(3, leak=0.0, seed=6).aggregate(jac, torch.ones(3))
    half = GradDrop(3, leak=0.5, seed=6).aggregate(jac, torch.ones(3))  # same U: d = ½ Σ g + ½ d(ℓ=0)
    torch.testing.assert_close(half, 0.5 * jac.sum(dim=0) + 0.5 * no_leak)
    with pytest.raises(ValueError, match="leak"):
        GradDrop(3, leak=1.5)


def test_graddrop_different_seeds_differ() -> None:
    jac = full_rank(3, 100, seed=4)
    assert not torch.equal(
        GradDrop(3, seed=0).aggregate(jac, torch.ones(3)), GradDrop(3, seed=1).aggregate(jac, torch.ones(3))
    )


# --- EDM min-norm solver and Task Tensioner ------------------------------------------------------------


def _numpy_min_norm(unit: np.ndarray) -> np.ndarray:
    """Independent min-norm point of the simplex hull of the rows (SLSQP, tight tolerance)."""
    T = unit.shape[0]
    gram = unit @ unit.T
    result = minimize(
        lambda c: c @ gram @ c,
        np.full(T, 1.0 / T),
        jac=lambda c: 2 * gram @ c,
        bounds=[(0.0, 1.0)] * T,
        constraints=[{"type": "eq", "fun": lambda c: c.sum() - 1.0}],
        method="SLSQP",
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    return result.x


@pytest.mark.parametrize("T", [2, 3, 10, 50])
def test_min_norm_simplex_satisfies_kkt(T: int) -> None:
    for member, jac, _ in zoo((T,)):
        norms = jac.norm(dim=1)
        if bool((norms == 0).any()):
            continue
        unit = (jac / norms[:, None]).numpy()
        gram = unit @ unit.T
        c = min_norm_simplex(gram)
        assert (c >= 0).all() and abs(c.sum() - 1) < 1e-12, member
        grad = gram @ c
        value = c @ grad
        assert grad.min() >= value - 1e-10, member  # no vertex beyond the supporting hyperplane
        assert np.abs(grad[c > 1e-9] - value).max() <= 1e-10, member  # equal on the support


def test_edm_direction_matches_independent_solution() -> None:
    jac = full_rank(4, 6, seed=21) * torch.tensor([[0.1], [1.0], [3.0], [0.5]], dtype=torch.float64)
    d_star, w = edm_direction(jac)
    norms = jac.norm(dim=1).numpy()
    c = _numpy_min_norm(jac.numpy() / norms[:, None])
    expected = (c / norms) @ jac.numpy() / (c / norms).sum()
    np.testing.assert_allclose(d_star.numpy(), expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(w @ jac, d_star)
    # T = 2, equal norms: d* is the mean of the two gradients (Gama & Grassi 2025, Prop. 4).
    pair = torch.tensor([[3.0, 4.0, 0.0], [0.0, -5.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(edm_direction(pair)[0], pair.mean(dim=0))


def _tie_cases() -> dict[str, tuple[Tensor, Tensor | None]]:
    """Jacobians whose EDM simplex weights ``c`` are not unique (coinciding unit directions of different
    norms), with the expected ``d*`` where it has a closed form (``None``: compared with itself only)."""
    g, h = full_rank(2, 16, seed=31)
    scales = torch.tensor([0.5, 1.0, 2.0, 5.0], dtype=torch.float64)
    harmonic = len(scales) / float((1.0 / scales).sum())
    return {
        # two identical gradients: c = (½, ½) whatever split, d* = g
        "identical_T2": (torch.stack([g, g]), g),
        # one direction, norms 1 and 3: d* = γ u with γ the harmonic mean of the norms, 1.5
        "same_direction_T2": (torch.stack([g, 3 * g]), 1.5 * g),
        # rank 1, positive multiples: d* = harmonic mean of the multiples times g
        "rank1_positive_T4": (scales[:, None] * g, harmonic * g),
        # rank 1, both signs: the origin is in the hull, d* = 0
        "rank1_signed_T4": (torch.tensor([0.5, -1.0, 2.0, -5.0], dtype=torch.float64)[:, None] * g, 0 * g),
        # a coinciding pair next to a distinct gradient
        "pair_and_other_T3": (torch.stack([g, 3 * g, h]), None),
        # three directions, each repeated twice with norms over 1e-2 … 1e2
        "repeated_T6": (repeated_directions(6, 16, 3, seed=33), None),
    }


@pytest.mark.parametrize("case", sorted(_tie_cases()))
def test_edm_direction_at_ties_does_not_depend_on_rounding_or_task_order(case: str) -> None:
    """Where unit directions coincide the EDM ``c`` is not unique; ``edm_direction`` splits a class of
    coinciding directions' weight equally, so ``d*`` and ``w`` do not move when the rows are perturbed at
    the 1e-15 relative level (as a different CPU's rounding does) and the tasks reordered. A solver's
    tie-break moves ``d*`` by ``O(‖J‖)`` here (its scale ``γ`` switches between the norms, up to 10×).
    Tolerance 1e-12 relative to ``‖J‖``: the perturbation moves the canonical ``d*`` by ~1e-15 and float64
    rounding of these ``T ≤ 6`` sums adds ~1e-15, so a 1000× margin."""
    jac, expected = _tie_cases()[case]
    T, scale = jac.shape[0], float(jac.norm())
    d_ref, w_ref = edm_direction(jac)
    if expected is not None:
        torch.testing.assert_close(d_ref, expected, rtol=0, atol=1e-12 * scale)
    torch.testing.assert_close(w_ref @ jac, d_ref, rtol=0, atol=1e-12 * scale)
    g = torch.Generator().manual_seed(7)
    for draw in range(8):
        noise = 1e-15 * torch.randn(jac.shape, generator=g, dtype=torch.float64)
        perm = torch.randperm(T, generator=g)
        d, w = edm_direction((jac * (1.0 + noise))[perm])
        what = f"{case}, draw {draw}, order {perm.tolist()}"
        torch.testing.assert_close(d, d_ref, rtol=0, atol=1e-12 * scale, msg=what)
        torch.testing.assert_close(w, w_ref[perm], rtol=0, atol=1e-12, msg=what)


def test_task_tensioner_at_ties_does_not_depend_on_rounding() -> None:
    """The whole method over EDM and tension steps (window 2) on a coinciding pair next to a distinct
    gradient: rows perturbed at the 1e-15 relative level give the same ``d`` to 1e-12 of its scale
    (``‖J‖`` plus the ``T`` unit tensions)."""
    jac, _ = _tie_cases()["pair_and_other_T3"]
    g = torch.Generator().manual_seed(8)
    losses = torch.tensor([1.0, 0.9, 1.1], dtype=torch.float64)
    sequence = [(jac * (1.0 + 0.5 * k), losses ** (k + 1)) for k in range(5)]
    reference = TaskTensioner(3, window=2)
    d_ref = [reference.aggregate(j, losses) for j, losses in sequence]
    for draw in range(4):
        tensioner = TaskTensioner(3, window=2)
        for k, (j, losses) in enumerate(sequence):
            noisy = j * (1.0 + 1e-15 * torch.randn(j.shape, generator=g, dtype=torch.float64))
            d = tensioner.aggregate(noisy, losses)
            atol = 1e-12 * (float(j.norm()) + 3.0)
            torch.testing.assert_close(d, d_ref[k], rtol=0, atol=atol, msg=f"draw {draw}, call {k}")


def _numpy_task_tensioner(
    sequence: list[tuple[Tensor, Tensor]], alpha: float, window: int
) -> tuple[list[np.ndarray], int]:
    """The official rule (tiemink/MTL_TaskTensioner, history_directions.py) re-computed in NumPy."""
    T = sequence[0][0].shape[0]
    buffer = np.zeros((T, window))
    previous: np.ndarray | None = None
    iterations, checks, outputs = 0, 0, []

    def angle(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0)))

    for jac_t, losses_t in sequence:
        jac, losses = jac_t.numpy(), losses_t.numpy()
        norms = np.linalg.norm(jac, axis=1)
        c = _numpy_min_norm(jac / norms[:, None])
        direction = (c / norms) @ jac / (c / norms).sum()
        buffer[:, iterations % window] = norms
        iterations += 1
        if iterations >= window:
            sums = buffer.sum(axis=1)
            if previous is not None:
                tension_vector = direction.copy()
                for t in range(T):
                    p = sums[t] / previous[t] + np.log10(losses[t])
                    tension = max(0.0, alpha / (1 + np.exp(-p * np.exp(1) + np.exp(1))) + 1 - alpha)
                    diff = jac[t] - direction
                    tension_vector += tension * diff / np.linalg.norm(diff)
                for t in range(T):
                    if angle(jac[t], tension_vector) * 180 / np.pi > 90:
                        checks += 1
                        unit = jac[t] / np.linalg.norm(jac[t])
                        w = tension_vector - (tension_vector @ unit) * unit
                        beta = np.pi - angle(jac[t], tension_vector - jac[t])
                        tension_vector = np.tan(beta) * np.linalg.norm(jac[t]) * w / np.linalg.norm(w)
                direction = tension_vector
            previous = sums
        outputs.append(direction)
    return outputs, checks


@pytest.mark.parametrize(("T", "scale", "seed"), [(3, 0.3, 0), (5, 1.0, 1), (2, 0.05, 2)])
def test_task_tensioner_matches_numpy_recomputation(T: int, scale: float, seed: int) -> None:
    window = 4
    sequence = _jac_sequence(T, 7, 16, seed=seed, scale=scale)
    expected, checks = _numpy_task_tensioner(sequence, alpha=0.3, window=window)
    tensioner = TaskTensioner(T, alpha=0.3, window=window)
    for k, ((jac, losses), want) in enumerate(zip(sequence, expected, strict=True)):
        d = tensioner.aggregate(jac, losses)
        np.testing.assert_allclose(d.numpy(), want, rtol=1e-5, atol=1e-7 * scale, err_msg=f"call {k}")
        if k < window:  # the first K calls: the EDM direction itself
            assert tensioner.last_tensions is None
            torch.testing.assert_close(d, edm_direction(jac)[0])
        else:
            assert tensioner.last_tensions is not None
    if T > 2:
        assert checks > 0  # the "check direction" branch was exercised


def test_task_tensioner_tension_factor() -> None:
    tensioner = TaskTensioner(3, alpha=0.3)
    ones = torch.ones(3, dtype=torch.float64)
    # δ = 1 (steady norms, L = 1): c = 1 − α/2; tensions stay in (1 − α, 1).
    torch.testing.assert_close(tensioner.tensions(ones, ones, ones), torch.full((3,), 0.85, dtype=torch.float64))
    c = tensioner.tensions(ones, ones, torch.tensor([1e-9, 1.0, 1e9], dtype=torch.float64))
    assert 0.7 < c[0] < c[1] < c[2] < 1.0
    expected = 0.3 / (1 + math.exp(-(2.0 + math.log10(1.0)) * math.e + math.e)) + 0.7
    torch.testing.assert_close(tensioner.tensions(2 * ones, ones, ones)[0], torch.tensor(expected, dtype=torch.float64))


def test_task_tensioner_check_direction_gives_non_conflicting_update() -> None:
    """After the check, v · g_t ≥ 0 holds for the last checked task (it lies on or above g_t^⊥)."""
    jac = torch.tensor([[1.0, 0.0], [-1.0, 0.1]], dtype=torch.float64)
    d_star = edm_direction(jac)[0]
    v = TaskTensioner.tension_direction(jac, d_star, torch.ones(2, dtype=torch.float64))
    assert float(v @ jac[1]) >= -1e-12
    assert torch.isfinite(v).all()


def test_task_tensioner_zero_gradient_gives_zero_direction_and_keeps_state() -> None:
    tensioner = TaskTensioner(3, window=2)
    sequence = _jac_sequence(3, 5, 3, seed=8)
    for jac, losses in sequence:
        tensioner.aggregate(jac, losses)
    before = tensioner.state_dict()
    jac = sequence[0][0].clone()
    jac[1] = 0.0
    d = tensioner.aggregate(jac, sequence[0][1])
    torch.testing.assert_close(d, torch.zeros(5, dtype=torch.float64))
    after = tensioner.state_dict()
    assert after["steps"] == before["steps"]
    torch.testing.assert_close(after["norm_buffer"], before["norm_buffer"])


def test_task_tensioner_single_task_is_plain_gradient() -> None:
    tensioner = TaskTensioner(1, window=2)
    for jac, losses in _jac_sequence(1, 6, 5, seed=4):
        torch.testing.assert_close(tensioner.aggregate(jac, losses), jac[0])


def test_task_tensioner_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="window"):
        TaskTensioner(2, window=0)
    with pytest.raises(ValueError, match="alpha"):
        TaskTensioner(2, alpha=-0.1)


@pytest.mark.parametrize(("T", "scale", "seed"), [(3, 0.3, 0), (5, 1.0, 1), (2, 0.05, 2)])
def test_task_tensioner_last_weights_reproduce_the_direction(T: int, scale: float, seed: int) -> None:
    """``d = last_weightsᵀJ`` on every call: EDM steps, tension steps and direction checks (the engine
    reports these as the task weights)."""
    window = 4
    sequence = _jac_sequence(T, 7, 16, seed=seed, scale=scale)
    _, checks = _numpy_task_tensioner(sequence, alpha=0.3, window=window)
    tensioner = TaskTensioner(T, alpha=0.3, window=window)
    for k, (jac, losses) in enumerate(sequence):
        d = tensioner.aggregate(jac, losses)
        w = tensioner.last_weights
        assert w is not None and w.shape == (T,) and w.dtype == torch.float64
        torch.testing.assert_close(w @ jac, d, rtol=1e-10, atol=1e-12 * float(jac.abs().max()), msg=f"call {k}")
        if k < window:
            assert tensioner.last_edm_weights is not None
            torch.testing.assert_close(w, tensioner.last_edm_weights)
    assert T == 2 or checks > 0
    zero = sequence[0][0].clone()
    zero[0] = 0.0
    tensioner.aggregate(zero, sequence[0][1])
    assert torch.equal(tensioner.last_weights, torch.zeros(T, dtype=torch.float64))
