"""Method properties of the Gramian weightings, each checked against its mathematical definition."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, nnls
from torch import Tensor

from mtrl.balancers._qp import min_norm_kkt_violation, min_norm_simplex, nonneg_qp
from mtrl.balancers.aligned_mtl import AlignedMTL, AlignedMTLUB
from mtrl.balancers.cagrad import CAGrad
from mtrl.balancers.ew import EW
from mtrl.balancers.imtl import IMTL, IMTLG, IMTLL, imtl_g_weights
from mtrl.balancers.mgda import MGDA, MGDAUB
from mtrl.balancers.nash_mtl import NashMTL
from mtrl.balancers.pcgrad import PCGrad
from mtrl.balancers.upgrad import UPGrad
from tests.balancers.properties import EPS
from tests.balancers.zoo import full_rank, zoo

ZOO = zoo()
FULL_RANK = [(n, j, L) for n, j, L in ZOO if n.startswith(("full_", "tiny_", "huge_", "scaled_T2", "scaled_T3"))]


def _entry(name: str) -> tuple[Tensor, Tensor]:
    for n, jac, losses in ZOO:
        if n == name:
            return jac, losses
    raise KeyError(name)


def _decades(num_tasks: int, decades: float, seed: int) -> Tensor:
    scale = 10.0 ** torch.linspace(0.0, decades, num_tasks, dtype=torch.float64)
    return full_rank(num_tasks, 64, seed) * scale[:, None]


# --- EW -----------------------------------------------------------------------------------------
def test_ew_is_exactly_the_sum_or_the_mean() -> None:
    jac, losses = _entry("full_T10")
    assert EW.constant_weights
    assert torch.equal(EW(10).aggregate(jac.float(), losses), jac.float().sum(0))
    assert torch.equal(EW(10, mean=True).aggregate(jac, losses), jac.mean(0))
    assert torch.equal(EW(10).weights(torch.empty(0), losses), torch.ones(10, dtype=torch.float64))


# --- MGDA ---------------------------------------------------------------------------------------
def _assert_min_norm_kkt(jac: Tensor, w: Tensor, tol: float = 1e-6) -> None:
    """KKT of ``min_{w∈Δ} ‖Jᵀw‖²`` from ``J`` directly: ``g_j·d ≥ ‖d‖²``, equality on the support (cosines)."""
    assert bool((w >= 0).all()) and abs(float(w.sum()) - 1.0) < 1e-12
    d = w @ jac
    norms = jac.norm(dim=1)
    if float(d.norm()) <= 1e-7 * float(w @ norms):  # d = 0 (to rounding): optimal
        return
    slack = (jac @ d - d @ d) / (norms * d.norm()).clamp(min=1e-300)
    assert float(slack.min()) >= -tol
    assert float(slack[w > 0].abs().max()) <= tol


def test_mgda_reaches_the_kkt_conditions_on_the_whole_zoo() -> None:
    for name, jac, losses in ZOO:
        w = MGDA(jac.shape[0]).weights(jac @ jac.T, losses)
        try:
            _assert_min_norm_kkt(jac, w)
        except AssertionError as err:
            raise AssertionError(name) from err


@pytest.mark.parametrize("decades", [4.0, 8.0])
def test_mgda_matches_an_independent_nnls_solve_when_norms_span_decades(decades: float) -> None:
    jac = _decades(50, decades, seed=7)
    w = MGDA(50).weights(jac @ jac.T, torch.ones(50))
    _assert_min_norm_kkt(jac, w)
    # Independent: Lawson–Hanson NNLS on the equilibrated rows u_t, sum-to-one as a heavy penalty row.
    norms = jac.norm(dim=1)
    penalty = 1e4
    a = np.vstack([(jac / norms[:, None]).numpy().T, penalty / norms.numpy()[None, :]])
    b = np.concatenate([np.zeros(64), [penalty]])
    v = torch.from_numpy(nnls(a, b, maxiter=10_000)[0])
    d_ref, d = (v / norms) @ jac, w @ jac
    assert float(torch.nn.functional.cosine_similarity(d, d_ref, dim=0)) > 1 - 1e-6
    assert float(d.norm()) <= float(d_ref.norm()) * (1 + 1e-6)


def test_mgda_matches_brute_force_support_enumeration_for_three_tasks() -> None:
    for seed in range(20):
        jac = _decades(3, 2.0, seed) * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)[torch.randperm(3)][:, None]
        best = np.inf
        for size in (1, 2, 3):
            for support in itertools.combinations(range(3), size):
                rows = jac[list(support)]
                k = len(support)
                kkt = torch.zeros(k + 1, k + 1, dtype=torch.float64)
                kkt[:k, :k], kkt[:k, k], kkt[k, :k] = rows @ rows.T, 1.0, 1.0
                rhs = torch.zeros(k + 1, dtype=torch.float64)
                rhs[k] = 1.0
                mu = torch.linalg.lstsq(kkt, rhs[:, None]).solution[:k, 0]
                if bool((mu >= -1e-12).all()):
                    best = min(best, float((mu @ rows).norm() ** 2))
        w = MGDA(3).weights(jac @ jac.T, torch.ones(3))
        assert float((w @ jac).norm() ** 2) == pytest.approx(best, rel=1e-9, abs=1e-20)


def test_mgda_normalisations_are_mgda_on_rescaled_rows() -> None:
    jac, losses = _entry("scaled_T10")
    norms = jac.norm(dim=1)
    cases = {"l2": norms, "loss": losses, "loss+": losses * norms}
    for normalization, scale in cases.items():
        d = MGDA(10, normalization=normalization).aggregate(jac, losses)  # type: ignore[arg-type]
        d_ref = MGDA(10).aggregate(jac / scale[:, None], losses)
        torch.testing.assert_close(d, d_ref, rtol=1e-9, atol=1e-12 * float(d_ref.norm()))
    assert MGDAUB(3).representation_level and not MGDA(3).representation_level


def test_mgda_zero_gradient_task_gives_zero_direction() -> None:
    jac, losses = _entry("zero_row_T10")
    assert torch.equal(MGDA(10).aggregate(jac, losses), torch.zeros(64, dtype=torch.float64))
    assert torch.equal(MGDA(10, normalization="l2").aggregate(jac, losses), torch.zeros(64, dtype=torch.float64))


# --- PCGrad -------------------------------------------------------------------------------------
def _pcgrad_on_vectors(jac: Tensor, seed: int) -> Tensor:
    """PCGrad (Yu et al., Alg. 1) on the vectors themselves, with the same random orders."""
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(jac.shape[1], dtype=torch.float64)
    for i in range(jac.shape[0]):
        g = jac[i].clone()
        for j in torch.randperm(jac.shape[0], generator=generator).tolist():
            if j != i and float(g @ jac[j]) < 0:
                g = g - (g @ jac[j]) / (jac[j] @ jac[j]) * jac[j]
        total += g
    return total


def test_pcgrad_gramian_form_matches_projections_of_the_vectors() -> None:
    for name in ("full_T3", "full_T10", "scaled_T10", "opposite_T10", "zero_row_T10", "rank5_T10"):
        jac, losses = _entry(name)
        d_ref = _pcgrad_on_vectors(jac, seed=5)
        d = PCGrad(jac.shape[0], seed=5).aggregate(jac, losses)
        torch.testing.assert_close(d, d_ref, rtol=1e-9, atol=1e-12 * float(jac.norm(dim=1).max()), msg=name)


def test_pcgrad_leaves_no_conflict_for_two_tasks() -> None:
    for seed in range(20):
        g = torch.randn(2, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        if float(g[0] @ g[1]) >= 0:
            g[1] = g[1] - 2 * (g[0] @ g[1]) / (g[0] @ g[0]) * g[0]  # make them conflict
        d = PCGrad(2).aggregate(g, torch.ones(2))
        assert bool((g @ d >= -1e-12 * float(g.norm(dim=1).max() * d.norm())).all())
        # by hand: each gradient loses its component along the other
        hand = g.sum(0) - (g[0] @ g[1]) * (g[0] / (g[0] @ g[0]) + g[1] / (g[1] @ g[1]))
        torch.testing.assert_close(d, hand, rtol=1e-12, atol=1e-12)


def test_pcgrad_randomness_is_seeded() -> None:
    jac, losses = _entry("full_T10")
    outs = [PCGrad(10, seed=s).aggregate(jac, losses) for s in (0, 0, 1)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


# --- CAGrad -------------------------------------------------------------------------------------
def test_cagrad_with_c_zero_is_the_mean_gradient() -> None:
    for name, jac, losses in ZOO:
        for rescale in (True, False):
            d = CAGrad(jac.shape[0], c=0.0, rescale=rescale).aggregate(jac, losses)
            torch.testing.assert_close(d, jac.mean(0), rtol=1e-14, atol=1e-15 * float(jac.abs().max()), msg=name)


@pytest.mark.parametrize("c", [0.4, 0.9])
def test_cagrad_closes_the_duality_gap(c: float) -> None:
    """Primal ``max_{‖d−g0‖≤c‖g0‖} min_t g_t·d`` equals the dual value at ``w*``: both are optimal."""
    for name, jac, losses in ZOO:
        num_tasks = jac.shape[0]
        balancer = CAGrad(num_tasks, c=c, rescale=False)
        w_star = balancer.dual_weights(jac @ jac.T)
        g0, g_w = jac.mean(0), w_star @ jac
        radius = c * g0.norm()
        # dual optimum at the origin (checked below), by the class's own rule: ``‖g_w‖`` of a zero combination
        # is round-off, up to ~sqrt(T·eps)·Σ w_t‖g_t‖ (the solver returns w* = 0 or the zero combination's
        # weights, as rounding falls: both on opposite_T10 under another CPU's rounding, ‖g_w‖ ≈ 2e-8·‖g‖)
        norms = jac.norm(dim=1)
        zero = max(1e-10 * float(norms.max()), 10 * math.sqrt(num_tasks * EPS) * float(w_star @ norms))
        if num_tasks == 1 or float(g_w.norm()) <= zero:
            continue
        d = balancer.aggregate(jac, losses)
        scale = float(jac.norm(dim=1).max()) ** 2
        assert float((d - g0).norm()) == pytest.approx(float(radius), rel=1e-9), name
        primal, dual = float((jac @ d).min()), float(g_w @ g0 + radius * g_w.norm())
        assert abs(primal - dual) <= 1e-9 * scale, name
        assert bool((w_star >= 0).all()) and abs(float(w_star.sum()) - 1) < 1e-12
        torch.testing.assert_close(CAGrad(num_tasks, c=c).aggregate(jac, losses), d / (1 + c**2))


def test_cagrad_dual_at_the_origin_returns_the_mean_and_matches_slsqp() -> None:
    jac, losses = _entry("opposite_T3")  # 0 lies in the hull and no direction beats it
    gram = (jac @ jac.T).numpy()
    lin, radius = gram.mean(1), 0.4 * float(np.sqrt(gram.mean()))
    res = minimize(
        lambda w: lin @ w + radius * np.sqrt(max(w @ gram @ w, 0.0)),
        np.array([0.2, 0.3, 0.5]),
        method="SLSQP",
        bounds=[(0, 1)] * 3,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1},),
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert res.fun > -1e-8 * float(np.diag(gram).max())  # independent: the dual minimum is 0
    torch.testing.assert_close(CAGrad(3).aggregate(jac, losses), jac.mean(0) / 1.16)


@pytest.mark.parametrize("c", [1.5, 2.0, 5.0])
@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_cagrad_rank_one_with_the_origin_in_the_hull_returns_the_scaled_mean(c: float, scale: float) -> None:
    # J = a ⊗ v with mixed-sign a: 0 is in the hull, and for c > 1 the dual optimum is g_w = 0 (its
    # objective (aᵀw)(aᵀ1/T) + c·|aᵀ1/T|·|aᵀw| > 0 unless aᵀw = 0; c = 1 ties), so d = g0 / (1 + c²). Computed
    # ‖g_w‖ is round-off there (~1e-8 relative); dividing by it once gave weights of 1e7 (zoo rank1_T3).
    jac, losses = _entry("rank1_T3")
    coeff = jac @ jac[0] / (jac[0] @ jac[0])
    assert bool((coeff > 0).any() and (coeff < 0).any())  # mixed signs, as the zoo draws them
    for j in (jac * scale, torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)[:, None] * jac[0] * scale):
        w = CAGrad(3, c=c).weights(j @ j.T, losses)
        torch.testing.assert_close(w, torch.full((3,), 1 / 3 / (1 + c**2), dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("c", [0.4, 0.9, 2.0])
def test_cagrad_keeps_a_small_dual_optimum_that_is_not_round_off(c: float) -> None:
    # Rows spanning six decades: the dual optimum leans on the small rows, so ‖g_w*‖ ≈ 1e-6·max‖g_t‖ is
    # real (far above its round-off, which scales with Σ w_t‖g_t‖), and d must lie on the primal boundary
    # ‖d − g0‖ = c‖g0‖ with primal = dual; a cut-off in units of max‖g_t‖ once replaced it by the mean.
    gen = torch.Generator().manual_seed(1050)
    decades = 10.0 ** torch.linspace(-3, 3, 50, dtype=torch.float64)
    jac = (torch.randn(50, 200, generator=gen, dtype=torch.float64) + 0.5) * decades[:, None]
    balancer = CAGrad(50, c=c, rescale=False)
    w_star = balancer.dual_weights(jac @ jac.T)
    g0, g_w = jac.mean(0), w_star @ jac
    assert float(g_w.norm()) > 1e-7 * float(jac.norm(dim=1).max())  # small, and real
    d = balancer.aggregate(jac, torch.ones(50, dtype=torch.float64))
    assert float((d - g0).norm()) == pytest.approx(float(c * g0.norm()), rel=1e-9)
    primal, dual = float((jac @ d).min()), float(g_w @ g0 + c * g0.norm() * g_w.norm())
    assert abs(primal - dual) <= 1e-9 * float(jac.norm(dim=1).max()) ** 2


# --- Nash-MTL -----------------------------------------------------------------------------------
def test_nash_mtl_solves_the_bargaining_condition_on_full_rank_inputs() -> None:
    for name, jac, losses in [*FULL_RANK, ("scaled_T10", *_entry("scaled_T10")), ("scaled_T50", *_entry("scaled_T50"))]:
        gram = jac @ jac.T
        balancer = NashMTL(jac.shape[0], max_norm=0.0)
        alpha = balancer.weights(gram, losses)
        g_hat = gram / gram.norm()
        assert bool((alpha > 0).all()), name
        torch.testing.assert_close(alpha * (g_hat @ alpha), torch.ones_like(alpha), rtol=0, atol=1e-6, msg=name)


def test_nash_mtl_clips_the_direction_norm() -> None:
    jac, losses = _entry("huge_T10")
    unclipped = NashMTL(10, max_norm=0.0).aggregate(jac, losses)
    clipped = NashMTL(10, max_norm=1.0).aggregate(jac, losses)
    assert float(unclipped.norm()) > 1.0
    assert float(clipped.norm()) == pytest.approx(1.0, rel=1e-12)
    torch.testing.assert_close(clipped, unclipped / unclipped.norm())
    small = NashMTL(10, max_norm=1e30).aggregate(jac, losses)
    torch.testing.assert_close(small, unclipped)


def test_nash_mtl_reuses_weights_between_updates() -> None:
    jacs = [full_rank(4, 16, seed) for seed in range(4)]
    losses = torch.ones(4, dtype=torch.float64)
    balancer = NashMTL(4, max_norm=0.0, update_weights_every=2)
    weights = [balancer.weights(j @ j.T, losses) for j in jacs]
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[2], weights[3])
    assert not torch.equal(weights[1], weights[2]) and balancer.step == 4
    fresh = NashMTL(4, max_norm=0.0).weights(jacs[2] @ jacs[2].T, losses)
    torch.testing.assert_close(weights[2], fresh, rtol=1e-7, atol=0)  # warm start: same solution


def test_nash_mtl_rank_deficient_inputs_stay_finite_and_ignore_null_directions() -> None:
    jac, losses = _entry("opposite_T2")  # no bargaining solution: d must vanish, not explode
    assert float(NashMTL(2).aggregate(jac, losses).norm()) <= 1e-9
    jac, losses = _entry("zero_row_T10")
    others = torch.cat([jac[:5], jac[6:]])
    d = NashMTL(10, max_norm=0.0).aggregate(jac, losses)
    d_ref = NashMTL(9, max_norm=0.0).aggregate(others, losses[:9])
    # the zero row adds nothing; the others satisfy the bargaining condition (Ĝ differs only by the ridge)
    torch.testing.assert_close(d, d_ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("layout", ["sum_row", "repeated_directions"])
def test_nash_mtl_bargaining_on_rank_deficient_inputs_where_defined(layout: str) -> None:
    """Linearly dependent rows still have a bargaining solution when some ``d`` improves every task
    (rows ``g1, g2, g1 + g2``; or scaled copies of directions): ``α > 0`` and ``α ⊙ Ĝα ≈ 1`` (the
    ``1e-8`` ridge on the cosines perturbs it by ~1e-8)."""
    base = _decades(3, 1.0, seed=31)
    if layout == "sum_row":
        jac = torch.stack([base[0], base[1], base[0] + base[1], base[2]])
    else:
        jac = torch.cat([base, 0.01 * base[:1], 40.0 * base[1:2]])
    assert int(torch.linalg.matrix_rank(jac)) < jac.shape[0]
    gram = jac @ jac.T
    alpha = NashMTL(jac.shape[0], max_norm=0.0).weights(gram, torch.ones(jac.shape[0]))
    g_hat = gram / gram.norm()
    assert bool((alpha > 0).all())
    torch.testing.assert_close(alpha * (g_hat @ alpha), torch.ones_like(alpha), rtol=0, atol=1e-6)
    d = alpha @ jac
    assert bool((jac @ d > 0).all())  # every task improves


# --- UPGrad -------------------------------------------------------------------------------------
def test_upgrad_direction_does_not_conflict_with_any_task() -> None:
    for name, jac, losses in ZOO:
        gram = jac @ jac.T
        trace = float(gram.trace())
        w = UPGrad(jac.shape[0]).weights(gram, losses)
        d = UPGrad(jac.shape[0]).aggregate(jac, losses)
        assert bool((w >= 0).all()), name
        if trace >= 1e-4:
            # exact projection on the dual cone of the ridge-regularised Gramian: G w ≥ −reg·tr(G)·w
            bound = -1e-4 * trace * w - 1e-9 * trace * float(w.abs().sum())
            assert bool((gram @ w >= bound).all()), name
        else:
            # tr(G) < norm_eps (tiny_*, all_zero_*): the projections are skipped and d is the mean
            # gradient (torchjd's behaviour), which may conflict: J d ≥ 0 is NOT promised here
            torch.testing.assert_close(w, torch.full_like(w, 1.0 / jac.shape[0]), rtol=0, atol=0)
            torch.testing.assert_close(d, jac.mean(0), rtol=1e-12, atol=0.0)
        torch.testing.assert_close(jac @ d, gram @ w, rtol=1e-9, atol=1e-9 * trace * float(w.abs().sum()))
    tiny = 1e-6 * torch.tensor([[1.0, 0.0], [-2.0, 0.1]], dtype=torch.float64)  # tr(G) ~ 5e-12 < norm_eps
    assert float((tiny @ UPGrad(2).aggregate(tiny, torch.ones(2))).min()) < 0  # the mean conflicts here
    projected = UPGrad(2, norm_eps=0.0, reg_eps=0.0).aggregate(tiny, torch.ones(2))
    assert float((tiny @ projected).min()) >= -1e-12 * float(tiny.norm() * projected.norm())  # norm_eps=0: none
    for name, jac, losses in FULL_RANK:  # without the ridge the cone constraint is exact
        d = UPGrad(jac.shape[0], norm_eps=0.0, reg_eps=0.0).aggregate(jac, losses)
        scale = float(jac.norm(dim=1).max() * d.norm())
        assert float((jac @ d).min()) >= -1e-9 * scale, name


def test_upgrad_is_the_mean_when_nothing_conflicts() -> None:
    jac = full_rank(5, 16, seed=3).abs()  # all pairwise inner products positive
    torch.testing.assert_close(UPGrad(5).aggregate(jac, torch.ones(5)), jac.mean(0), rtol=1e-12, atol=1e-14)


def test_upgrad_projections_match_scipy() -> None:
    jac = _decades(4, 1.0, seed=11)
    jac[1] = -0.7 * jac[0] + 0.3 * jac[1]
    gram = (jac @ jac.T).numpy()
    a = gram / np.trace(gram) + 1e-4 * np.eye(4)
    total = np.zeros(4)
    for i in range(4):
        u = np.eye(4)[i] / 4
        res = minimize(
            lambda v: 0.5 * v @ a @ v,
            u + 1.0,
            jac=lambda v: a @ v,
            method="SLSQP",
            bounds=[(ui, None) for ui in u],
            options={"ftol": 1e-16, "maxiter": 1000},
        )
        total += res.x
    w = UPGrad(4).weights(jac @ jac.T, torch.ones(4))
    torch.testing.assert_close(w, torch.from_numpy(total), rtol=1e-6, atol=1e-9)


# --- IMTL ---------------------------------------------------------------------------------------
def _projections(jac: Tensor, d: Tensor) -> Tensor:
    return (jac / jac.norm(dim=1, keepdim=True)) @ d


def test_imtl_g_projects_equally_onto_every_unit_task_gradient() -> None:
    for name, jac, losses in [*FULL_RANK, ("scaled_T10", *_entry("scaled_T10")), ("scaled_T50", *_entry("scaled_T50"))]:
        w = IMTLG(jac.shape[0]).weights(jac @ jac.T, losses)
        assert float(w.sum()) == pytest.approx(1.0, rel=1e-12), name
        proj = _projections(jac, w @ jac)
        assert float((proj - proj.mean()).abs().max()) <= 1e-8 * float(proj.abs().max()), name


def test_imtl_g_matches_the_paper_closed_form() -> None:
    """Eq. 2: α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 − Σ α_{2:T}, with D rows g_1 − g_t, U rows u_1 − u_t."""
    for seed in range(5):
        jac = _decades(4, 3.0, seed)
        unit = jac / jac.norm(dim=1, keepdim=True)
        diff, udiff = jac[0] - jac[1:], unit[0] - unit[1:]
        tail = jac[0] @ udiff.T @ torch.linalg.inv(diff @ udiff.T)
        alpha = torch.cat([1 - tail.sum(0, keepdim=True), tail])
        torch.testing.assert_close(IMTLG(4).weights(jac @ jac.T, torch.ones(4)), alpha, rtol=1e-8, atol=1e-12)


def test_imtl_g_direction_is_invariant_to_positive_loss_scaling() -> None:
    jac, losses = _entry("full_T10")
    scale = 10.0 ** torch.linspace(-3, 3, 10, dtype=torch.float64)  # L_t → k_t L_t scales g_t by k_t
    d = IMTLG(10).aggregate(jac, losses)
    d_scaled = IMTLG(10).aggregate(jac * scale[:, None], losses * scale)
    assert float(torch.nn.functional.cosine_similarity(d, d_scaled, dim=0)) > 1 - 1e-12


def test_imtl_g_zero_task_and_degenerate_inputs() -> None:
    jac, losses = _entry("zero_row_T10")
    w = IMTLG(10).weights(jac @ jac.T, losses)
    assert float(w[5]) == 0.0 and float(w.sum()) == pytest.approx(1.0)
    proj = _projections(torch.cat([jac[:5], jac[6:]]), w @ jac)
    assert float((proj - proj.mean()).abs().max()) <= 1e-9 * float(proj.abs().max())
    jac, losses = _entry("opposite_T2")  # v = C⁺1 sums to 0: no balanced combination
    assert torch.equal(imtl_g_weights(jac @ jac.T), torch.zeros(2, dtype=torch.float64))


def test_imtl_g_weights_are_zero_when_ones_is_orthogonal_to_range_c_whatever_the_rounding() -> None:
    """Pairs of opposite gradients (``g, −k·g``): ``1 ⟂ range(C)``, so ``C⁺1 = 0`` and the weights are exactly
    zero. The computed projection of ``1`` is round-off of ~1e-16, which ``C⁺`` used to turn into O(1) weights
    that changed with the task order and with rounding at the 1e-15 level (as on another CPU); the rows are
    perturbed at that level and permuted here, and every draw must give zeros."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(7, generator=g, dtype=torch.float64) for _ in range(3))
    jac = torch.stack([a, -a, b, -2 * b, 3 * c, -0.5 * c])
    for _ in range(8):
        noise = 1e-15 * torch.randn(jac.shape, generator=g, dtype=torch.float64)
        perturbed = (jac * (1.0 + noise))[torch.randperm(6, generator=g)]
        assert torch.equal(imtl_g_weights(perturbed @ perturbed.T), torch.zeros(6, dtype=torch.float64))


