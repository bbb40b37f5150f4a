"""The fast solver paths of the Gramian weightings give the same optimum as their reference paths.

Each fast path (an active-set guess, a batched solve, a vectorised loop, a NumPy twin of a torch
formula) is compared with the slower route it replaces, on the zoo and on seeded Gramians of the
two kinds met in training: well-aligned gradients (interior optima) and conflicting ones (sparse
supports, active constraints).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor

from mtrl.balancers._linalg import psd_pinv
from mtrl.balancers._qp import (
    _cagrad_dual_by_root_search,
    min_norm_kkt_violation,
    min_norm_simplex,
    nonneg_qp,
    nonneg_qp_batch,
)
from mtrl.balancers.aligned_mtl import AlignedMTL
from mtrl.balancers.cagrad import CAGrad
from mtrl.balancers.imtl import imtl_g_weights
from mtrl.balancers.pcgrad import PCGrad
from tests.balancers.zoo import zoo

ZOO = zoo()


def _jacobians() -> list[tuple[str, Tensor]]:
    """Zoo Jacobians plus seeded aligned (offset rows) and conflicting (centred rows) ones."""
    out = [(name, jac) for name, jac, _ in ZOO if jac.shape[0] > 1]
    for T in (3, 10, 50):
        gen = torch.Generator().manual_seed(1000 + T)
        base = torch.randn(T, 4 * T, generator=gen, dtype=torch.float64)
        # nearly orthogonal rows leaning together (like the benchmark trunk's): interior min-norm point
        out.append((f"aligned_T{T}", torch.randn(T, 40 * T, generator=gen, dtype=torch.float64) + 0.2))
        out.append((f"mixed_T{T}", base + 0.3))
        out.append((f"conflict_T{T}", base))
        scale = 10.0 ** torch.linspace(-3, 3, T, dtype=torch.float64)
        out.append((f"decades_T{T}", (base + 0.5) * scale[:, None]))
    return out


JACOBIANS = _jacobians()


# --- MGDA: the corral guess ---------------------------------------------------------------------
def test_min_norm_guess_reaches_the_textbook_optimum() -> None:
    """With and without the primal-dual corral guess Wolfe's method ends at the same min-norm point."""
    for name, jac in JACOBIANS:
        gram = (jac @ jac.T).numpy()
        fast = min_norm_simplex(gram)
        slow = min_norm_simplex(gram, guess=False)
        assert min_norm_kkt_violation(gram, fast) < 1e-9, name
        d_fast, d_slow = torch.from_numpy(fast) @ jac, torch.from_numpy(slow) @ jac
        scale = float(jac.norm(dim=1).max())
        assert float((d_fast - d_slow).norm()) <= 1e-9 * scale, name


@pytest.mark.parametrize("T", [10, 50])
def test_min_norm_guess_finds_an_interior_optimum_without_wolfe_steps(T: int) -> None:
    """Aligned gradients have an interior min-norm point: the guess is already optimal, so one
    termination test suffices, where the textbook start needs about ``T`` Wolfe steps."""
    jac = dict(JACOBIANS)[f"aligned_T{T}"]
    gram = (jac @ jac.T).numpy()
    assert bool((np.linalg.solve(gram, np.ones(T)) > 0).all())  # G⁻¹1 > 0: the optimum is interior
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = min_norm_simplex(gram, max_iter=1)
    assert bool((w > 0).all()) and min_norm_kkt_violation(gram, w) < 1e-12
    with pytest.warns(RuntimeWarning, match="stopped after 1 iterations"):
        min_norm_simplex(gram, max_iter=1, guess=False)


# --- UPGrad: the batched projections ------------------------------------------------------------
def _upgrad_problems(jac: Tensor) -> tuple[np.ndarray, np.ndarray]:
    gram = (jac @ jac.T).numpy()
    T = gram.shape[0]
    trace = float(np.trace(gram))
    a = (gram / trace if trace > 0 else gram) + 1e-4 * np.eye(T)
    return a, a / T  # row i: A u_i with u_i = e_i / T


