"""Property assertions in the style of torchjd's ``_property_testers``: one function per property a balancer
may claim, applied to the inputs of :func:`tests.balancers.zoo.property_zoo` by ``test_properties.py``.

Stateful balancers are compared over a sequence of steps (two fresh instances fed the same inputs, one with
the tasks permuted), so their state must permute with the tasks as well.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mtrl.balancers import Balancer, GradientBalancer, GramianWeighting, LossWeighting

#: relative tolerance of the permutation checks: a permutation only reorders float64 sums, but the
#: iterative solvers stop at their own accuracy (Nash-MTL's Newton: ~5e-9 on the weights).
PERMUTATION_RTOL = 1e-8
EPS = float(torch.finfo(torch.float64).eps)


def _sequence(jac: Tensor, losses: Tensor, steps: int) -> list[tuple[Tensor, Tensor]]:
    """``steps`` inputs around ``(jac, losses)`` whose row norms and losses change between steps (the
    stateful methods' histories then matter)."""
    g = torch.Generator().manual_seed(11)
    out = []
    for k in range(steps):
        scale = 1.0 + 0.5 * torch.rand(jac.shape[0], 1, generator=g, dtype=jac.dtype) if k else torch.ones(1, 1)
        out.append((jac * scale, losses * (1.0 + 0.3 * k)))
    return out


def _close(actual: Tensor, expected: Tensor, rtol: float, what: str, scale: float | None = None) -> None:
    """``actual ≈ expected`` to ``rtol`` relative to ``scale`` (default: ``max |expected|``); a ``d`` that is zero
    in exact arithmetic is compared against the scale its rounding has, ``‖J‖·Σ|w|``."""
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale, msg=what)


def unique_weights(jac: Tensor) -> bool:
    """True when ``d = Jᵀw`` determines ``w`` to working accuracy: ``J`` has full row rank with a condition number
    of ``G`` below 1e8 (otherwise weights differing by a (near-)null vector of ``G`` give the same ``d``)."""
    lam = torch.linalg.eigvalsh(jac @ jac.T)
    return float(lam[0]) > 1e-8 * float(lam[-1]) > 0


def kept_condition(jac: Tensor) -> float:
    """``λ_max / λ_R`` of ``G = JJᵀ`` over the eigenvalues above the ``T·eps`` cut-off (1 for ``J = 0``)."""
    lam = torch.linalg.eigvalsh(jac @ jac.T)
    if float(lam[-1]) <= 0:
        return 1.0
    kept = lam[lam > jac.shape[0] * EPS * lam[-1]]
    return float(lam[-1] / kept.min())


def assert_permutation_invariant(
    make: Callable[[], Balancer],
    jac: Tensor,
    losses: Tensor,
    perm: Tensor,
    steps: int = 3,
    rtol: float = PERMUTATION_RTOL,
) -> None:
    """Permuting the tasks permutes the weights and leaves ``d`` unchanged, at every step of a sequence.

    Gramian weightings: ``w(PGPᵀ, PL) = P·w(G, L)`` (and so ``d = wᵀJ`` is unchanged); Jacobian
    aggregators: ``aggregate(PJ, PL) = aggregate(J, L)`` (and ``last_weights`` permute where kept); loss
    weightings: ``S(PL) = P·S(L)`` and the effective weights ``∂ΣS/∂L`` permute, with the balancer's own
    parameters stepped as the engine does.
    """
    first, second = make(), make()
    for k, (jac_k, losses_k) in enumerate(_sequence(jac, losses, steps)):
        what = f"step {k}"
        if isinstance(first, GramianWeighting) and isinstance(second, GramianWeighting):
            gram = jac_k @ jac_k.T
            w = first.weights(gram, losses_k)
            w_perm = second.weights(gram[perm][:, perm], losses_k[perm])
            if unique_weights(jac_k):
                _close(w_perm, w[perm], rtol, f"{what}: weights")
            d_scale = float(jac_k.norm() * w.abs().sum()) or 1.0
            _close(w_perm @ jac_k[perm], w @ jac_k, rtol, f"{what}: d", d_scale)
        elif isinstance(first, GradientBalancer) and isinstance(second, GradientBalancer):
            d = first.aggregate(jac_k, losses_k)
            d_perm = second.aggregate(jac_k[perm], losses_k[perm])
            kept, kept_perm = getattr(first, "last_weights", None), getattr(second, "last_weights", None)
            total = float(kept.abs().sum()) if isinstance(kept, Tensor) else 1.0
            _close(d_perm, d, rtol, f"{what}: d", float(jac_k.norm()) * max(total, 1.0))
            if isinstance(kept, Tensor) and isinstance(kept_perm, Tensor) and unique_weights(jac_k):
                _close(kept_perm, kept[perm], rtol, f"{what}: weights")
        elif isinstance(first, LossWeighting) and isinstance(second, LossWeighting):
            terms, weights = _loss_weighting_step(first, losses_k)
            terms_perm, weights_perm = _loss_weighting_step(second, losses_k[perm])
            _close(terms_perm, terms[perm], rtol, f"{what}: terms")
            _close(weights_perm, weights[perm], rtol, f"{what}: weights")
        else:
            raise TypeError(f"no permutation property for {type(first).__name__}")


