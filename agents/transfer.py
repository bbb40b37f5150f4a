"""The balancer benchmark's pilot: is multi-task SAC with ``ew`` below one SAC per task (negative transfer)?

A *setting* is a preset ``configs/bench/<name>.yaml``: a custom Meta-World v3 task set, a network and a budget
(``total_steps`` transitions per task, an evaluation every ``eval_every`` steps with ``eval_episodes`` episodes per
task). For each setting and seed the pilot runs

* ``ew`` multi-task SAC, ``scripts/train.py <preset> balancer=ew`` in ``ROOT/<setting>/ew/seed<S>`` — the jobs and
  layout of ``scripts/sweep.py`` (``scripts/bench_pilot.py`` builds them with its ``sweep_jobs``), so a later
  sweep of other balancers over ``ROOT/<setting>`` reuses them and ``scripts/aggregate.py`` reads them;
* one stable-baselines3 SAC per task, ``scripts/train_stl.py CONFIG key=value`` on each task alone
  (:func:`stl_jobs`), with the network, batch, optimiser and warm-up of :data:`REFERENCE_PRESET` and the
  setting's budget and evaluation, in
  ``ROOT/stl/<budget>/<task>/seed<S>``: a run depends only on its task, seed, budget and evaluation, so settings
  that share them share the run (each task's replay capacity is its whole budget, so nothing is evicted and the
  other tasks of a setting do not change it).

:func:`screen` scores every finished run by the mean success of its last 3 evaluations per task
(:func:`mtrl.analysis.transfer.last_evals_score`) and applies the pre-stated screen: a setting qualifies when,
for every task, the median over seeds of one SAC per task is at least :data:`SOLVED` and the median over seeds
of ``ew``'s mean over tasks is below that of one SAC per task. :func:`confirmation` applies the confirmation
rule (:func:`mtrl.analysis.transfer.confirm`) to fresh seeds. :func:`record_outcomes` keeps every run's seconds
in ``ROOT/ledger.jsonl``, from which :func:`core_hours` reports the cost (each run uses one core).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.config import TrainConfig
from mtrl.analysis import run_history
from mtrl.analysis.transfer import Confirmation, confirm, last_evals_score, seeds_for_difference
from mtrl.balancers.registry import BALANCERS
from mtrl.config import load_config
from mtrl.jobs import Job, JobOutcome

__all__ = [
    "BENCHMARK_METHODS",
    "BENCHMARK_SEEDS",
    "BENCH_PRESETS",
    "CONFIRM_SEEDS",
    "LAST_EVALS",
    "PILOT_SEEDS",
    "REFERENCE_PRESET",
    "SETTINGS",
    "SOLVED",
    "STL",
    "ScreenRow",
    "Setting",
    "confirmation",
    "core_hours",
    "ew_run_dir",
    "load_setting",
    "method_overrides",
    "power_line",
    "record_outcomes",
    "scores",
    "screen",
    "screen_markdown",
    "stl_jobs",
    "stl_run_dir",
]

ROOT = Path(__file__).resolve().parents[1]
#: Folder of the settings' presets.
BENCH_PRESETS = ROOT / "configs" / "bench"
#: The pilot's settings, in the order they run (docs/benchmark.md says why each).
SETTINGS: tuple[str, ...] = ("mix4", "mix4_small", "mix6")
#: The single-task reference's network, batch, optimiser and warm-up: the CPU preset's ``sac`` section (2x256).
REFERENCE_PRESET = ROOT / "configs" / "mt10_sac_cpu.yaml"
#: The group name of one SAC per task (its folder under the root).
STL = "stl"
#: Success that counts a task as learned alone (median over seeds of the score).
SOLVED = 0.8
#: The score of a run: the mean of its last this many evaluations.
LAST_EVALS = 3
#: The pilot's seeds, and the fresh seeds of the confirmation (never used by the pilot).
PILOT_SEEDS: tuple[int, ...] = (0, 1, 2)
CONFIRM_SEEDS: tuple[int, ...] = tuple(range(100, 110))
#: The benchmark's seeds per method (at least five; the power rule of docs/benchmark.md may ask for more).
BENCHMARK_SEEDS: tuple[int, ...] = tuple(range(100, 105))
#: The benchmark's methods in the order they run: the founding methods (``dgr`` over its default base, ``ew``),
#: then ``pcgrad``, ``cagrad``, ``nash_mtl`` and ``famo``, and ``sgsu`` last (about 10x ``ew``'s update cost).
BENCHMARK_METHODS: tuple[str, ...] = (
    "imtl", "aligned_mtl", "task_tensioner", "dgr", "pcgrad", "cagrad", "nash_mtl", "famo", "sgsu",
)  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """One pilot setting, read from its preset.

    Attributes:
        name: the preset's file name without ``.yaml``.
        preset: the preset file.
        tasks: the task set, in one-hot order.
        steps: transitions per task (the multi-task run's ``total_steps``).
        eval_every: evaluation cadence in steps.
        eval_episodes: evaluation episodes per task.
        checkpoint_every: checkpoint cadence in steps (both sides).
    """

    name: str
    preset: Path
    tasks: tuple[str, ...]
    steps: int
    eval_every: int
    eval_episodes: int
    checkpoint_every: int

    @property
    def budget(self) -> str:
        """The folder of this setting's single-task runs under ``ROOT/stl``: budget and evaluation, which with the
        reference preset decide a single-task run (``100000_every10000_x20``)."""
        return f"{self.steps}_every{self.eval_every}_x{self.eval_episodes}"


def load_setting(name: str, presets: Path = BENCH_PRESETS) -> Setting:
    """The setting of ``presets/<name>.yaml`` (``ValueError`` naming the presets when there is none; a bad preset
    raises :class:`~mtrl.config.ConfigError`)."""
    path = presets / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in presets.glob("*.yaml"))) or "none"
        raise ValueError(f"no setting {name!r}: no {path}; settings: {known}")
    cfg = load_config(TrainConfig, path, ["device=cpu"], resolve=False)
    if cfg.env.benchmark == "toy" or not cfg.eval_every or cfg.total_steps // cfg.eval_every < LAST_EVALS:
        raise ValueError(f"{path}: a setting needs Meta-World tasks and at least {LAST_EVALS} evaluations")
    if cfg.eval_episodes is None:
        raise ValueError(f"{path}: a setting states its eval_episodes (both sides evaluate with that many)")
    return Setting(
        name=name,
        preset=path,
        tasks=cfg.env.task_names,
        steps=cfg.total_steps,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        checkpoint_every=cfg.checkpoint_every,
    )


def stl_run_dir(root: Path, setting: Setting, task: str, seed: int) -> Path:
    """``ROOT/stl/<budget>/<task>/seed<S>``: one SAC on ``task`` alone at ``setting``'s budget."""
    return root / STL / setting.budget / task / f"seed{seed}"


def stl_jobs(root: Path, settings: Sequence[Setting], seeds: Sequence[int], python: str = sys.executable) -> list[Job]:
    """One ``scripts/train_stl.py`` run per task and seed of ``settings``, each run once however many settings
    share it; seed-major, so a partial pass covers every task at the first seeds."""
    jobs: dict[Path, Job] = {}
    for seed in seeds:
        for setting in settings:
            for task in setting.tasks:
                run_dir = stl_run_dir(root, setting, task, seed)
                cmd = (
                    python, str(ROOT / "scripts" / "train_stl.py"), str(REFERENCE_PRESET), "benchmark=MT1",
                    f"tasks=[{task}]", f"seed={seed}", f"steps={setting.steps}", f"buffer={setting.steps}",
                    f"eval_every={setting.eval_every}", f"eval_episodes={setting.eval_episodes}",
                    f"checkpoint_every={setting.checkpoint_every}", f"logdir={run_dir.parent}",
                    f"run_name={run_dir.name}", "progress=false", "device=cpu",
                )  # fmt: skip
                name = f"{STL}/{setting.budget}/{task}/seed{seed}"
                jobs.setdefault(run_dir, Job(name, run_dir, cmd, resume_args=("resume=true",)))
    return list(jobs.values())


# --- cost ------------------------------------------------------------------------------------------
def record_outcomes(root: Path, outcomes: Sequence[JobOutcome]) -> None:
    """Append each ended job's wall-clock seconds (one core each) to ``ROOT/ledger.jsonl``, with its CPU seconds where
    measured (``cpu_seconds``: what the run used, while ``seconds`` also counts time it waited for a core or was
    paused): a resumed run adds a line."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "ledger.jsonl").open("a") as out:
        for o in outcomes:
            line: dict[str, object] = {
                "run_dir": str(o.job.run_dir.relative_to(root)),
                "seconds": round(o.seconds, 1),
                "exit": o.returncode,
            }
            if o.cpu_seconds is not None:
                line["cpu_seconds"] = round(o.cpu_seconds, 1)
            out.write(json.dumps(line) + "\n")


def core_hours(root: Path, run_dirs: Sequence[Path]) -> float:
    """Core-hours the ledger of ``root`` records for ``run_dirs`` (every attempt counts)."""
    path = root / "ledger.jsonl"
    wanted = {str(Path(d).relative_to(root)) for d in run_dirs}
    seconds = 0.0
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["run_dir"] in wanted:
                seconds += float(row["seconds"])
    return seconds / 3600


# --- screen ----------------------------------------------------------------------------------------
def _score(run_dir: Path, tasks: Sequence[str]) -> np.ndarray | None:
    history = run_history(run_dir)
    if history is None:
        return None
    try:
        return last_evals_score(history, tasks, LAST_EVALS)
    except ValueError:
        return None


def ew_run_dir(root: Path, setting: Setting, seed: int) -> Path:
    """``ROOT/<setting>/ew/seed<S>``: where ``scripts/sweep.py`` puts the setting's ``ew`` run."""
    return root / setting.name / "ew" / f"seed{seed}"


def scores(root: Path, setting: Setting, seeds: Sequence[int]) -> dict[str, dict[int, np.ndarray]]:
    """``{"ew": {seed: (tasks,)}, "stl": {seed: (tasks,)}}``: the score per task of every finished run (a seed of
    one SAC per task counts once all of its tasks' runs have finished)."""
    out: dict[str, dict[int, np.ndarray]] = {"ew": {}, STL: {}}
    for seed in seeds:
        ew = _score(ew_run_dir(root, setting, seed), setting.tasks)
        if ew is not None:
            out["ew"][seed] = ew
        per_task = [_score(stl_run_dir(root, setting, t, seed), [t]) for t in setting.tasks]
        if all(s is not None for s in per_task):
            out[STL][seed] = np.concatenate([s for s in per_task if s is not None])
    return out


@dataclass(frozen=True)
class ScreenRow:
    """The screen of one setting.

    Attributes:
        setting: the setting.
        ew: per seed, ``ew``'s score per task.
        stl: per seed, one SAC per task's score per task.
        stl_task_median: per task, the median over seeds of one SAC per task (NaN without runs).
        gap: median over seeds of one SAC per task's mean over tasks minus ``ew``'s (NaN without runs).
        qualifies: every task's ``stl_task_median`` ≥ :data:`SOLVED` and ``gap > 0``, with every seed of both sides.
        complete: every seed of both sides has finished.
        core_hours: what the ledger records for the setting's runs (the shared single-task runs included).
    """

    setting: Setting
    ew: dict[int, np.ndarray]
    stl: dict[int, np.ndarray]
    stl_task_median: np.ndarray
    gap: float
    qualifies: bool
    complete: bool
    core_hours: float


def screen(root: Path, settings: Sequence[Setting], seeds: Sequence[int]) -> list[ScreenRow]:
    """The pre-stated screen of every setting on the finished runs of ``seeds``."""
    rows = []
    for setting in settings:
        got = scores(root, setting, seeds)
        ew, stl = got["ew"], got[STL]
        complete = len(ew) == len(stl) == len(seeds)
        median = np.median(np.stack(list(stl.values())), axis=0) if stl else np.full(len(setting.tasks), np.nan)
        gap = (
            float(np.median([s.mean() for s in stl.values()]) - np.median([s.mean() for s in ew.values()]))
            if ew and stl
            else math.nan
        )
        # scores are means of success rates: 1e-9 keeps a mean that is exactly 0.8 on paper from failing by round-off
        qualifies = complete and bool(np.all(median >= SOLVED - 1e-9)) and gap > 1e-9
        dirs = [ew_run_dir(root, setting, s) for s in seeds]
        dirs += [stl_run_dir(root, setting, t, s) for s in seeds for t in setting.tasks]
        rows.append(ScreenRow(setting, ew, stl, median, gap, qualifies, complete, core_hours(root, dirs)))
    return rows


def _cell(values: dict[int, np.ndarray], seed: int) -> str:
    return f"{values[seed].mean():.2f}" if seed in values else "–"


def screen_markdown(rows: Sequence[ScreenRow], seeds: Sequence[int]) -> str:
    """The screen as Markdown: per setting and seed the mean over tasks of each side's score, the medians, the
    gap, whether it qualifies and its core-hours; then one SAC per task's median per task."""
    head = " | ".join(f"seed {s} ew / stl" for s in seeds)
    lines = [
        f"Score of a run: mean success of its last {LAST_EVALS} evaluations per task, averaged over tasks. Screen: "
        f"one SAC per task's median over seeds ≥ {SOLVED} on every task, and ew's median below one SAC per task's.",
        "",
        f"| setting | tasks | {head} | median ew | median stl | gap | qualifies | core-hours |",
        "|---|---:|" + "---|" * len(seeds) + "---:|---:|---:|---|---:|",
    ]
    for r in rows:
        cells = " | ".join(f"{_cell(r.ew, s)} / {_cell(r.stl, s)}" for s in seeds)
        med_ew = f"{np.median([v.mean() for v in r.ew.values()]):.2f}" if r.ew else "–"
        med_stl = f"{np.median([v.mean() for v in r.stl.values()]):.2f}" if r.stl else "–"
        gap = "–" if math.isnan(r.gap) else f"{r.gap:+.2f}"
        verdict = ("yes" if r.qualifies else "no") if r.complete else "not finished"
        lines.append(
            f"| {r.setting.name} | {len(r.setting.tasks)} | {cells} | {med_ew} | {med_stl} | {gap} | {verdict} | "
            f"{r.core_hours:.2f} |"
        )
    lines += ["", "One SAC per task, median over seeds of each task's score:", ""]
    for r in rows:
        per_task = ", ".join(
            f"`{t}` {'–' if math.isnan(m) else f'{m:.2f}'}"
            for t, m in zip(r.setting.tasks, r.stl_task_median, strict=True)
        )
        lines.append(f"- {r.setting.name}: {per_task}")
    lines += [
        "",
        "Power (docs/benchmark.md): σ = standard deviation over seeds of ew's score; seeds per method that detect a "
        "difference of 0.1 with power 0.8, two-sided, at α = 0.05 and at α = 0.05/9:",
        "",
    ]
    for r in rows:
        lines.append(f"- {r.setting.name}: {power_line(r.ew)}")
    return "\n".join(lines)


def power_line(ew: dict[int, np.ndarray]) -> str:
    """``σ = 0.071 over 3 seeds: 8 seeds (α = 0.05), 14 (α = 0.05/9)``: the power statement of ``ew``'s scores
    (:func:`mtrl.analysis.transfer.seeds_for_difference`, δ = 0.1); "–" with fewer than 2 seeds."""
    if len(ew) < 2:
        return "– (needs 2 finished ew seeds)"
    sd = float(np.std([v.mean() for v in ew.values()], ddof=1))
    n, n_holm = seeds_for_difference(sd, 0.1), seeds_for_difference(sd, 0.1, alpha=0.05 / 9)
    return f"σ = {sd:.3f} over {len(ew)} seeds: {n} seeds (α = 0.05), {n_holm} (α = 0.05/9)"


def confirmation(
    root: Path, setting: Setting, seeds: Sequence[int], reps: int = 2000, seed: int = 0
) -> tuple[Confirmation, int, int]:
    """The confirmation rule (:func:`mtrl.analysis.transfer.confirm`, one SAC per task over ``ew``) on the
    finished runs of ``seeds``; returns it with the numbers of ``ew`` and single-task seeds it used
    (``ValueError`` when a side has no finished seed)."""
    got = scores(root, setting, seeds)
    ew, stl = got["ew"], got[STL]
    if not ew or not stl:
        raise ValueError(
            f"{setting.name}: no finished {'ew' if not ew else STL} runs of seeds {list(seeds)} under {root}"
        )
    x, y = np.stack([stl[s] for s in sorted(stl)]), np.stack([ew[s] for s in sorted(ew)])
    return confirm(x, y, reps=reps, seed=seed), len(stl), len(ew)


def method_overrides(name: str) -> list[str]:
    """The config overrides that give benchmark method ``name`` its published Meta-World hyper-parameters (the
    class's :attr:`~mtrl.balancers.base.Balancer.metaworld_hparams`; ``[]`` when it has none, so the class
    defaults apply): ``["balancer_hparams={c: 0.9}"]`` for ``cagrad``. ``ValueError`` for an unknown method."""
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; known: {', '.join(sorted(BALANCERS))}")
    hparams = BALANCERS[name].metaworld_hparams
    if not hparams:
        return []
    return ["balancer_hparams={" + ", ".join(f"{k}: {v!r}" for k, v in hparams.items()) + "}"]
