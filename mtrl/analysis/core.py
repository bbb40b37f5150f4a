"""Run records and their statistics: groups × seeds, point estimates and confidence intervals.

A run directory (written by ``scripts/train.py``, ``scripts/train_stl.py`` or ``scripts/train_vision.py``)
holds ``config.yaml`` (the resolved config; its ``balancer`` and ``seed`` keys group the runs),
``results.json`` (final numbers) and ``metrics.jsonl`` (the logged scalars over time).

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
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from mtrl.config import yaml_problem

__all__ = [
    "STATISTICS",
    "Interval",
    "RunRecord",
    "Summary",
    "area_under_curve",
    "curve_estimates",
    "find_runs",
    "flatten",
    "group_name",
    "interval_estimates",
    "learning_curves",
    "markdown_table",
    "performance_profiles",
    "probability_of_improvement",
    "run_files",
    "run_history",
    "summarize",
    "task_scores",
    "task_table",
    "unfinished_note",
]


@dataclass(frozen=True)
class RunRecord:
    """One finished (or interrupted) run."""

    path: Path
    group: str
    seed: int
    results: dict[str, float]


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


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping as ``{"a/b": value}``."""
    flat: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def group_name(cfg: Mapping[str, Any], group_keys: Sequence[str]) -> str:
    """The group of a run: the values of ``group_keys`` (dotted paths) in its config, ``key=value`` joined by
    commas when there are several keys (a ``{name, hparams}`` mapping counts by its name)."""
    parts = []
    for key in group_keys:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and "name" in node:  # the vision config nests {name, hparams}
            node = node["name"]
        if node is not None:
            parts.append(str(node) if len(group_keys) == 1 else f"{key}={node}")
    return ",".join(parts) or "run"


def run_files(root: str | Path, skipped: list[str] | None = None) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """``(run directory, config, results)`` of every directory under ``root`` holding ``config.yaml``, in path
    order.

    A run directory without ``results.json`` (the run crashed, or is still running) is left out; one whose
    ``config.yaml`` or ``results.json`` cannot be read (a truncated write, not YAML/JSON, not a mapping) is left
    out with a note naming the file and why when ``skipped`` is a list (crashed runs get a note too), and raises
    ``ValueError`` naming it otherwise."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"run root {str(root)!r} does not exist; pass the folder holding the run directories")
    runs = []
    for cfg_path in sorted(root.rglob("config.yaml")):
        res_path = cfg_path.parent / "results.json"
        if not res_path.is_file():
            if skipped is not None:
                skipped.append(
                    f"{cfg_path.parent}: no results.json (crashed, or still running); resume it to include it"
                )
            continue
        try:
            cfg, results = _read_mapping(cfg_path), _read_mapping(res_path)
        except ValueError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
            continue
        runs.append((cfg_path.parent, cfg, results))
    return runs


def _read_mapping(path: Path) -> dict[str, Any]:
    """The mapping a run's ``config.yaml`` or ``results.json`` holds; ``ValueError`` naming the file otherwise."""
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        detail = yaml_problem(err) if isinstance(err, yaml.YAMLError) else str(err)
        raise ValueError(f"{path}: unreadable ({detail}; a truncated write?); run or resume it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds {type(data).__name__}, not a mapping; run or resume it again")
    return data


def unfinished_note(path: Path, results: Mapping[str, Any]) -> str | None:
    """The note that skips a run whose ``results.json`` says ``"complete": false`` (interrupted, not
    finished), or None for a finished run."""
    if results.get("complete") is False:
        return f'{path}: unfinished ("complete": false); resume it to include it'
    return None


def find_runs(
    root: str | Path, group_keys: Sequence[str] = ("balancer",), skipped: list[str] | None = None
) -> list[RunRecord]:
    """Every directory under ``root`` holding ``config.yaml`` and ``results.json``.

    With a ``skipped`` list, runs whose ``results.json`` says ``"complete": false`` (interrupted, not
    finished), runs without ``results.json`` (crashed) and runs whose files cannot be read are left out and a
    note naming each and why is appended to it (:func:`run_files`)."""
    records = []
    for path, cfg, results in run_files(root, skipped):
        note = unfinished_note(path, results)
        if skipped is not None and note is not None:
            skipped.append(note)
            continue
        records.append(
            RunRecord(
                path=path, group=group_name(cfg, group_keys), seed=int(cfg.get("seed", 0)), results=flatten(results)
            )
        )
    return records


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
        group: {m: _summary([r.results.get(m, math.nan) for r in recs], confidence) for m in metrics}
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


def probability_of_improvement(
    scores: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str]],
    lower_is_better: bool = False,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[tuple[str, str], Interval]:
    """``{(x, y): Interval}``: the probability that a run of group ``x`` scores better than a run of group
    ``y`` on a task, averaged over tasks (rliable's ``probability_of_improvement``: the Mann-Whitney U
    statistic of each task divided by ``runs_x · runs_y``, ties counting one half), with a stratified
    bootstrap interval in which the runs of both groups are resampled independently within each task.

    Args:
        scores: per group a ``(runs, tasks)`` matrix; the two groups of a pair need the same tasks (columns).
        pairs: ``(x, y)`` group names.
        lower_is_better: True for scores where lower is better (Δm%): then "better" is "lower".
        reps: bootstrap replications.
        confidence: interval coverage.
        seed: seeds the bootstrap.
    """
    _, metrics = _rliable()
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
        return np.array([metrics.probability_of_improvement(x_scores, y_scores)])

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
        tasks = sorted(k[len(prefix) :] for k in recs[0].results if k.startswith(prefix))
        if not tasks:
            raise ValueError(f"run {recs[0].path} has no results keys starting with {prefix!r}")
        rows = []
        for rec in sorted(recs, key=lambda r: r.seed):
            have = sorted(k[len(prefix) :] for k in rec.results if k.startswith(prefix))
            if have != tasks:
                raise ValueError(f"run {rec.path} reports tasks {have}, other runs of {group!r} {tasks}")
            rows.append([rec.results[prefix + t] for t in tasks])
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


def run_history(run_dir: str | Path, finished_only: bool = True) -> dict[str, dict[int, dict[str, float]]] | None:
    """Per task, ``{step: {"success": s, "return": r}}`` of every evaluation of one RL run, from its
    ``results.json`` (``scripts/train.py``'s ``evals`` or ``scripts/train_stl.py``'s per-task
    ``history``); None if there is no results file, or, with ``finished_only``, the run is not complete."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    results = _read_mapping(path)  # ValueError naming the file when it cannot be read
    if finished_only and results.get("complete") is False:
        return None
    if "history" in results:  # train_stl.py: one history per task
        return {
            task: {int(h["step"]): {"success": float(h["success"]), "return": float(h["return"])} for h in hist}
            for task, hist in results["history"].items()
        }
    out: dict[str, dict[int, dict[str, float]]] = {}
    for e in results.get("evals", []):
        if "return" not in e:
            raise ValueError(f"{path} has no per-task returns (written before they were recorded); run it again")
        for task, success in e["success"].items():
            out.setdefault(task, {})[int(e["step"])] = {"success": float(success), "return": float(e["return"][task])}
    return out
