"""Statistics of run records (:class:`~mtrl.analysis.runs.RunRecord`, read by
:func:`~mtrl.analysis.runs.find_runs`): groups × seeds, point estimates and confidence intervals.

Two kinds of statistics:

* :func:`summarize` / :func:`learning_curves`: mean ± standard deviation and Student-t intervals
  over seeds, for one number per run.
* :func:`interval_estimates` / :func:`curve_estimates` / :func:`probability_of_improvement` /
  :func:`performance_profiles`: the aggregate statistics recommended for deep RL with few runs
  (Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS
  2021), computed with their ``rliable`` package: the interquartile mean (IQM: the mean of the middle
  50% of all run × task scores), the mean, the median and the optimality gap, each with a
  stratified-bootstrap confidence interval (runs are resampled with replacement *within* each task,
  so every bootstrap sample keeps every task), the probability that one group beats another on a
  task, and the fraction of run × task scores above each threshold. These need the ``stats`` extra
  (``pip install -e '.[stats]'``: rliable, with ``arch<8`` and ``pandas<3``, the versions its
  bootstrap works with).
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from mtrl.analysis.runs import RunRecord

__all__ = [
    "STATISTICS",
    "Interval",
    "Summary",
    "area_under_curve",
    "curve_estimates",
    "improvement_probability",
    "interval_estimates",
    "learning_curves",
    "markdown_table",
    "performance_profiles",
    "probability_of_improvement",
    "summarize",
    "task_scores",
    "task_table",
]


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and a Student-t confidence half-width over seeds."""

    mean: float
    std: float
    ci: float
    n: int

    def format(self, digits: int = 3) -> str:
        if self.n == 0:
            return "–"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"


def _summary(values: Sequence[float], confidence: float) -> Summary:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    ci = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
    return Summary(float(arr.mean()), std, ci, n)


def summarize(
    records: Sequence[RunRecord], metrics: Sequence[str], confidence: float = 0.95
) -> dict[str, dict[str, Summary]]:
    """``{group: {metric: Summary}}`` over the seeds of each group."""
    by_group: dict[str, list[RunRecord]] = defaultdict(list)
    for rec in records:
        by_group[rec.group].append(rec)
    return {
        group: {m: _summary([r.values.get(m, math.nan) for r in recs], confidence) for m in metrics}
        for group, recs in sorted(by_group.items())
    }


