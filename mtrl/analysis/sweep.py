"""A sweep (balancers × seeds under one root) as one report of reliable statistics.

:func:`load_sweep` reads every finished run under a root (through the one run loader,
:func:`~mtrl.analysis.runs.find_runs`) and tells RL runs from vision runs by their ``results.json``:

* **RL** (``scripts/train.py``, ``scripts/train_stl.py``): ``summary.reported_statistic`` names the
  protocol's headline evaluation (``"final"`` for ``metaworld-v3`` and ``toy``, ``"best"`` for
  ``mtrl-legacy``), ``summary.reported_value`` is its mean success over tasks, and
  ``summary.final.success`` / ``summary.best.success`` the per-task success of that same evaluation:
  a run's row of the score matrix. Higher is better.
* **vision** (``scripts/train_vision.py`` with a ``baseline``): ``delta_m`` holds the relative drop
  ``r_m`` of every metric against the baseline (positive = worse); a run's row is ``100·r_m`` per metric,
  whose mean is the run's metric-weighted Δm%. Lower is better, so there is no optimality gap.

:func:`sweep_report` computes, per group, rliable's IQM, mean, median (and, for RL, optimality gap
to success 1.0) with stratified-bootstrap intervals (runs resampled within each task or metric), and
the probability of improvement of named pairs; :func:`report_markdown` writes it as Markdown;
:func:`sample_efficiency` gives the IQM over the evaluation steps (RL: success; vision: Δm% per metric).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.analysis.core import Interval, curve_estimates, interval_estimates, probability_of_improvement
from mtrl.analysis.runs import RunRecord, find_runs, flatten, history_of, run_history
from mtrl.analysis.transfer import holm, improvement_p_value, last_evals_score

__all__ = [
    "CONFIG_KEYS",
    "GroupScores",
    "Sweep",
    "SweepReport",
    "group_scores",
    "load_sweep",
    "report_markdown",
    "result_keys",
    "sample_efficiency",
    "sweep_report",
]

#: Top-level ``results.json`` keys copied from the configuration, never shown unless asked for by name.
CONFIG_KEYS: tuple[str, ...] = ("seed", "protocol_details", "config", "single_task", "complete")
_LABELS = {"iqm": "IQM", "mean": "mean", "median": "median", "optimality_gap": "optimality gap"}


@dataclass(frozen=True)
class Sweep:
    """The finished runs under one root, all of one kind (``"rl"`` or ``"vision"``) and one protocol.

    Attributes:
        root: the folder that was searched.
        kind: ``"rl"`` (success rates, higher is better) or ``"vision"`` (Δm%, lower is better).
        protocol: the RL protocol's name, or for vision the data set and the Δm baseline.
        statistic: the headline evaluation of RL runs (``"final"`` or ``"best"``); ``"Δm%"`` for vision.
        runs: the runs, in path order.
        skipped: one note per run directory left out (unfinished, no evaluation, unknown results).
    """

    root: Path
    kind: str
    protocol: str
    statistic: str
    runs: tuple[RunRecord, ...]
    skipped: tuple[str, ...]
    #: RL only: score each run by the mean success of its last ``last`` evaluations per task
    #: (:func:`~mtrl.analysis.transfer.last_evals_score`) instead of the headline evaluation; None: the headline.
    last: int | None = None

    @property
    def lower_is_better(self) -> bool:
        """True for vision sweeps (Δm%)."""
        return self.kind == "vision"


@dataclass(frozen=True)
class GroupScores:
    """The runs of one group as a ``(runs, tasks)`` score matrix (rows ordered by seed).

    Attributes:
        tasks: the columns: RL task names, or vision metric keys ``"<task>/<metric>"``.
        scores: RL: success of the headline evaluation per task; vision: ``100·r_m`` per metric.
        headline: per-run headline numbers by label (RL: ``summary.reported_value``; vision: both Δm% forms).
        seeds: the runs' seeds, one per row.
        paths: the runs' directories, one per row.
    """

    tasks: tuple[str, ...]
    scores: np.ndarray
    headline: dict[str, np.ndarray]
    seeds: tuple[int, ...]
    paths: tuple[Path, ...]


@dataclass(frozen=True)
class SweepReport:
    """Everything :func:`report_markdown` prints: per-group matrices, interval estimates, improvements."""

    sweep: Sweep
    groups: dict[str, GroupScores]
    estimates: dict[str, dict[str, Interval]]
    improvements: dict[tuple[str, str], Interval]
    reps: int
    confidence: float
    #: With Holm's rule: per compared pair its bootstrap p-value
    #: (:func:`~mtrl.analysis.transfer.improvement_p_value`) and whether Holm's step-down rule at family-wise
    #: level :attr:`holm_alpha` declares a difference; empty without it.
    p_values: dict[tuple[str, str], float] = dataclasses.field(default_factory=dict)
    holm: dict[tuple[str, str], bool] = dataclasses.field(default_factory=dict)
    holm_alpha: float | None = None


def _kind(results: Mapping[str, Any]) -> str | None:
    summary = results.get("summary")
    if isinstance(summary, Mapping) and "reported_statistic" in summary and "protocol" in results:
        return "rl"
    if "selected" in results and "tasks" in results:
        return "vision"
    return None


def _unusable(run: RunRecord) -> str | None:
    """The note that leaves a finished run out of a sweep: results of neither kind, or an RL run not yet
    evaluated; None for a run the sweep can use."""
    kind = _kind(run.results)
    if kind is None:
        return f"{run.path}: results.json of neither an RL nor a vision run"
    if kind == "rl" and not run.results["summary"].get("num_evals"):
        return f"{run.path}: no evaluation yet"
    return None


def _protocol(kind: str, results: Mapping[str, Any]) -> str:
    if kind == "rl":
        return str(results["protocol"])
    delta = results.get("delta_m")
    return f"{results.get('data')}, Δm against {delta['baseline'] if delta else 'no baseline'}"


def load_sweep(root: str | Path, group_keys: Sequence[str] = ("balancer",), last: int | None = None) -> Sweep:
    """The finished runs under ``root``, grouped by the config keys ``group_keys``; with ``last`` (RL only) each
    run is scored by the mean success of its last ``last`` evaluations per task (``ValueError`` for vision runs,
    or, when the scores are read, naming a run with fewer evaluations).

    Runs whose ``results.json`` says ``"complete": false``, runs without ``results.json`` (crashed), runs
    whose ``config.yaml`` or ``results.json`` cannot be read (a truncated write), RL runs without an
    evaluation and files of neither kind are skipped with a note. Raises ``ValueError`` (one line naming the
    fix) when nothing is left, when RL and vision runs or several protocols (vision: data sets or Δm
    baselines) are mixed, or when vision runs have no Δm."""
    root = Path(root)
    skipped: list[str] = []
    records = find_runs(root, group_keys, skipped, reject=_unusable)  # every one of a kind (_unusable)
    runs = [(kind, run) for run in records if (kind := _kind(run.results)) is not None]
    if not runs:
        raise ValueError(
            f"no finished runs (config.yaml + results.json) under {root}"
            + (f" ({len(skipped)} skipped: {skipped[0]})" if skipped else "")
        )
    first_of: dict[str, Path] = {}
    for kind, run in runs:
        first_of.setdefault(kind, run.path)
    if len(first_of) > 1:
        raise ValueError(
            f"{root} holds both RL runs (e.g. {first_of['rl']}) and vision runs (e.g. {first_of['vision']}); "
            "aggregate one kind at a time (point aggregate.py at a folder holding one of them)"
        )
    kind = runs[0][0]
    protocols: dict[str, Path] = {}
    for _, run in runs:
        protocols.setdefault(_protocol(kind, run.results), run.path)
    if len(protocols) > 1:
        listing = ", ".join(f"{name!r} (e.g. {path})" for name, path in protocols.items())
        raise ValueError(
            f"{root} mixes protocols: {listing}; aggregate one protocol at a time "
            "(point aggregate.py at a folder holding the runs of one protocol)"
        )
    first = runs[0][1]
    if kind == "vision" and "delta_m" not in first.results:
        raise ValueError(
            f"the vision runs under {root} have no delta_m (e.g. {first.path}): Δm needs a baseline; train them "
            "with baseline=[...] (docs/vision.md), or pick results keys with aggregate.py --metrics selected/..."
        )
    if last is not None and (kind != "rl" or last < 1):
        raise ValueError(
            f"the last-evaluations score is for RL runs, with at least 1 evaluation; got {last} for {kind}"
        )
    statistic = str(first.results["summary"]["reported_statistic"]) if kind == "rl" else "Δm%"
    return Sweep(root, kind, next(iter(protocols)), statistic, tuple(r for _, r in runs), tuple(skipped), last)


def _row(sweep: Sweep, run: RunRecord) -> tuple[dict[str, float], dict[str, float]]:
    """A run's scores by task (or metric) and its headline numbers by label."""
    if sweep.kind == "rl" and sweep.last is not None:
        tasks = sorted(run.results["summary"]["final"]["success"])
        try:
            score = last_evals_score(history_of(run.results, run.path / "results.json"), tasks, n=sweep.last)
        except ValueError as err:
            raise ValueError(f"run {run.path}: {err}") from None
        return dict(zip(tasks, score.tolist(), strict=True)), {f"mean of last {sweep.last} evaluations": score.mean()}
    if sweep.kind == "rl":
        summary = run.results["summary"]
        evaluation = summary[summary["reported_statistic"]]
        label = f"{summary['reported_statistic']} success (reported)"
        return {t: float(v) for t, v in evaluation["success"].items()}, {label: float(summary["reported_value"])}
    delta = run.results["delta_m"]
    headline = {
        "Δm% metric-weighted": float(delta["metric_weighted"]),
        "Δm% task-weighted": float(delta["task_weighted"]),
    }
    return {k: 100.0 * float(v) for k, v in delta["relative"].items()}, headline


