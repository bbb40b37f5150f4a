"""Pre-registered statistics of the balancer benchmark (docs/benchmark.md): is one SAC per task better than
multi-task SAC, and how many seeds does a comparison need.

* :func:`last_evals_score`: a run's score per task, the mean success of its last ``n`` evaluations.
* :func:`iqm_difference`: ``IQM(x) − IQM(y)`` over runs × tasks with a stratified-bootstrap interval (the runs of
  both groups resampled independently within each task), through the same seeded rliable bootstrap as
  :func:`~mtrl.analysis.core.probability_of_improvement`.
* :func:`confirm`: the confirmation rule stated before the runs: the lower bound of the probability that a
  run of ``x`` beats a run of ``y`` is above 0.5 **and** the interval of ``IQM(x) − IQM(y)`` lies above 0.
* :func:`seeds_for_difference`: seeds per group that detect a difference ``delta`` of the run score, given its
  standard deviation over seeds (the two-sample normal approximation).
* :func:`improvement_p_value` and :func:`holm`: the bootstrap p-value of a comparison (by test inversion) and Holm's
  step-down rule over several comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats

from mtrl.analysis.core import Interval, _bootstrap, _rliable, _scores, probability_of_improvement

K = TypeVar("K", bound=Hashable)

__all__ = [
    "Confirmation",
    "confirm",
    "holm",
    "improvement_p_value",
    "iqm_difference",
    "last_evals_score",
    "seeds_for_difference",
]


def last_evals_score(
    history: Mapping[str, Mapping[int, Mapping[str, float]]], tasks: Sequence[str], n: int = 3, key: str = "success"
) -> np.ndarray:
    """Per task (in ``tasks`` order), the mean of ``key`` over the last ``n`` evaluation steps of a run.

    ``history`` is :func:`~mtrl.analysis.runs.run_history`'s ``{task: {step: {"success": s, "return": r}}}``.
    Raises ``ValueError`` naming the task when it is missing or has fewer than ``n`` evaluations."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = []
    for task in tasks:
        steps = sorted(history.get(task, {}))
        if len(steps) < n:
            raise ValueError(f"task {task!r} has {len(steps)} evaluation(s); the score needs the last {n}")
        out.append(float(np.mean([history[task][s][key] for s in steps[-n:]])))
    return np.asarray(out, dtype=np.float64)


def iqm_difference(x: np.ndarray, y: np.ndarray, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> Interval:
    """``IQM(x) − IQM(y)`` of two ``(runs, tasks)`` score matrices (the same tasks, any run counts), with its
    stratified-bootstrap percentile interval: each bootstrap sample resamples the runs of ``x`` and of ``y``
    independently, with replacement, within each task (rliable's ``StratifiedIndependentBootstrap``)."""
    data = _scores({"x": x, "y": y}, 2)
    if data["x"].shape[1] != data["y"].shape[1]:
        raise ValueError(f"x has {data['x'].shape[1]} tasks, y {data['y'].shape[1]}: compare scores of one task set")
    _, metrics = _rliable()

    def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(a) - metrics.aggregate_iqm(b)])

    points, intervals = _bootstrap({"d": [data["x"], data["y"]]}, difference, reps, confidence, seed)
    return Interval(float(points["d"][0]), float(intervals["d"][0, 0]), float(intervals["d"][1, 0]))


@dataclass(frozen=True)
class Confirmation:
    """The outcome of :func:`confirm`.

    Attributes:
        improvement: P(a run of x scores above a run of y on a task), averaged over tasks, with its interval.
        iqm_difference: ``IQM(x) − IQM(y)`` with its interval.
        confirmed: ``improvement.low > 0.5`` and ``iqm_difference.low > 0``.
    """

    improvement: Interval
    iqm_difference: Interval
    confirmed: bool


def confirm(x: np.ndarray, y: np.ndarray, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> Confirmation:
    """The pre-stated confirmation rule: ``x`` (e.g. one SAC per task) is better than ``y`` (e.g. ``ew``) when the
    lower bound of the probability of improvement of ``x`` over ``y`` is above 0.5 and the interval of
    ``IQM(x) − IQM(y)`` excludes 0 on the positive side. Both intervals are ``confidence`` stratified-bootstrap
    percentile intervals (tasks as strata) with ``reps`` resamples, seeded by ``seed``."""
    improvement = probability_of_improvement({"x": x, "y": y}, [("x", "y")], reps=reps, confidence=confidence,
                                             seed=seed)[("x", "y")]  # fmt: skip
    diff = iqm_difference(x, y, reps=reps, confidence=confidence, seed=seed)
    return Confirmation(improvement, diff, improvement.low > 0.5 and diff.low > 0.0)


def improvement_p_value(x: np.ndarray, y: np.ndarray, reps: int = 2000, seed: int = 0, steps: int = 12) -> float:
    """Two-sided bootstrap p-value of "a run of ``x`` beats a run of ``y`` with probability 0.5", by test inversion:
    the smallest ``α`` for which the ``(1 − α)`` stratified-bootstrap percentile interval of the probability of
    improvement (:func:`~mtrl.analysis.core.probability_of_improvement`) excludes 0.5. The bootstrap is seeded, so
    every level resamples the same runs and the intervals are nested; ``α`` is found by bisection to within
    ``2**-steps`` (``steps + 1`` bootstraps), and is 1.0 when not even the narrowest interval excludes 0.5."""

    def excludes(alpha: float) -> bool:
        iv = probability_of_improvement({"x": x, "y": y}, [("x", "y")], reps=reps, confidence=1 - alpha, seed=seed)
        return iv[("x", "y")].low > 0.5 or iv[("x", "y")].high < 0.5

    if not excludes(1.0 - 2.0**-steps):
        return 1.0
    low, high = 0.0, 1.0  # the answer is a multiple of 2**-steps
    for _ in range(steps):
        mid = (low + high) / 2
        low, high = (low, mid) if excludes(mid) else (mid, high)
    return high


def seeds_for_difference(sd: float, delta: float = 0.1, alpha: float = 0.05, power: float = 0.8) -> int:
    """Seeds per group for a two-sided comparison of two group means to detect a difference ``delta`` at level
    ``alpha`` with probability ``power``, when a run's score varies over seeds with standard deviation ``sd``:
    ``n = ⌈2 (z_{1−α/2} + z_power)² sd² / delta²⌉`` (two independent samples, normal approximation), at least 2."""
    if not (sd >= 0 and delta > 0 and 0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"need sd >= 0, delta > 0, 0 < alpha < 1, 0 < power < 1; got {sd}, {delta}, {alpha}, {power}")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return max(2, math.ceil(2 * z * z * sd * sd / (delta * delta) - 1e-9))


def holm(p_values: Mapping[K, float], alpha: float = 0.05) -> dict[K, bool]:
    """Holm's step-down rule: sort the ``m`` p-values ascending and reject the ``j``-th smallest (``j = 1..m``)
    while every one up to it satisfies ``p_(j) ≤ alpha / (m − j + 1)``; ``{name: rejected}`` (family-wise error
    rate ≤ ``alpha``)."""
    order = sorted(p_values, key=lambda name: p_values[name])
    m, going = len(order), True
    rejected: dict[K, bool] = {}
    for j, name in enumerate(order):
        going = going and p_values[name] <= alpha / (m - j)
        rejected[name] = going
    return {name: rejected[name] for name in p_values}
