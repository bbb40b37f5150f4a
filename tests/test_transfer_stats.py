"""The pre-registered statistics of the balancer benchmark (mtrl.analysis.transfer) on score arrays whose answer is
known: a clear gap is confirmed, identical distributions are not."""

from __future__ import annotations

import numpy as np
import pytest

from mtrl.analysis.transfer import (
    confirm,
    holm,
    improvement_p_value,
    iqm_difference,
    last_evals_score,
    seeds_for_difference,
)

RUNS, TASKS = 10, 4


def _scores(center: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(center + 0.05 * rng.standard_normal((RUNS, TASKS)), 0.0, 1.0)


def test_a_clear_gap_is_confirmed() -> None:
    high, low = _scores(0.9, 0), _scores(0.3, 1)
    result = confirm(high, low, reps=200)
    assert result.confirmed
    assert result.improvement.point == 1.0 and result.improvement.low > 0.5  # every run of x beats every run of y
    assert result.iqm_difference.low > 0.4 and abs(result.iqm_difference.point - 0.6) < 0.05
    assert not confirm(low, high, reps=200).confirmed  # the other way round


def test_identical_distributions_are_not_confirmed() -> None:
    scores = _scores(0.6, 2)
    result = confirm(scores, scores.copy(), reps=200)
    assert not result.confirmed
    assert result.improvement.point == 0.5 and result.improvement.low < 0.5 < result.improvement.high
    assert result.iqm_difference.point == 0.0 and result.iqm_difference.low < 0.0 < result.iqm_difference.high


def test_two_draws_of_one_distribution_are_not_confirmed() -> None:
    result = confirm(_scores(0.6, 3), _scores(0.6, 4), reps=200)
    assert not result.confirmed and result.improvement.low < 0.5


def test_iqm_difference_is_seeded_and_checks_the_tasks() -> None:
    x, y = _scores(0.7, 5), _scores(0.5, 6)
    assert iqm_difference(x, y, reps=100, seed=1) == iqm_difference(x, y, reps=100, seed=1)
    with pytest.raises(ValueError, match="tasks"):
        iqm_difference(x, y[:, :3])


def test_last_evals_score_is_the_mean_of_the_last_three_evaluations() -> None:
    history = {
        "a": {10: {"success": 0.0}, 20: {"success": 0.2}, 30: {"success": 0.4}, 40: {"success": 0.9}},
        "b": {30: {"success": 1.0}, 10: {"success": 0.0}, 20: {"success": 0.5}},  # any order of steps
    }
    np.testing.assert_allclose(last_evals_score(history, ["b", "a"]), [0.5, 0.5])
    with pytest.raises(ValueError, match="'b' has 3 evaluation"):
        last_evals_score(history, ["b"], n=4)
    with pytest.raises(ValueError, match="'c' has 0"):
        last_evals_score(history, ["c"])


def test_seeds_for_difference() -> None:
    # 2 (1.95996 + 0.84162)^2 = 15.70: sd = delta needs 16 seeds per group at alpha 0.05, power 0.8
    assert seeds_for_difference(0.1, 0.1) == 16
    assert seeds_for_difference(0.05, 0.1) == 4  # a quarter of the variance, a quarter of the seeds (rounded up)
    assert seeds_for_difference(0.1, 0.1, alpha=0.05 / 9) > seeds_for_difference(0.1, 0.1)  # Bonferroni level
    assert seeds_for_difference(0.0, 0.1) == 2
    with pytest.raises(ValueError):
        seeds_for_difference(0.1, 0.0)


def test_improvement_p_value_by_test_inversion() -> None:
    # a clear gap is excluded by every interval tried, down to the finest level of the bisection (2^-5)
    assert improvement_p_value(_scores(0.9, 0), _scores(0.3, 1), reps=100, steps=5) == 2.0**-5
    # two draws of one distribution: only narrow intervals exclude 0.5, if any
    assert improvement_p_value(_scores(0.6, 3), _scores(0.6, 4), reps=100, steps=5) > 0.2


def test_holm_steps_down() -> None:
    # m = 3: 0.01 <= 0.05/3, then 0.03 > 0.05/2 stops, so 0.04 is not rejected either
    assert holm({"b": 0.04, "a": 0.01, "c": 0.03}) == {"b": False, "a": True, "c": False}
    assert holm({"a": 0.01, "b": 0.02}) == {"a": True, "b": True}  # 0.01 <= 0.025, 0.02 <= 0.05
    assert holm({}) == {}


def test_improvement_probability_equals_rliables_bit_for_bit() -> None:
    from rliable import metrics

    from mtrl.analysis.core import improvement_probability

    rng = np.random.default_rng(7)
    for runs_x, runs_y, tasks in ((5, 5, 4), (10, 3, 6), (1, 7, 1), (12, 12, 10)):
        # success rates on a 20-episode grid: many ties, as real evaluations have
        x = rng.integers(0, 21, (runs_x, tasks)) / 20
        y = rng.integers(0, 21, (runs_y, tasks)) / 20
        if runs_x == runs_y:
            y[:, 0] = x[:, 0]  # one identical column: rliable's 0.5 shortcut
        assert improvement_probability(x, y) == metrics.probability_of_improvement(x, y)
        assert improvement_probability(y, x) == metrics.probability_of_improvement(y, x)
    assert improvement_probability(np.ones((3, 2)), np.zeros((4, 2))) == 1.0