def _spec_imtl_g(jac: Tensor) -> Tensor:
    """The spec's form ``w ∝ G⁺·diag(G)^½`` (torchjd), for comparison."""
    gram = jac @ jac.T
    v = torch.linalg.pinv(gram, hermitian=True) @ gram.diagonal().sqrt()
    return v / v.sum()


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_imtl_g_rank_deficient_consistent_equal_projections_and_scale_invariance() -> None:
    """Repeated directions (rank 3, T = 6): ``1 ∈ range(C)``, so equal projections exist; our ``D⁺C⁺1``
    and the spec's ``G⁺·diag(G)^½`` give the same direction; ours is unchanged in direction when a task
    gradient is rescaled while the common projection keeps its sign (positive for every rescaling here;
    ``Σw = 1`` reverses ``d`` when it turns negative, as the paper), and ``Σw = 1``."""
    base = _decades(3, 2.0, seed=21)
    jac = torch.cat([base, base * torch.tensor([[1e-3], [10.0], [7.0]], dtype=torch.float64)])  # rank 3
    assert int(torch.linalg.matrix_rank(jac)) == 3
    w = IMTLG(6).weights(jac @ jac.T, torch.ones(6))
    d = w @ jac
    assert float(w.sum()) == pytest.approx(1.0, rel=1e-12)
    proj = _projections(jac, d)
    assert float((proj - proj.mean()).abs().max()) <= 1e-9 * float(proj.abs().max())
    assert _cosine(d, _spec_imtl_g(jac) @ jac) > 1 - 1e-10  # same direction as the spec's form
    for row, k in ((0, 1e4), (4, 1e-3)):
        rescaled = jac.clone()
        rescaled[row] *= k
        w_k = IMTLG(6).weights(rescaled @ rescaled.T, torch.ones(6))
        assert float(w_k.sum()) == pytest.approx(1.0, rel=1e-12)
        assert _cosine(w_k @ rescaled, d) > 1 - 1e-10
        proj_k = _projections(rescaled, w_k @ rescaled)
        assert float((proj_k - proj_k.mean()).abs().max()) <= 1e-9 * float(proj_k.abs().max())


