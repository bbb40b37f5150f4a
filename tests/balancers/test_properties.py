"""Properties in torchjd's style (``tests/unit/aggregation/_property_testers.py``), over the property zoo.

* permutation invariance: every deterministic balancer (permuting the tasks permutes the weights and leaves
  ``d`` unchanged, stateful ones over a sequence of steps); the seeded random ones (``rlw``, ``pcgrad``,
  ``graddrop``) in distribution; ``sgsu`` and ``dgr`` (given its dummies permuted with the tasks) through the
  engine on a model whose tasks are permuted;
* non-conflict for MGDA and UPGrad: ``g_t · d ≥ 0`` for every task;
* the scaling properties IMTL-G and Aligned-MTL claim: IMTL-G's direction is invariant to rescaling task
  gradients (up to the sign of the common projection where an equal-projection direction exists), both scale
  with a common loss scale (``d(S·J) = S·d(J)``), and Aligned-MTL's aligned system has condition number 1
  whatever the tasks' scales.
"""

from __future__ import annotations

import pytest
import torch

from mtrl.balancers import BALANCERS, GradientBalancer, GramianWeighting, LossWeighting, make_balancer
from mtrl.balancers.dgr import DGR
from mtrl.engine import GradientEngine
from tests.balancers.properties import (
    EPS,
    _loss_weighting_step,
    assert_aligned_system_is_orthogonal_with_equal_norms,
    assert_direction_invariant_to_task_scaling,
    assert_non_conflicting,
    assert_permutation_invariant,
    assert_permutation_invariant_in_distribution,
    assert_scale_equivariant,
    kept_condition,
)
from tests.balancers.zoo import PROPERTY_TASK_COUNTS, permutation, property_zoo
from tests.engine.helpers import Problem, grads_of, make_problem

ZOO = property_zoo()
#: seeded random: permutation invariant in distribution only
SEEDED = ("rlw", "pcgrad", "graddrop")
#: driven through loss closures: checked through the engine on a permuted model
CLOSURE = ("sgsu", "dgr")
#: weighs the losses by SAC's temperatures before its base: its permutation property (w permutes with α and the
#: tasks) is tested in tests/balancers/test_alpha_weights.py
TEMPERATURE_WEIGHTED = ("alpha_weights",)
DETERMINISTIC = [key for key in BALANCERS if key not in SEEDED + CLOSURE + TEMPERATURE_WEIGHTED]
LOSS_ONLY = [key for key in DETERMINISTIC if issubclass(BALANCERS[key], LossWeighting)]