@pytest.mark.parametrize("max_rounds", [0, 1, 20])
def test_nonneg_qp_batch_matches_one_solve_per_problem(max_rounds: int) -> None:
    """Batched active-set steps (any number of rounds; the rest is finished one by one) give the
    sequential solutions and meet the KKT conditions ``x ≥ 0``, ``∇ ≥ 0``, ``x ⊙ ∇ = 0``."""
    for name, jac in JACOBIANS:
        a, b = _upgrad_problems(jac)
        gen = np.random.default_rng(len(name))
        b = np.vstack([b, gen.standard_normal(b.shape)])  # and generic linear terms
        batch = nonneg_qp_batch(a, b, max_rounds=max_rounds)
        lam_min = float(np.linalg.eigvalsh(a)[0])
        for k in range(b.shape[0]):
            ref = nonneg_qp(a, b[k])
            scale = max(float(np.abs(b[k]).max()), float(np.diag(a).max()))
            # both stop at gradient entries ≥ −1e-12·scale: the unique optimum is known to 1e-12·scale/λ_min(A)
            np.testing.assert_allclose(batch[k], ref, rtol=1e-9, atol=1e-11 * scale / lam_min, err_msg=name)
            grad = a @ batch[k] + b[k]
            size = max(1.0, float(batch[k].max()))
            assert float(batch[k].min()) >= 0.0, name
            assert float(grad.min()) >= -1e-10 * scale, name
            assert float(np.abs(batch[k] * grad).max()) <= 1e-10 * scale * size, name