def test_imtl_g_rank_deficient_inconsistent_projects_one_onto_range_c() -> None:
    """Generic rank 2 with T = 4: no equal-projection combination (``1 ∉ range(C)``). Ours gives
    ``d ∝ U⁺1`` (``U`` the unit rows), i.e. projections ``Ud ∝ CC⁺1``, the cosine-space projection of
    ``1`` onto ``range(C)``; its direction ignores the gradient norms. The spec's form does not."""
    jac = torch.randn(4, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) @ full_rank(2, 64, 6)
    jac = jac * torch.tensor([[1.0], [30.0], [0.2], [5.0]], dtype=torch.float64)
    unit = jac / jac.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    ones = torch.ones(4, dtype=torch.float64)
    target = cos @ torch.linalg.pinv(cos, hermitian=True) @ ones  # projection of 1 onto range(C)
    assert float((target - ones).norm()) > 1e-3  # really inconsistent
    w = IMTLG(4).weights(jac @ jac.T, ones)
    d = w @ jac
    assert float(w.sum()) == pytest.approx(1.0, rel=1e-12)
    proj = unit @ d
    torch.testing.assert_close(proj / proj.norm(), target / target.norm(), rtol=0, atol=1e-9)
    assert _cosine(d, torch.linalg.pinv(unit) @ ones) > 1 - 1e-10
    rescaled = jac.clone()
    rescaled[1] *= 1e-3
    # direction invariant: always when 1 ∉ range(C), since d ∝ U⁺1 is never reversed (next test)
    assert _cosine(IMTLG(4).aggregate(rescaled, ones), d) > 1 - 1e-10
    spec = _spec_imtl_g(jac) @ jac
    spec_rescaled = _spec_imtl_g(rescaled) @ rescaled
    assert _cosine(spec, spec_rescaled) < 1 - 1e-4  # the G⁺·diag(G)^½ form is not (here cos ≈ 0.9992)