def group_scores(sweep: Sweep) -> dict[str, GroupScores]:
    """Per group (sorted by name), the ``(runs, tasks)`` score matrix of its runs, ordered by seed.

    Every run must report the same tasks (metrics), else ``ValueError`` naming the run."""
    by_group: dict[str, list[RunRecord]] = defaultdict(list)
    for run in sweep.runs:
        by_group[run.group].append(run)
    tasks: tuple[str, ...] | None = None
    out: dict[str, GroupScores] = {}
    for group, runs in sorted(by_group.items()):
        runs.sort(key=lambda r: (r.seed, str(r.path)))
        rows, heads = [], []
        for run in runs:
            scores, headline = _row(sweep, run)
            if tasks is None:
                tasks = tuple(scores)
            if set(scores) != set(tasks):
                raise ValueError(
                    f"run {run.path} reports tasks {sorted(scores)}, other runs {sorted(tasks)}; "
                    "aggregate the runs of one benchmark at a time"
                )
            rows.append([scores[t] for t in tasks])
            heads.append(headline)
        assert tasks is not None
        out[group] = GroupScores(
            tasks=tasks,
            scores=np.asarray(rows, dtype=np.float64),
            headline={label: np.array([h[label] for h in heads]) for label in heads[0]},
            seeds=tuple(r.seed for r in runs),
            paths=tuple(r.path for r in runs),
        )
    return out