# --- CAGrad: the active-set dual ----------------------------------------------------------------
def _normalised(jac: Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    gram = (jac @ jac.T).numpy()
    g = gram / float(np.mean(np.diag(gram)))
    lin = g.mean(axis=1)
    return g, lin, float(lin.mean())


REGULAR = ("full_", "tiny_", "huge_", "aligned_", "mixed_", "conflict_", "decades_")


@pytest.mark.parametrize("c", [0.4, 0.9])
def test_cagrad_fast_dual_matches_the_plain_root_search(c: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The closed form on active sets (alone, or polishing the root search) reaches the plain root
    search's dual optimum (same objective, same ``g_w``) everywhere, with at most 4 min-norm solves
    (the root search: 5–9) on the regular cases; degenerate ones (``0`` in or near the hull) keep
    the root search."""
    import mtrl.balancers._qp as qp_module

    calls = {"n": 0}

    def counted(*args: object, **kwargs: object) -> np.ndarray:
        calls["n"] += 1
        return min_norm_simplex(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(qp_module, "min_norm_simplex", counted)
    fast_calls = slow_calls = 0
    for name, jac in JACOBIANS:
        if float(jac.abs().max()) == 0:
            continue
        g, lin, g0_sq = _normalised(jac)
        radius = c * math.sqrt(max(g0_sq, 0.0))
        if radius == 0:
            continue
        calls["n"] = 0
        fast = CAGrad(jac.shape[0], c=c)._dual(g)
        fast_n = calls["n"]
        calls["n"] = 0
        slow = _cagrad_dual_by_root_search(g, lin, g0_sq, radius, min_norm_simplex(g), polish=False)
        if name.startswith(REGULAR):  # 0 far from the hull: the cases met in training
            assert fast_n <= 4, (name, fast_n)
            fast_calls, slow_calls = fast_calls + fast_n, slow_calls + calls["n"]

        def objective(w: np.ndarray, g: np.ndarray = g, lin: np.ndarray = lin, radius: float = radius) -> float:
            return float(lin @ w + radius * math.sqrt(max(float(w @ g @ w), 0.0)))

        d_fast, d_slow = torch.from_numpy(fast) @ jac, torch.from_numpy(slow) @ jac
        if not bool(fast.any()):  # the optimum is g_w = 0 (zero weights by convention): so for both
            assert float(d_slow.norm()) <= 1e-10 * float(jac.norm(dim=1).max()), name
            continue
        assert bool((fast >= 0).all()) and abs(float(fast.sum()) - 1.0) < 1e-12, name
        assert objective(fast) <= objective(slow) + 1e-11 * (abs(objective(slow)) + radius), name
        assert float((d_fast - d_slow).norm()) <= 1e-6 * max(float(d_slow.norm()), 1e-300), name
    assert fast_calls * 3 < slow_calls, (fast_calls, slow_calls)  # measured: 27 vs 115 solves at c = 0.4


# --- PCGrad: the vectorised projections ---------------------------------------------------------
def _pcgrad_loop(gram: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Algorithm 1 as a plain double loop (the previous implementation)."""
    T = gram.shape[0]
    total = np.zeros(T)
    for i in range(T):
        coef = np.zeros(T)
        coef[i] = 1.0
        for j in torch.randperm(T, generator=generator).tolist():
            if j == i:
                continue
            inner = float(gram[j] @ coef)
            if inner < 0.0 and gram[j, j] > 0.0:
                coef[j] -= inner / gram[j, j]
        total += coef
    return total


def test_pcgrad_vectorised_projections_match_the_loop() -> None:
    for name, jac in JACOBIANS:
        T = jac.shape[0]
        gram = jac @ jac.T
        balancer = PCGrad(T, seed=5)
        generator = torch.Generator().manual_seed(5)
        for _ in range(3):  # the random stream advances identically
            expected = _pcgrad_loop(gram.numpy(), generator)
            got = balancer.weights(gram, torch.ones(T))
            torch.testing.assert_close(got, torch.from_numpy(expected), rtol=1e-10, atol=1e-12, msg=name)


# --- NumPy twins of the torch formulas ----------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_aligned_mtl_and_imtl_g_weights_match_their_matrix_forms(dtype: torch.dtype) -> None:
    """The NumPy weight paths equal the torch matrix forms (``B·pref``; ``D⁺C⁺1``) to the accuracy the
    eigen-decomposition allows: ``~eps·cond`` of the kept spectrum; an ambiguous rank is skipped."""
    compared = 0
    for name, jac in JACOBIANS:
        T = jac.shape[0]
        gram = jac @ jac.T
        r = T * float(torch.finfo(dtype).eps)
        for matrix_of, label in ((gram, "aligned"), (None, "imtl_g")):
            if matrix_of is None:  # IMTL-G decomposes the cosine matrix
                norms = gram.diagonal().clamp(min=0).sqrt()
                inv = torch.where(norms > 0, 1 / torch.where(norms > 0, norms, torch.ones_like(norms)), 0 * norms)
                matrix_of = (gram * inv[:, None] * inv[None, :]).clamp(-1, 1)
                matrix_of.diagonal().copy_((norms > 0).to(matrix_of))
            lam = torch.linalg.eigvalsh(matrix_of)
            lam_max = float(lam[-1])
            if lam_max <= 0:
                continue
            cut = r * lam_max
            if bool(((lam > 0.01 * cut) & (lam < 100 * cut)).any()):
                continue  # rank decided by rounding: the two decompositions may differ
            tol = max(1e-10, 1e-13 * lam_max / float(lam[lam > cut].min()))
            if label == "aligned":
                for mode in ("min", "median", "rmse"):
                    balancer = AlignedMTL(T, scale_mode=mode)  # type: ignore[arg-type]
                    expected = balancer.alignment_matrix(gram, r) @ torch.full((T,), 1.0 / T, dtype=torch.float64)
                    got = balancer.weights(gram, torch.ones(T), rtol=r)
                    # relative to the alignment matrix's entries, not to the weights: weights that are 0 in exact
                    # arithmetic (opposite rows: 1 ⟂ range(G)) are round-off of sums of B's entries, ~eps·max|B|,
                    # 0.0 on one CPU and 2.5e-16 on another
                    scale = float(balancer.alignment_matrix(gram, r).abs().max())
                    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * scale, msg=name)
            else:
                ones = (norms > 0).to(matrix_of)
                v = inv * (psd_pinv(matrix_of, r) @ ones)
                keep = float(v.sum().abs()) > 1e-12 * float(v.abs().sum())
                # 1 ∈ range(C): the paper's Σw = 1; otherwise the least-squares direction, not reversed
                miss = float((matrix_of @ psd_pinv(matrix_of, r) @ ones - ones).norm())
                consistent = miss <= 1e-8 * float(ones.norm())
                expected = v / (v.sum() if consistent else v.sum().abs()) if keep else torch.zeros_like(v)
                got = imtl_g_weights(gram, r)
                torch.testing.assert_close(got, expected, rtol=tol, atol=tol * float(expected.abs().max()), msg=name)
            compared += 1
    assert compared >= 40