def test_imtl_g_without_equal_projections_returns_the_unreversed_least_squares_direction() -> None:
    """Collinear gradients ``a_t·v`` with mixed signs (rank 1): no direction projects equally onto every task.
    The paper's ``Σw = 1`` gives ``d = T·v / Σ_t(1/a_t)``, which flips sign when ``a = (1, −2, 3)`` becomes
    ``(7, −2, 3)``; IMTL-G returns the least-squares direction ``U⁺1 ∝ +v`` for both, scaled as the paper's
    weights (``d = T·v / |Σ_t(1/a_t)|``, ``Σw = ±1``), with positive summed cosine projections."""
    v = torch.randn(16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ones = torch.ones(3, dtype=torch.float64)
    paper_signs = []
    for a in ((1.0, -2.0, 3.0), (7.0, -2.0, 3.0)):
        a_T = torch.tensor(a, dtype=torch.float64)
        jac = a_T[:, None] * v
        w = IMTLG(3).weights(jac @ jac.T, ones)
        d = w @ jac
        torch.testing.assert_close(d, 3 * v / float((1 / a_T).sum().abs()), rtol=1e-10, atol=0.0)
        assert float(w.sum().abs()) == pytest.approx(1.0, rel=1e-12)
        unit = jac / jac.norm(dim=1, keepdim=True)
        assert float((unit @ d).sum()) > 0  # tasks 0 and 2 descend, task 1 ascends: the majority of directions
        paper_signs.append(float(torch.sign((1 / a_T).sum())))  # sign of the paper's d = T·v / Σ(1/a)
    assert paper_signs == [1.0, -1.0]


def test_imtl_l_scaled_losses_and_their_learning() -> None:
    raw = torch.tensor([0.2, 1.0, 5.0], dtype=torch.float64)
    balancer = IMTLL(3, lr=0.05)
    torch.testing.assert_close(balancer.scalarize(raw), raw)  # s = 0 at start
    for _ in range(400):
        scaled = balancer.scalarize(raw)
        (s,) = balancer.parameters()
        s.grad = torch.autograd.grad(scaled.sum(), s)[0]
        torch.testing.assert_close(s.grad, s.detach().exp() * raw - 1)  # ∂S/∂s = e^s L − 1
        balancer.after_backward()
    scales = balancer.scale()
    assert scales is not None
    torch.testing.assert_close(scales * raw, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-3)


def test_imtl_hybrid_uses_imtl_l_terms_and_imtl_g_weights() -> None:
    jac, losses = _entry("full_T3")
    hybrid = IMTL(3)
    assert hybrid.representation_level and not IMTL(3, representation_level=False).representation_level
    assert hybrid.positive_losses and hybrid.stateful
    torch.testing.assert_close(hybrid.weights(jac @ jac.T, losses), IMTLG(3).weights(jac @ jac.T, losses))
    loss = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    scaled = hybrid.scalarize(loss)
    (s,) = hybrid.parameters()
    grad_loss, grad_s = torch.autograd.grad(scaled.sum(), [loss, s])
    torch.testing.assert_close(grad_loss, s.detach().exp())
    torch.testing.assert_close(grad_s, s.detach().exp() * loss.detach() - 1)


# --- Aligned-MTL --------------------------------------------------------------------------------
def test_aligned_mtl_aligned_gradients_are_orthogonal_with_equal_norm() -> None:
    for name, jac, _ in [*FULL_RANK, ("rank5_T10", *_entry("rank5_T10"))]:
        gram = jac @ jac.T
        aligned = AlignedMTL(jac.shape[0]).alignment_matrix(gram) @ jac  # rows: aligned task gradients
        vals = torch.linalg.eigvalsh(gram)
        rank = int((vals > vals.max() * jac.shape[0] * torch.finfo(torch.float64).eps).sum())
        lam_min = vals[-rank]
        inner = aligned @ aligned.T / lam_min
        # on the range of G the aligned system is orthonormal up to √λ_min: inner = projector of rank R
        torch.testing.assert_close(inner @ inner, inner, rtol=0, atol=1e-6, msg=name)
        assert float(inner.trace()) == pytest.approx(rank, abs=1e-6), name
        if rank == jac.shape[0]:
            torch.testing.assert_close(inner, torch.eye(rank, dtype=torch.float64), rtol=0, atol=1e-6, msg=name)


def test_aligned_mtl_matches_the_svd_procrustes_solution() -> None:
    """Independent: J = U S Wᵀ, closest orthogonal-up-to-σ_min system σ_min U Wᵀ, d = (σ_min U Wᵀ)ᵀ w."""
    cases = [(n, *_entry(n)) for n in ("full_T3", "full_T10", "huge_T10")] + [("decades", _decades(5, 3.0, 1), None)]
    for name, jac, losses in cases:
        losses = torch.ones(jac.shape[0], dtype=torch.float64)
        u, s, wt = torch.linalg.svd(jac, full_matrices=False)
        pref = torch.full((jac.shape[0],), 1.0 / jac.shape[0], dtype=torch.float64)
        d_ref = (s.min() * u @ wt).T @ pref
        torch.testing.assert_close(AlignedMTL(jac.shape[0]).aggregate(jac, losses), d_ref, rtol=1e-7, atol=0, msg=name)


def test_aligned_mtl_options() -> None:
    jac, losses = _entry("full_T10")
    base = AlignedMTL(10).aggregate(jac, losses)
    torch.testing.assert_close(AlignedMTL(10, pref=[1.0] * 10).aggregate(jac, losses), 10 * base)
    vals = torch.linalg.eigvalsh(jac @ jac.T)
    for mode, sigma2 in (("median", vals.median()), ("rmse", vals.mean())):
        d = AlignedMTL(10, scale_mode=mode).aggregate(jac, losses)  # type: ignore[arg-type]
        torch.testing.assert_close(d, base * (sigma2 / vals.min()).sqrt())
    single, single_losses = _entry("full_T1")
    torch.testing.assert_close(AlignedMTL(1).aggregate(single, single_losses), single[0])
    assert AlignedMTLUB(2).representation_level and not AlignedMTL(2).representation_level


@pytest.mark.parametrize("T", [3, 10, 50])
def test_min_norm_warm_start_gives_the_same_optimum(T: int) -> None:
    """A warm start (the solution of a nearby Gramian, as CAGrad's root search uses) changes the path
    of Wolfe's method, not its answer: same weights, KKT conditions satisfied."""
    gen = torch.Generator().manual_seed(T)
    jac = torch.randn(T, 4 * T, generator=gen, dtype=torch.float64) + 0.2
    gram = (jac @ jac.T).numpy()
    nearby = gram + 0.05 * np.outer(gram.mean(1), np.ones(T)) + 0.05 * np.outer(np.ones(T), gram.mean(1))
    warm = min_norm_simplex(nearby)
    cold = min_norm_simplex(gram)
    hot = min_norm_simplex(gram, warm_start=warm)
    np.testing.assert_allclose(hot, cold, atol=1e-9)
    assert min_norm_kkt_violation(gram, hot) < 1e-9
    bad_start = np.zeros(T)
    bad_start[:2] = [0.5, 0.5]  # any start is safe: a corral that is not optimal is left as usual
    np.testing.assert_allclose(min_norm_simplex(gram, warm_start=bad_start), cold, atol=1e-9)


@pytest.mark.parametrize("T", [3, 10, 50])
def test_nonneg_qp_warm_start_gives_the_same_optimum(T: int) -> None:
    """UPGrad's projections warm-start each QP from the previous one: same solution, KKT conditions
    (``∇ = Ax + b ≥ 0``, ``x ≥ 0``, ``x ⊙ ∇ = 0``) met, also from an unrelated start."""
    gen = torch.Generator().manual_seed(100 + T)
    jac = torch.randn(T, 2 * T, generator=gen, dtype=torch.float64)
    gram = (jac @ jac.T).numpy()
    a = gram / np.trace(gram) + 1e-4 * np.eye(T)
    previous = None
    for i in range(T):
        u = np.eye(T)[i] / T
        cold = nonneg_qp(a, a @ u)
        hot = nonneg_qp(a, a @ u, warm_start=previous)
        np.testing.assert_allclose(hot, cold, rtol=1e-9, atol=1e-12)
        grad = a @ hot + a @ u
        assert float(hot.min()) >= 0 and float(grad.min()) >= -1e-10 and float(np.abs(hot * grad).max()) <= 1e-10
        previous = hot
    arbitrary = np.ones(T)
    np.testing.assert_allclose(nonneg_qp(a, a @ u, warm_start=arbitrary), cold, rtol=1e-9, atol=1e-12)