def _loss_weighting_step(balancer: LossWeighting, losses: Tensor) -> tuple[Tensor, Tensor]:
    """One engine-like step: ``S = scalarize(L)``, effective weights ``∂ΣS/∂L``, the balancer's own parameters
    get their gradient and ``after_backward``; ``post_step`` with the losses ``0.9·L^1.1``."""
    losses = losses.detach().requires_grad_(True)
    terms = balancer.scalarize(losses)
    params = balancer.parameters()
    grads = torch.autograd.grad(terms.sum(), [losses, *params])
    for p, g in zip(params, grads[1:], strict=True):
        p.grad = g
    balancer.after_backward()
    if balancer.needs_post_step_losses:  # unequal progress per task (a uniform one leaves FAMO's ξ at rounding noise)
        balancer.post_step(0.9 * losses.detach() ** 1.1)
    return terms.detach(), grads[0]


def assert_permutation_invariant_in_distribution(
    make: Callable[[int], GradientBalancer], jac: Tensor, losses: Tensor, perm: Tensor, draws: int
) -> None:
    """For a seeded random balancer (``make(seed)``): the mean ``d`` over ``draws`` seeds is the same for the
    permuted tasks, within 5 standard errors of the difference of the two means."""
    d = torch.stack([make(seed).aggregate(jac, losses) for seed in range(draws)])
    d_perm = torch.stack([make(draws + seed).aggregate(jac[perm], losses[perm]) for seed in range(draws)])
    gap = (d.mean(0) - d_perm.mean(0)).norm()
    spread = ((d.var(0) + d_perm.var(0)).sum() / draws).sqrt()
    assert float(gap) <= 5 * float(spread) + 1e-12 * float(jac.norm()), (float(gap), float(spread))


def assert_non_conflicting(
    balancer: GradientBalancer, jac: Tensor, losses: Tensor, slack: Tensor | float = 0.0
) -> None:
    """``g_t · d ≥ −slack_t`` for every task (``d`` increases no task's loss to first order), up to
    ``‖g_t‖·(1e-9·‖d‖ + 1e-12·‖J‖)`` (a ``d`` that is zero in exact arithmetic has rounding of ``eps·‖J‖``)."""
    d = balancer.aggregate(jac, losses)
    products = jac @ d
    tolerance = jac.norm(dim=1) * (1e-9 * d.norm() + 1e-12 * jac.norm()) + slack
    assert bool((products >= -tolerance).all()), (products / (jac.norm(dim=1) * d.norm()).clamp_min(1e-300)).min()