def sweep_report(
    sweep: Sweep,
    compare: Sequence[tuple[str, str]] = (),
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    holm_alpha: float | None = None,
) -> SweepReport:
    """Per group IQM, mean, median (RL: and optimality gap) with stratified-bootstrap intervals, and the
    probability of improvement of every pair ``(x, y)`` in ``compare`` (for vision: of a lower Δm); with
    ``holm_alpha``, also each comparison's bootstrap p-value and Holm's step-down decision at family-wise level
    ``holm_alpha`` over all of them (:func:`~mtrl.analysis.transfer.holm`)."""
    groups = group_scores(sweep)
    matrices = {g: s.scores for g, s in groups.items()}
    statistics = ("iqm", "mean", "median") if sweep.lower_is_better else ("iqm", "mean", "median", "optimality_gap")
    estimates = interval_estimates(matrices, statistics, reps=reps, confidence=confidence, seed=seed)
    improvements = probability_of_improvement(
        matrices, list(compare), lower_is_better=sweep.lower_is_better, reps=reps, confidence=confidence, seed=seed
    )
    p_values: dict[tuple[str, str], float] = {}
    if holm_alpha is not None:
        p_values = {(x, y): improvement_p_value(matrices[x], matrices[y], reps=reps, seed=seed) for x, y in compare}
    decisions = holm(p_values, alpha=holm_alpha) if holm_alpha is not None and p_values else {}
    return SweepReport(sweep, groups, estimates, improvements, reps, confidence, p_values, decisions, holm_alpha)


