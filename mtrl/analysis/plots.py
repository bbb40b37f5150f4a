"""PNG plots of a sweep (matplotlib; rliable's ``plot_utils`` for the two rliable figures).

* :func:`plot_performance_profiles`: per group, the fraction of run × task scores above each threshold
  with its stratified-bootstrap band (RL: success; vision: the improvement over the baseline in %).
* :func:`plot_sample_efficiency`: per group, the IQM over runs × tasks at every evaluation step, with its band.
* :func:`plot_learning_curves`: mean ± Student-t band of one ``metrics.jsonl`` tag (``aggregate.py --curve``).
* :func:`write_sweep_plots`: the first two for a :class:`~mtrl.analysis.sweep.SweepReport`, into a folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.analysis.core import Interval, performance_profiles
from mtrl.analysis.sweep import SweepReport, sample_efficiency

__all__ = ["plot_learning_curves", "plot_performance_profiles", "plot_sample_efficiency", "write_sweep_plots"]


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(f"plots need matplotlib: pip install -e '.[plot]' ({err})") from err
    return plt


def _plot_utils() -> Any:
    try:
        from rliable import plot_utils
    except ImportError as err:
        raise ImportError(f"rliable's plots need the stats extra: pip install -e '.[stats]' ({err})") from err
    return plot_utils


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_performance_profiles(
    profiles: Mapping[str, tuple[np.ndarray, np.ndarray]],
    taus: np.ndarray,
    path: str | Path,
    xlabel: str,
    strata: str = "tasks",
) -> Path:
    """Draw :func:`~mtrl.analysis.core.performance_profiles` output (``{group: (profile, (2, taus) band)}``)."""
    plt, plot_utils = _pyplot(), _plot_utils()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        {g: p for g, (p, _) in profiles.items()},
        taus,
        performance_profile_cis={g: ci for g, (_, ci) in profiles.items()},
        ax=ax,
        xlabel=xlabel,
        ylabel=rf"fraction of runs × {strata} with score $> \tau$",
        labelsize="medium",
        ticklabelsize="small",
    )
    ax.legend(fontsize="small")
    return _save(fig, Path(path))


def plot_sample_efficiency(
    steps: np.ndarray, curves: Mapping[str, list[Interval]], path: str | Path, ylabel: str, xlabel: str = "step"
) -> Path:
    """Draw :func:`~mtrl.analysis.sweep.sample_efficiency` output: a point estimate with its band per group."""
    plt, plot_utils = _pyplot(), _plot_utils()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = {g: np.array([c.point for c in cs]) for g, cs in curves.items()}
    bands = {g: np.array([[c.low for c in cs], [c.high for c in cs]]) for g, cs in curves.items()}
    plot_utils.plot_sample_efficiency_curve(
        steps, points, bands, ax=ax, xlabel=xlabel, ylabel=ylabel, labelsize="medium", ticklabelsize="small"
    )
    ax.legend(fontsize="small")
    return _save(fig, Path(path))


def plot_learning_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path, ylabel: str
) -> Path:
    """Draw :func:`~mtrl.analysis.core.learning_curves` output: per group the mean with its 95% band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for group, (steps, mean, half) in sorted(curves.items()):
        ax.plot(steps, mean, label=group)
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend()
    return _save(fig, Path(path))


def write_sweep_plots(report: SweepReport, out_dir: str | Path, seed: int = 0) -> list[Path]:
    """``profiles.png`` (performance profiles) and ``sample_efficiency.png`` (IQM over the evaluation steps: RL
    success, vision Δm% per metric) in ``out_dir``, with the report's bootstrap settings; returns the files written."""
    out = Path(out_dir)
    sweep = report.sweep
    matrices = {g: s.scores for g, s in report.groups.items()}
    if sweep.lower_is_better:  # profiles of the improvement over the baseline (−100·r_m), higher is better
        matrices = {g: -m for g, m in matrices.items()}
        everything = np.concatenate([m.ravel() for m in matrices.values()])
        taus = np.linspace(float(everything.min()), float(everything.max()), 41)
        xlabel = r"improvement over the baseline, % ($\tau$)"
    else:
        taus, xlabel = np.linspace(0.0, 1.0, 41), rf"{sweep.statistic} success per task ($\tau$)"
    profiles = performance_profiles(matrices, taus, reps=report.reps, confidence=report.confidence, seed=seed)
    strata = "metrics" if sweep.lower_is_better else "tasks"
    written = [plot_performance_profiles(profiles, taus, out / "profiles.png", xlabel, strata)]
    steps, curves = sample_efficiency(sweep, "iqm", reps=report.reps, confidence=report.confidence, seed=seed)
    if sweep.kind == "rl":
        ylabel, xlabel = f"IQM success over runs × tasks ({100 * report.confidence:g}% CI)", "step (per task)"
    else:
        ylabel, xlabel = "IQM of 100·r_m, % (lower is better)", "training step"
    written.append(plot_sample_efficiency(steps, curves, out / "sample_efficiency.png", ylabel, xlabel))
    return written