def assert_scale_equivariant(
    make: Callable[[], GradientBalancer], jac: Tensor, losses: Tensor, rtol: float = 1e-9
) -> None:
    """Scaling every task's loss by ``S > 0`` scales ``d`` by ``S``: ``d(S·J) = S·d(J)`` (to ``rtol`` of
    ``‖J‖``)."""
    d = make().aggregate(jac, losses)
    for factor in (1e-3, 7.0, 1e4):
        scale = factor * float(jac.norm()) * max(1.0, float(d.norm() / jac.norm().clamp_min(1e-300)))
        _close(make().aggregate(factor * jac, factor * losses), factor * d, rtol, f"S = {factor}", scale)


def equal_projection_exists(jac: Tensor) -> bool:
    """``1 ∈ range(C)`` on the non-zero rows: some ``d`` has the same projection onto every unit task gradient."""
    rows = jac[jac.norm(dim=1) > 0]
    unit = rows / rows.norm(dim=1, keepdim=True)
    ones = torch.ones(unit.shape[0], dtype=unit.dtype)
    return float((unit @ (torch.linalg.pinv(unit) @ ones) - ones).norm()) <= 1e-8 * float(ones.norm())


def assert_direction_invariant_to_task_scaling(
    make: Callable[[], GradientBalancer], jac: Tensor, losses: Tensor
) -> None:
    """IMTL-G's claim (paper §3.3, Theorem 2): rescaling task gradients by any ``c_t > 0`` leaves the update's
    direction unchanged. Where an equal-projection direction exists, ``d`` keeps equal projections ``p`` onto the
    unit task gradients and ``d / p`` (= ``U⁺1``) is invariant: the direction up to the sign of the common
    projection, which the paper's ``Σw = 1`` may flip. Where none exists, ``d`` itself keeps its direction."""
    d = make().aggregate(jac, losses)
    nonzero = jac.norm(dim=1) > 0
    consistent = equal_projection_exists(jac)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        c = 10.0 ** (torch.rand(jac.shape[0], generator=g, dtype=jac.dtype) * 6 - 3)  # 1e-3 … 1e3
        scaled = c[:, None] * jac
        d_c = make().aggregate(scaled, losses)
        if float(d.norm()) == 0.0:
            assert float(d_c.norm()) == 0.0
            continue
        if consistent:
            unit = scaled[nonzero] / scaled[nonzero].norm(dim=1, keepdim=True)
            p, p_c = unit @ d, unit @ d_c
            _close(p_c, p_c.mean().expand_as(p_c), 1e-8, "equal projections")
            _close(d_c / p_c.mean(), d / p.mean(), 1e-8, "d / p")
        else:
            cosine = float(d_c @ d / (d_c.norm() * d.norm()))
            assert cosine > 1 - 1e-10, cosine


def assert_aligned_system_is_orthogonal_with_equal_norms(balancer: GramianWeighting, jac: Tensor) -> None:
    """Aligned-MTL's claim (paper §4, Eq. 4–5): whatever the tasks' scales, the aligned gradients ``B J`` have
    condition number 1 on their span: every non-zero singular value equals ``σ = √λ_R``."""
    g = torch.Generator().manual_seed(6)
    for _ in range(3):
        scaled = 10.0 ** (torch.rand(jac.shape[0], 1, generator=g, dtype=jac.dtype) * 4 - 2) * jac  # 1e-2 … 1e2
        gram = scaled @ scaled.T
        aligned = balancer.alignment_matrix(gram) @ scaled  # type: ignore[attr-defined]
        values = torch.linalg.svdvals(aligned)
        if float(values[0]) == 0.0:
            continue
        lam = torch.linalg.eigvalsh(gram)
        kept_lam = lam[lam > jac.shape[0] * EPS * lam[-1]]
        kept = values[: kept_lam.shape[0]]
        sigma = float(kept_lam.min().sqrt())
        # eigh's backward error eps·λ_max moves λ_R by eps·cond relative
        rtol = max(1e-9, 10 * EPS * kept_condition(scaled))
        _close(kept, torch.full_like(kept, sigma), rtol, "singular values of B·J")