def _members(*prefixes: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    return [m for m in ZOO if not prefixes or m[0].startswith(prefixes)]


@pytest.mark.parametrize("key", [k for k in DETERMINISTIC if k not in LOSS_ONLY])
def test_gradient_balancers_are_permutation_invariant(key: str) -> None:
    """Every zoo member, three steps each. One numerical exception, of the method: Aligned-MTL works on the
    raw eigenvalues of ``G``, so beyond a condition number of 1e12 (rows spread over 16 decades) its ``d`` is fixed
    only to ``eps·cond`` and is not compared. Task Tensioner on repeated and rank-1 directions is compared like
    every other member (its EDM step splits a class of coinciding directions' weight equally, see
    :func:`mtrl.balancers.task_tensioner.edm_direction`)."""
    for name, jac, losses in ZOO:
        perm, T = permutation(jac.shape[0], seed=len(name)), jac.shape[0]
        if key.startswith("aligned_mtl") and kept_condition(jac) > 1e12:
            continue
        try:
            assert_permutation_invariant(
                lambda T=T: make_balancer(key, T),
                jac,
                losses,
                perm,
                rtol=max(1e-8, 10 * EPS * kept_condition(jac)) if key.startswith("aligned_mtl") else 1e-8,
            )
        except AssertionError as err:
            raise AssertionError(f"{key} on {name}: {err}") from err


@pytest.mark.parametrize("key", LOSS_ONLY)
def test_loss_weightings_are_permutation_invariant(key: str) -> None:
    for T in PROPERTY_TASK_COUNTS:
        losses = 0.2 + torch.rand(T, generator=torch.Generator().manual_seed(T), dtype=torch.float64) * 3
        assert_permutation_invariant(lambda T=T: make_balancer(key, T), torch.zeros(T, 1), losses, permutation(T), 5)


@pytest.mark.parametrize("key", ["pcgrad", "graddrop"])
def test_seeded_gradient_balancers_are_permutation_invariant_in_distribution(key: str) -> None:
    for name in ("full_T3", "moderate_T3", "rank1_T3"):
        _, jac, losses = next(m for m in ZOO if m[0] == name)
        jac = jac[:, :16]
        assert_permutation_invariant_in_distribution(
            lambda seed: make_balancer(key, 3, seed=seed), jac, losses, permutation(3), draws=400  # type: ignore[arg-type,return-value]
        )


def test_rlw_is_permutation_invariant_in_distribution() -> None:
    """RLW's weights are exchangeable: over 2,000 seeds every task's mean weight is 1/T, for any task order."""
    T, draws = 3, 2000
    losses = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    perm = permutation(T)
    weights = torch.stack([_loss_weighting_step(make_balancer("rlw", T, seed=s), losses)[1] for s in range(draws)])  # type: ignore[arg-type]
    weights_perm = torch.stack(
        [_loss_weighting_step(make_balancer("rlw", T, seed=draws + s), losses[perm])[1] for s in range(draws)]  # type: ignore[arg-type]
    )
    error = 5 * float(weights.std(0).max()) / draws**0.5
    torch.testing.assert_close(weights.mean(0), torch.full((T,), 1 / T, dtype=torch.float64), rtol=0, atol=error)
    torch.testing.assert_close(weights_perm.mean(0), weights.mean(0)[perm], rtol=0, atol=2 * error)


def _permuted(prob: Problem, perm: torch.Tensor) -> Problem:
    """The same problem with its tasks reordered: rows of ``x``/``y`` and the batched heads' task slices."""
    other = make_problem(T=prob.num_tasks, n=prob.x.shape[1], seed=99)
    other.net.load_state_dict(prob.net.state_dict())
    with torch.no_grad():
        other.net.heads.weight.copy_(prob.net.heads.weight[perm])
        other.net.heads.bias.copy_(prob.net.heads.bias[perm])
    return Problem(other.net, prob.x[perm], prob.y[perm])


def _engine_grads(prob: Problem, key: str, hparams: dict[str, object], dummies: list | None) -> list[torch.Tensor]:
    balancer = make_balancer(key, prob.num_tasks, **hparams)  # type: ignore[arg-type]
    if dummies is not None:
        balancer.load_state_dict({"dummies": dummies, "base": {}})
    GradientEngine(balancer).backward(
        prob.forward(), prob.shared(), prob.task(), loss_fn=prob.loss_fn(), heads=prob.heads()
    )
    return grads_of(prob.shared()) + grads_of(prob.task())


@pytest.mark.parametrize(
    ("key", "hparams"), [("sgsu", {"inner_lr": 0.3}), ("sgsu", {"first_order": True}), ("dgr", {"lam": 1.0})]
)
def test_closure_balancers_are_permutation_invariant_through_the_engine(key: str, hparams: dict[str, object]) -> None:
    """The same model with its tasks reordered (inputs, targets and per-task heads): the shared gradient is
    unchanged and the heads' gradients are permuted (``dgr`` given its dummy heads permuted with the tasks:
    they are drawn per task slot, a seeded random choice)."""
    prob, perm = make_problem(T=4, n=3), permutation(4)
    dummies = None
    if key == "dgr":
        drawn = DGR(4, **hparams).dummy_heads(prob.heads())  # type: ignore[arg-type]
        dummies = [[d.detach().clone() for d in s] for s in drawn]
    original = _engine_grads(prob, key, hparams, dummies)
    permuted_dummies = None if dummies is None else [[d[perm] for d in s] for s in dummies]
    permuted = _engine_grads(_permuted(prob, perm), key, hparams, permuted_dummies)
    shared = len(prob.shared())
    for a, b in zip(original[:shared], permuted[:shared], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    for a, b in zip(original[shared:], permuted[shared:], strict=True):
        torch.testing.assert_close(b, a[perm], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("key", "hparams"), [("mgda", {}), ("upgrad", {"norm_eps": 0.0, "reg_eps": 0.0})])
def test_mgda_and_upgrad_are_non_conflicting(key: str, hparams: dict[str, float]) -> None:
    """``g_t · d ≥ 0`` for every task; UPGrad as in the paper (no regularisation, no norm threshold). UPGrad
    solves its QPs on ``G / tr G`` (as torchjd), so a task whose squared norm is below ``eps·tr G`` is invisible to
    it: the rows spread over 16 decades (``scaled_*``) are left out for UPGrad (MGDA equilibrates, and passes)."""
    for name, jac, losses in ZOO:
        if key == "upgrad" and name.startswith("scaled"):
            continue
        balancer = make_balancer(key, jac.shape[0], **hparams)
        assert isinstance(balancer, GradientBalancer)
        try:
            assert_non_conflicting(balancer, jac, losses)
        except AssertionError as err:
            raise AssertionError(f"{key} on {name}: {err}") from err


def test_upgrad_default_conflicts_at_most_by_its_regularisation() -> None:
    """With torchjd's ``reg_eps = 1e-4`` (``G/tr G + reg_eps·I``): ``(Jd)_t ≥ −reg_eps·tr(G)·w_t`` (the class
    docstring's bound), wherever ``tr G ≥ norm_eps`` (below it UPGrad returns the plain mean gradient)."""
    for name, jac, losses in ZOO:
        balancer = make_balancer("upgrad", jac.shape[0])
        assert isinstance(balancer, GramianWeighting)
        gram = jac @ jac.T
        if float(gram.trace()) < balancer.norm_eps:  # type: ignore[attr-defined]
            continue
        slack = balancer.reg_eps * gram.trace() * balancer.weights(gram, losses)  # type: ignore[attr-defined]
        try:
            assert_non_conflicting(balancer, jac, losses, slack)
        except AssertionError as err:
            raise AssertionError(f"upgrad on {name}: {err}") from err


@pytest.mark.parametrize("key", ["imtl_g", "aligned_mtl", "mgda", "upgrad"])
def test_common_loss_scale_scales_the_update(key: str) -> None:
    """``d(S·J) = S·d(J)``: IMTL-G's and Aligned-MTL's weights depend on the Gramian only through scale-free
    quantities (cosines; ``B = σ V Λ^{-1/2} Vᵀ``); MGDA's min-norm point and UPGrad's projections likewise.
    Aligned-MTL's eigen-decomposition carries an error of ``eps·cond`` (tolerance scaled by it)."""
    hparams = {"upgrad": {"norm_eps": 0.0}}.get(key, {})
    for name, jac, losses in _members("full", "rank", "moderate", "repeated", "zero_row"):
        T = jac.shape[0]
        rtol = max(1e-9, 10 * EPS * kept_condition(jac)) if key == "aligned_mtl" else 1e-9
        try:
            assert_scale_equivariant(lambda T=T: make_balancer(key, T, **hparams), jac, losses, rtol)  # type: ignore[arg-type,misc]
        except AssertionError as err:
            raise AssertionError(f"{key} on {name}: {err}") from err


def test_imtl_g_direction_is_invariant_to_task_scaling() -> None:
    for name, jac, losses in ZOO:
        T = jac.shape[0]
        try:
            assert_direction_invariant_to_task_scaling(lambda T=T: make_balancer("imtl_g", T), jac, losses)  # type: ignore[misc]
        except AssertionError as err:
            raise AssertionError(f"imtl_g on {name}: {err}") from err


def test_aligned_mtl_aligned_system_has_condition_number_one_at_any_task_scale() -> None:
    for name, jac, _ in _members("full", "rank", "repeated", "zero_row"):
        balancer = make_balancer("aligned_mtl", jac.shape[0])
        assert isinstance(balancer, GramianWeighting)
        try:
            assert_aligned_system_is_orthogonal_with_equal_norms(balancer, jac)
        except AssertionError as err:
            raise AssertionError(f"aligned_mtl on {name}: {err}") from err