def markdown_table(summary: Mapping[str, Mapping[str, Summary]], metrics: Sequence[str], digits: int = 3) -> str:
    """A Markdown table: one row per group, ``mean ± std (n)`` per metric."""
    lines = ["| run | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for group, row in summary.items():
        lines.append(f"| {group} | " + " | ".join(row[m].format(digits) for m in metrics) + " |")
    return "\n".join(lines)


def learning_curves(records: Sequence[RunRecord], metric: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per group: ``(steps, mean, ci95)`` of ``metric`` read from each run's ``metrics.jsonl``.

    Seeds are aligned on the steps that every seed of the group logged.
    """
    series: dict[str, list[dict[int, float]]] = defaultdict(list)
    for rec in records:
        path = rec.path / "metrics.jsonl"
        if not path.is_file():
            continue
        points: dict[int, float] = {}
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {number} is not JSON ({err}; a truncated write?)") from None
            if metric in row and "step" in row:
                points[int(row["step"])] = float(row[metric])
        if points:
            series[rec.group].append(points)
    curves = {}
    for group, runs in series.items():
        steps = sorted(set.intersection(*(set(r) for r in runs)))
        values = np.asarray([[r[s] for s in steps] for r in runs], dtype=np.float64)  # (seeds, steps)
        mean = values.mean(axis=0)
        n = values.shape[0]
        half = stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
        curves[group] = (np.asarray(steps), mean, half)
    return curves


# --- rliable: aggregate statistics with stratified-bootstrap intervals ---------------------------------
#: The aggregate statistics :func:`interval_estimates` knows, by name: rliable's
#: ``aggregate_{iqm,mean,median,optimality_gap}``. Over a ``(runs, tasks)`` matrix: ``iqm`` is the 25%
#: trimmed mean of all entries, ``mean`` their mean, ``median`` the median over tasks of the per-task
#: means, ``optimality_gap`` the mean shortfall below 1.0 (for success rates).
STATISTICS: tuple[str, ...] = ("iqm", "mean", "median", "optimality_gap")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval ``[low, high]``."""

    point: float
    low: float
    high: float

    def format(self, digits: int = 2) -> str:
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _rliable() -> tuple[Any, Any]:
    try:
        from rliable import library, metrics
    except ImportError as err:  # rliable 1.2 imports only beside arch<8 and pandas<3
        raise ImportError(
            f"IQM and bootstrap intervals need rliable: pip install -e '.[stats]' (rliable, arch<8, pandas<3) ({err})"
        ) from err
    return library, metrics


def _aggregate(names: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
    _, metrics = _rliable()
    unknown = [n for n in names if n not in STATISTICS]
    if unknown:
        raise ValueError(f"unknown statistic(s) {unknown}; valid choices: {', '.join(STATISTICS)}")
    funcs = [getattr(metrics, f"aggregate_{name}") for name in names]
    return lambda scores: np.array([f(scores) for f in funcs])


def _scores(scores: Mapping[str, np.ndarray], dims: int) -> dict[str, np.ndarray]:
    out = {}
    for group, values in scores.items():
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != dims or min(arr.shape) < 1:
            raise ValueError(f"scores of {group!r}: need a non-empty {dims}-d array (runs, tasks, …), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"scores of {group!r} contain NaN or inf (a run without this evaluation?)")
        out[group] = arr
    return out


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for one bootstrap and put its state back afterwards: rliable 1.2's
    bootstraps draw their indices from the *global* generator (they ignore ``random_state``)."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch 7 deprecates random_state, which rliable 1.2 passes
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        np.random.set_state(saved)


def _bootstrap(
    data: Mapping[str, Any], statistic: Callable[..., np.ndarray], reps: int, confidence: float, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's ``get_interval_estimates`` of ``statistic`` on every entry of ``data`` (a score matrix, or a
    pair of them), seeded: ``(points, intervals)`` by key, intervals ``(2, ...)`` with the lower bounds first."""
    library, _ = _rliable()
    with _seeded(seed):
        points, intervals = library.get_interval_estimates(
            data, statistic, reps=reps, confidence_interval_size=confidence, random_state=np.random.RandomState(seed)
        )
    return points, intervals


def interval_estimates(
    scores: Mapping[str, np.ndarray],
    statistics: Sequence[str] = ("iqm", "mean"),
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, Interval]]:
    """``{group: {statistic: Interval}}`` with stratified-bootstrap percentile intervals (rliable).

    Args:
        scores: per group a ``(runs, tasks)`` matrix (e.g. final success of each seed on each task).
        statistics: names from :data:`STATISTICS`.
        reps: bootstrap replications.
        confidence: interval coverage.
        seed: seeds the bootstrap (the same scores always give the same intervals).
    """
    data = _scores(scores, 2)
    points, intervals = _bootstrap(data, _aggregate(statistics), reps, confidence, seed)
    return {
        group: {
            name: Interval(float(points[group][i]), float(intervals[group][0, i]), float(intervals[group][1, i]))
            for i, name in enumerate(statistics)
        }
        for group in data
    }


def curve_estimates(
    scores: Mapping[str, np.ndarray],
    statistic: str = "iqm",
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, list[Interval]]:
    """Sample-efficiency curves: per group, ``statistic`` with its interval at each evaluation point of
    ``scores[group]`` ``(runs, tasks, points)`` (:func:`interval_estimates` at every point)."""
    data = _scores(scores, 3)
    out: dict[str, list[Interval]] = {group: [] for group in data}
    num_points = {arr.shape[2] for arr in data.values()}
    if len(num_points) != 1:
        raise ValueError(f"every group needs the same evaluation points; got {sorted(num_points)} points")
    for k in range(num_points.pop()):
        at_k = interval_estimates({g: arr[:, :, k] for g, arr in data.items()}, (statistic,), reps, confidence, seed)
        for group, row in at_k.items():
            out[group].append(row[statistic])
    return out


def improvement_probability(x: np.ndarray, y: np.ndarray) -> float:
    """The probability that a run of ``x`` ``(runs_x, tasks)`` scores above a run of ``y`` ``(runs_y, tasks)`` on a
    task, averaged over tasks: ``(1/M) Σ_m (#{x_im > y_jm} + ½ #{x_im = y_jm}) / (runs_x · runs_y)``.

    The same number as rliable 1.2's ``metrics.probability_of_improvement`` (the Mann-Whitney U of each task over
    ``runs_x · runs_y``, 0.5 for identical columns), bit for bit: each task's count is an exact integer
    ``2·#{>} + #{=}``, divided once, and the tasks averaged by one ``np.mean`` as rliable does
    (``tests/test_transfer_stats.py``). Counting every pair at once, it is about two orders of magnitude faster
    than one ``scipy.stats.mannwhitneyu`` per task, which dominated every bootstrap of this statistic."""
    above = (x[:, None, :] > y[None, :, :]).sum(axis=(0, 1))
    ties = (x[:, None, :] == y[None, :, :]).sum(axis=(0, 1))
    per_task = (2 * above + ties) / (2 * x.shape[0] * y.shape[0])
    return float(np.mean(per_task))


def probability_of_improvement(
    scores: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    lower_is_better: bool = False,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[tuple[str, str], Interval]:
    """``{(x, y): Interval}``: the probability that a run of group ``x`` scores better than a run of group
    ``y`` on a task, averaged over tasks (:func:`improvement_probability`, the same number as rliable's
    ``probability_of_improvement``: the Mann-Whitney U statistic of each task divided by ``runs_x · runs_y``,
    ties counting one half), with rliable's stratified bootstrap interval in which the runs of both groups are
    resampled independently within each task.

    Args:
        scores: per group a ``(runs, tasks)`` matrix; the two groups of a pair need the same tasks (columns).
        pairs: ``(x, y)`` group names.
        lower_is_better: True for scores where lower is better (Δm%): then "better" is "lower".
        reps: bootstrap replications.
        confidence: interval coverage.
        seed: seeds the bootstrap.
    """
    data = _scores(scores, 2)
    sign = -1.0 if lower_is_better else 1.0
    pair_data: dict[str, list[np.ndarray]] = {}
    for x, y in pairs:
        for name in (x, y):
            if name not in data:
                raise ValueError(f"no group {name!r} to compare; groups: {', '.join(sorted(data))}")
        if data[x].shape[1] != data[y].shape[1]:
            raise ValueError(
                f"{x!r} has {data[x].shape[1]} tasks, {y!r} {data[y].shape[1]}: compare groups of one suite"
            )
        pair_data[f"{x}\0{y}"] = [sign * data[x], sign * data[y]]

    def improvement(x_scores: np.ndarray, y_scores: np.ndarray) -> np.ndarray:
        return np.array([improvement_probability(x_scores, y_scores)])

    points, intervals = _bootstrap(pair_data, improvement, reps, confidence, seed)
    return {
        (x, y): Interval(
            float(points[f"{x}\0{y}"][0]), float(intervals[f"{x}\0{y}"][0, 0]), float(intervals[f"{x}\0{y}"][1, 0])
        )
        for x, y in pairs
    }


def performance_profiles(
    scores: Mapping[str, np.ndarray],
    taus: Sequence[float] | np.ndarray,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score distributions (rliable's performance profiles): per group, the fraction of its run × task
    scores above each threshold ``tau`` ``(len(taus),)`` and its stratified-bootstrap interval
    ``(2, len(taus))`` (lower bounds first)."""
    data = _scores(scores, 2)
    tau_arr = np.asarray(taus, dtype=np.float64)
    profiles, cis = _bootstrap(data, lambda m: np.array([np.mean(m > t) for t in tau_arr]), reps, confidence, seed)
    return {group: (np.asarray(profiles[group]), np.asarray(cis[group])) for group in data}


def area_under_curve(scores_rtp: np.ndarray) -> np.ndarray:
    """Per run and task, the mean score over the evaluation points ``(runs, tasks, points) -> (runs, tasks)``:
    the area under the learning curve divided by its length when the points are equally spaced (a
    run that learns earlier scores higher at the same final value)."""
    arr = np.asarray(scores_rtp, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"area_under_curve expects (runs, tasks, points); got shape {arr.shape}")
    return arr.mean(axis=2)


def task_scores(
    records: Sequence[RunRecord], prefix: str = "summary/final/success/"
) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per group, the task names and a ``(runs, tasks)`` matrix of the results keys ``<prefix><task>``
    (by default each run's final evaluation success per task, from ``results.json``).

    Every run of a group must report the same tasks (else ``ValueError``, naming the run)."""
    by_group: dict[str, list[RunRecord]] = defaultdict(list)
    for rec in records:
        by_group[rec.group].append(rec)
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    for group, recs in sorted(by_group.items()):
        tasks = sorted(k[len(prefix) :] for k in recs[0].values if k.startswith(prefix))
        if not tasks:
            raise ValueError(f"run {recs[0].path} has no results keys starting with {prefix!r}")
        rows = []
        for rec in sorted(recs, key=lambda r: r.seed):
            have = sorted(k[len(prefix) :] for k in rec.values if k.startswith(prefix))
            if have != tasks:
                raise ValueError(f"run {rec.path} reports tasks {have}, other runs of {group!r} {tasks}")
            rows.append([rec.values[prefix + t] for t in tasks])
        out[group] = (tasks, np.asarray(rows, dtype=np.float64))
    return out


def task_table(scores: Mapping[str, tuple[list[str], np.ndarray]], reps: int = 2000) -> str:
    """Markdown: per group IQM and mean over runs × tasks with 95% stratified-bootstrap intervals (tasks
    as strata), then the mean over runs of every task."""
    matrices = {g: m for g, (_, m) in scores.items()}
    est = interval_estimates(matrices, ("iqm", "mean"), reps=reps)
    lines = ["| group | runs | IQM [95% CI] | mean [95% CI] |", "|---|---|---|---|"]
    for group, (_, m) in scores.items():
        lines.append(f"| {group} | {m.shape[0]} | {est[group]['iqm'].format()} | {est[group]['mean'].format()} |")
    tasks = sorted({t for names, _ in scores.values() for t in names})
    lines += ["", "| task | " + " | ".join(scores) + " |", "|---|" + "---|" * len(scores)]
    for task in tasks:
        cells = []
        for names, m in scores.values():
            cells.append(f"{m[:, names.index(task)].mean():.2f}" if task in names else "–")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