def _mean_std(values: np.ndarray) -> str:
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return f"{float(values.mean()):.3f} ± {std:.3f}"


def report_markdown(report: SweepReport) -> str:
    """The report as Markdown: what was aggregated, the aggregate table, the headline and per-task table
    (mean over runs; never a config field), and the probabilities of improvement."""
    sweep, pct = report.sweep, f"{100 * report.confidence:g}%"
    n_runs = sum(s.scores.shape[0] for s in report.groups.values())
    if sweep.kind == "rl" and sweep.last is not None:
        what = (
            f"Protocol `{sweep.protocol}`: score = per task, the mean success of each run's last {sweep.last} "
            "evaluations; headline = its mean over tasks; higher is better."
        )
    elif sweep.kind == "rl":
        what = (
            f"Protocol `{sweep.protocol}`: headline = the `{sweep.statistic}` evaluation (`summary.reported_value`, "
            f"its mean success over tasks); scores = per-task success of that same evaluation "
            f"(`summary.{sweep.statistic}.success`), higher is better."
        )
    else:
        what = (
            f"Vision, {sweep.protocol}: scores = each metric's relative drop against the baseline, 100·r_m in % "
            "(positive = worse than the baseline; their mean over metrics is the run's metric-weighted Δm%), "
            "lower is better."
        )
    lines = [what, f"{len(report.groups)} groups, {n_runs} runs under `{sweep.root}`."]
    if sweep.skipped:
        lines += ["", f"Skipped {len(sweep.skipped)} run(s):", *(f"- {note}" for note in sweep.skipped)]
    statistics = next(iter(report.estimates.values())).keys()
    columns = " | ".join(_LABELS[s] for s in statistics)
    strata = "metrics" if sweep.lower_is_better else "tasks"
    lines += [
        "",
        f"Aggregate over runs × {strata}: point estimate [{pct} stratified-bootstrap interval, {strata} as strata, "
        f"{report.reps} resamples]"
        + (
            "; optimality gap = mean shortfall below success 1.0 (lower is better)."
            if not sweep.lower_is_better
            else "."
        ),
        "",
        f"| group | runs | {columns} |",
        "|---|---|" + "---|" * len(statistics),
    ]
    for group, est in report.estimates.items():
        cells = " | ".join(est[s].format() for s in statistics)
        lines.append(f"| {group} | {report.groups[group].scores.shape[0]} | {cells} |")
    groups = list(report.groups)
    any_group = report.groups[groups[0]]
    lines += [
        "",
        "Headline (mean ± std over runs) and per "
        + ("metric" if sweep.lower_is_better else "task")
        + " (mean over runs):",
        "",
        "| | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for label in any_group.headline:
        lines.append(f"| {label} | " + " | ".join(_mean_std(report.groups[g].headline[label]) for g in groups) + " |")
    for j, task in enumerate(any_group.tasks):
        lines.append(f"| {task} | " + " | ".join(f"{report.groups[g].scores[:, j].mean():.2f}" for g in groups) + " |")
    if report.improvements:
        relation = "P(X < Y), lower Δm is better" if sweep.lower_is_better else "P(X > Y)"
        lines += [
            "",
            f"Probability of improvement: a run of X scores better than a run of Y on a {strata[:-1]}, averaged over "
            f"{strata} [{pct} interval, runs of both resampled within each {strata[:-1]}]:",
            "",
            f"| X | Y | {relation} |" + (" bootstrap p | differs (Holm) |" if report.p_values else ""),
            "|---|---|---|" + ("---|---|" if report.p_values else ""),
        ]
        for (x, y), iv in report.improvements.items():
            holm_cells = ""
            if report.p_values:
                holm_cells = f" {report.p_values[(x, y)]:.4f} | {'yes' if report.holm[(x, y)] else 'no'} |"
            lines.append(f"| {x} | {y} | {iv.format()} |" + holm_cells)
        if report.p_values:
            lines += [
                "",
                f"Holm's step-down rule over the {len(report.p_values)} comparisons at family-wise level "
                f"{report.holm_alpha:g}; p = the smallest α whose (1 − α) interval of P excludes 0.5.",
            ]
    return "\n".join(lines)


def sample_efficiency(
    sweep: Sweep, statistic: str = "iqm", reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, dict[str, list[Interval]]]:
    """The evaluation steps every run logged and, per group, ``statistic`` (default IQM) over runs × tasks at
    each of them, with its stratified-bootstrap interval. RL: per-task success, read from each run's
    ``results.json`` (:func:`~mtrl.analysis.runs.run_history`). Vision: ``100·r_m`` of every evaluation against
    the run's Δm baseline (``delta_m.baseline_values``), lower is better; a vision run written before its
    results stored the baseline values raises ``ValueError``."""
    groups = group_scores(sweep)
    if sweep.kind == "rl":
        histories = {g: [run_history(p, finished_only=False) or {} for p in s.paths] for g, s in groups.items()}
    else:
        by_path = {run.path: run.results for run in sweep.runs}
        histories = {g: [_vision_history(p, by_path[p], s.tasks) for p in s.paths] for g, s in groups.items()}
    step_sets = [set(h[t]) for hs in histories.values() for h in hs for t in h]
    steps = sorted(set.intersection(*step_sets)) if step_sets else []
    if not steps:
        raise ValueError(f"the runs under {sweep.root} share no evaluation step; aggregate runs with one eval_every")
    key = "success" if sweep.kind == "rl" else "drop"
    curves = {
        g: np.asarray([[[h[t][k][key] for k in steps] for t in groups[g].tasks] for h in hs], dtype=np.float64)
        for g, hs in histories.items()
    }
    return np.asarray(steps), curve_estimates(curves, statistic, reps=reps, confidence=confidence, seed=seed)


def _vision_history(
    path: Path, results: Mapping[str, Any], metrics: Sequence[str]
) -> dict[str, dict[int, dict[str, float]]]:
    """``{metric: {step: {"drop": 100·r_m}}}`` of every evaluation of a vision run against its Δm baseline."""
    from mtrl.vision.delta import relative_drops

    baseline = results["delta_m"].get("baseline_values")
    if not baseline:
        raise ValueError(
            f"{path}/results.json has no delta_m.baseline_values (written before they were stored): train the run "
            "again (or resume it to its end) for Δm% over training"
        )
    out: dict[str, dict[int, dict[str, float]]] = {m: {} for m in metrics}
    for evaluation in results["evals"]:
        drops = relative_drops({m: evaluation[m] for m in metrics}, {m: baseline[m] for m in metrics})
        for m in metrics:
            out[m][int(evaluation["step"])] = {"drop": 100.0 * drops[m]}
    return out


def result_keys(records: Sequence[RunRecord]) -> list[str]:
    """The numeric ``results.json`` keys of ``records`` (``a/b`` for nested ones) that are results, not
    configuration: no key under :data:`CONFIG_KEYS` and none that the run's ``config.yaml`` also holds (its
    ``config``, as :func:`~mtrl.analysis.runs.find_runs` read it)."""
    keys: set[str] = set()
    for rec in records:
        cfg = flatten(rec.config)
        keys.update(k for k in rec.values if k.split("/")[0] not in CONFIG_KEYS and k not in cfg)
    return sorted(keys)
