"""A/B learning harness: our SAC against stable-baselines3's SAC on the same single Meta-World tasks.

Both sides train on the same task with the same settings (one preset's ``sac`` section: network,
batch, learning rates, warm-up, update schedule; :mod:`agents.sb3` maps it onto SB3) and are
evaluated the same way: :func:`envs.evaluate` under the preset's protocol (``metaworld-v3``:
``metaworld.evaluation.evaluation``, the deterministic action), on evaluation envs built with the
same ``make_vec`` seed (Meta-World ignores ``reset(seed=)``), so at every checkpoint both sides face
the same goals. Our side is ``scripts/train.py`` (the code path users run), SB3's side is
``scripts/train_stl.py``; every (side, task, seed) is one run directory,
``ROOT/<side>/<task>/s<seed>``, run as a :class:`mtrl.jobs.Job` (parallel, resumable: finished runs
are skipped, interrupted ones continue from their checkpoint at the last evaluation).

:func:`collect` reads the evaluation history of every run into ``(seeds, tasks, checkpoints)``
arrays of success and return; :func:`report` prints, per checkpoint, the IQM and the mean with
stratified-bootstrap 95% intervals (rliable; tasks are the strata), the same for the area under the
curve (the mean over checkpoints), per-task tables, and the acceptance check: our IQM at the last
checkpoint and our AUC IQM are at least SB3's lower 95% bound, for success and for return.
:func:`plot` draws the curves.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.analysis import Interval, area_under_curve, curve_estimates, interval_estimates, run_history
from mtrl.jobs import Job

__all__ = [
    "DEFAULT_TASKS",
    "SB3_SIDE",
    "ABData",
    "ABSettings",
    "acceptance",
    "collect",
    "plan_jobs",
    "plot",
    "report",
]

ROOT = Path(__file__).resolve().parents[1]
#: Three tasks of different difficulty for 20k steps on the CPU (SB3 at 20k, 5 seeds: reach-v3 and
#: drawer-close-v3 are learned, button-press-topdown-v3 only partly).
DEFAULT_TASKS: tuple[str, ...] = ("reach-v3", "drawer-close-v3", "button-press-topdown-v3")
#: The reference side's name (its run directories live under ``ROOT/sb3``).
SB3_SIDE = "sb3"
METRICS = ("success", "return")


@dataclass(frozen=True)
class ABSettings:
    """One A/B comparison.

    Attributes:
        preset: the preset both sides take their ``sac`` settings and protocol from.
        tasks: Meta-World v3 tasks, each trained alone (MT1) on both sides.
        seeds: run seeds (the same seed seeds both sides' envs, so they see the same goals).
        steps: environment steps per run.
        eval_every: evaluation (and checkpoint) cadence in steps.
        eval_episodes: evaluation episodes per checkpoint.
        root: folder of the run directories.
        ours: our side's name (its folder under ``root``; name variants differently).
        ours_overrides: extra ``key=value`` overrides for our side only (a variant under test).
        python: interpreter for the runs.
    """

    preset: Path = ROOT / "configs" / "mt1_sac.yaml"
    tasks: tuple[str, ...] = DEFAULT_TASKS
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    steps: int = 20_000
    eval_every: int = 5_000
    eval_episodes: int = 10
    root: Path = ROOT / "runs" / "bench_learning"
    ours: str = "mtrl"
    ours_overrides: tuple[str, ...] = ()
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.ours == SB3_SIDE:
            raise ValueError(f"our side cannot be named {SB3_SIDE!r} (the reference's folder)")
        if self.eval_every < 1 or self.steps % self.eval_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})")
        if not self.tasks or not self.seeds:
            raise ValueError("an A/B comparison needs at least one task and one seed")

    @property
    def checkpoints(self) -> list[int]:
        """The evaluation steps: ``eval_every, 2·eval_every, …, steps``."""
        return list(range(self.eval_every, self.steps + 1, self.eval_every))

    def run_dir(self, side: str, task: str, seed: int) -> Path:
        return self.root / side / task / f"s{seed}"


def _ours_job(s: ABSettings, task: str, seed: int) -> Job:
    run_dir = s.run_dir(s.ours, task, seed)
    cmd = (
        s.python, str(ROOT / "scripts" / "train.py"), str(s.preset), "env.benchmark=MT1", f"env.tasks=[{task}]",
        f"seed={seed}", f"total_steps={s.steps}", f"eval_every={s.eval_every}", f"eval_episodes={s.eval_episodes}",
        f"checkpoint_every={s.eval_every}", f"logdir={run_dir.parent}", f"run_name={run_dir.name}",
        "progress=false", "device=cpu", *s.ours_overrides,
    )  # fmt: skip
    return Job(f"{s.ours}/{task}/s{seed}", run_dir, cmd, resume_args=("resume=true",))


def _sb3_job(s: ABSettings, task: str, seed: int) -> Job:
    run_dir = s.run_dir(SB3_SIDE, task, seed)
    cmd = (
        s.python, str(ROOT / "scripts" / "train_stl.py"), "--preset", str(s.preset), "--benchmark", "MT1",
        "--tasks", task, "--seed", str(seed), "--steps", str(s.steps), "--eval-every", str(s.eval_every),
        "--eval-episodes", str(s.eval_episodes), "--checkpoint-every", str(s.eval_every),
        "--logdir", str(run_dir.parent), "--run-name", run_dir.name, "--no-progress", "--device", "cpu",
    )  # fmt: skip
    return Job(f"{SB3_SIDE}/{task}/s{seed}", run_dir, cmd, resume_args=("--resume",))


def plan_jobs(s: ABSettings, sides: Sequence[str] = ("ours", SB3_SIDE)) -> list[Job]:
    """Every run of the comparison, seed-major (so a partial pass covers every task at each seed)."""
    unknown = [side for side in sides if side not in ("ours", SB3_SIDE)]
    if unknown:
        raise ValueError(f"unknown side(s) {unknown}; valid choices: ours, {SB3_SIDE}")
    jobs = []
    for seed in s.seeds:
        for task in s.tasks:
            if "ours" in sides:
                jobs.append(_ours_job(s, task, seed))
            if SB3_SIDE in sides:
                jobs.append(_sb3_job(s, task, seed))
    return jobs


# --- results ---------------------------------------------------------------------------------------
@dataclass
class ABData:
    """Evaluation histories as arrays ``(seeds, tasks, checkpoints)`` per side and metric.

    ``scores[side][metric]``; ``missing`` lists the run directories without a finished history.
    """

    settings: ABSettings
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    missing: list[Path] = field(default_factory=list)

    @property
    def sides(self) -> list[str]:
        return list(self.scores)


def collect(s: ABSettings, sides: Sequence[str] | None = None) -> ABData:
    """Read every finished run of ``s`` (sides default: ours and SB3) into an :class:`ABData`.

    A side enters the arrays only when every (task, seed) run of it is finished with every checkpoint."""
    data = ABData(s)
    for side in sides or (s.ours, SB3_SIDE):
        arrays = {m: np.full((len(s.seeds), len(s.tasks), len(s.checkpoints)), np.nan) for m in METRICS}
        complete = True
        for i, seed in enumerate(s.seeds):
            for j, task in enumerate(s.tasks):
                run_dir = s.run_dir(side, task, seed)
                runs = run_history(run_dir)
                hist = None if runs is None else runs.get(task)
                if hist is None or any(step not in hist for step in s.checkpoints):
                    data.missing.append(run_dir)
                    complete = False
                    continue
                for k, step in enumerate(s.checkpoints):
                    for m in METRICS:
                        arrays[m][i, j, k] = hist[step][m]
        if complete:
            data.scores[side] = arrays
    return data


def _steps(step: int) -> str:
    """A checkpoint's column header: ``"20k"``, ``"2.5k"``, ``"150"``."""
    return f"{step / 1000:g}k" if step >= 1000 else str(step)


def _fmt(x: Interval, metric: str) -> str:
    return x.format(2) if metric == "success" else f"{x.point:,.0f} [{x.low:,.0f}, {x.high:,.0f}]"


def acceptance(data: ABData, ours: str | None = None, reps: int = 2000) -> list[tuple[str, bool, str]]:
    """``(check, passed, detail)``: our final-checkpoint IQM and our AUC IQM ≥ SB3's lower 95% bound,
    for success and for return (tasks as strata)."""
    ours = ours or data.settings.ours
    out = []
    for metric in METRICS:
        a, b = data.scores[ours][metric], data.scores[SB3_SIDE][metric]
        for label, ours_scores, ref_scores in (
            ("final", a[:, :, -1], b[:, :, -1]),
            ("AUC", area_under_curve(a), area_under_curve(b)),
        ):
            est = interval_estimates({ours: ours_scores, SB3_SIDE: ref_scores}, ("iqm",), reps=reps)
            mine, ref = est[ours]["iqm"], est[SB3_SIDE]["iqm"]
            passed = mine.point >= ref.low
            detail = f"{ours} IQM {_fmt(mine, metric)} vs {SB3_SIDE} {_fmt(ref, metric)}"
            out.append((f"{metric} {label}", passed, detail))
    return out


def report(data: ABData, reps: int = 2000) -> str:
    """Markdown: pooled IQM / mean with 95% stratified-bootstrap intervals per checkpoint and for the
    AUC, per-task means over seeds, and the acceptance checks (when both sides are complete)."""
    s = data.settings
    lines = [
        f"A/B on {', '.join(s.tasks)}; seeds {list(s.seeds)}; {s.steps:,} steps; {s.eval_episodes} evaluation "
        f"episodes every {s.eval_every:,} steps; preset {s.preset.name}"
        + (f"; {s.ours} overrides: {' '.join(s.ours_overrides)}" if s.ours_overrides else ""),
        "",
    ]
    if not data.scores:
        return "\n".join([*lines, f"no side has all its runs finished ({len(data.missing)} missing)"])
    for metric in METRICS:
        scores = {side: arr[metric] for side, arr in data.scores.items()}
        lines += [f"### {metric}: IQM and mean over seeds × tasks, 95% stratified-bootstrap CI", ""]
        header = "| side | statistic | " + " | ".join(_steps(c) for c in s.checkpoints) + " | AUC |"
        lines += [header, "|---|---|" + "---|" * (len(s.checkpoints) + 1)]
        for statistic in ("iqm", "mean"):
            curves = curve_estimates(scores, statistic, reps=reps)
            aucs = interval_estimates({k: area_under_curve(v) for k, v in scores.items()}, (statistic,), reps=reps)
            for side in scores:
                cells = [_fmt(x, metric) for x in curves[side]] + [_fmt(aucs[side][statistic], metric)]
                lines.append(f"| {side} | {statistic.upper() if statistic == 'iqm' else statistic} | "
                             + " | ".join(cells) + " |")  # fmt: skip
        lines += ["", f"Per task, mean ± std over seeds ({metric}):", ""]
        lines += ["| task | side | " + " | ".join(_steps(c) for c in s.checkpoints) + " |",
                  "|---|---|" + "---|" * len(s.checkpoints)]  # fmt: skip
        for j, task in enumerate(s.tasks):
            for side, arr in scores.items():
                col = arr[:, j, :]
                digits = 2 if metric == "success" else 0
                cells = [f"{m:,.{digits}f} ± {d:,.{digits}f}" for m, d in zip(col.mean(0), col.std(0), strict=True)]
                lines.append(f"| {task} | {side} | " + " | ".join(cells) + " |")
        lines.append("")
    if s.ours in data.scores and SB3_SIDE in data.scores:
        lines += ["### Acceptance: ours ≥ SB3's lower 95% bound (IQM, tasks as strata)", ""]
        for check, passed, detail in acceptance(data, reps=reps):
            lines.append(f"- {'PASS' if passed else 'FAIL'} {check}: {detail}")
    if data.missing:
        lines += ["", f"{len(data.missing)} runs not finished (e.g. {data.missing[0]})"]
    return "\n".join(lines)


def plot(data: ABData, path: Path, reps: int = 2000) -> Path:
    """Curves: per task the mean over seeds with a 95% t-band, and the pooled IQM with its bootstrap
    band; success on top, return below. Needs matplotlib (``plot`` or ``dev`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    s = data.settings
    steps = np.asarray(s.checkpoints)
    columns = [*s.tasks, "IQM over tasks × seeds"]
    fig, axes = plt.subplots(2, len(columns), figsize=(3.6 * len(columns), 6.4), squeeze=False)
    ours = [side for side in data.sides if side != SB3_SIDE]
    colors = {SB3_SIDE: "black", **{side: f"C{i}" for i, side in enumerate(ours)}}
    for row, metric in enumerate(METRICS):
        scores = {side: arr[metric] for side, arr in data.scores.items()}
        for j, task in enumerate(s.tasks):
            ax = axes[row][j]
            for side, arr in scores.items():
                col = arr[:, j, :]
                n = col.shape[0]
                mean = col.mean(0)
                half = stats.t.ppf(0.975, n - 1) * col.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
                low, high = mean - half, mean + half
                if metric == "success":  # a rate: the band stays in [0, 1]
                    low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
                ax.plot(steps, mean, color=colors[side], label=side, marker="o", ms=3)
                ax.fill_between(steps, low, high, color=colors[side], alpha=0.2)
            ax.set_title(task if row == 0 else "", fontsize=10)
        ax = axes[row][-1]
        curves = curve_estimates(scores, "iqm", reps=reps)
        for side, points in curves.items():
            ax.plot(steps, [p.point for p in points], color=colors[side], label=side, marker="o", ms=3)
            ax.fill_between(steps, [p.low for p in points], [p.high for p in points], color=colors[side], alpha=0.2)
        ax.set_title(columns[-1] if row == 0 else "", fontsize=10)
        axes[row][0].set_ylabel(f"evaluation {metric}")
        for ax in axes[row]:
            ax.set_xlabel("environment steps")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper left", fontsize=8)
    title = f"Our SAC vs stable-baselines3 SAC: {len(s.seeds)} seeds, {s.eval_episodes} evaluation episodes"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def settings_from(**kwargs: Any) -> ABSettings:
    """:class:`ABSettings` from keyword arguments, ``None`` values meaning the default."""
    return ABSettings(**{k: v for k, v in kwargs.items() if v is not None})
