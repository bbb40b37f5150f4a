"""scripts/aggregate.py's sweep report (mtrl.analysis.sweep, mtrl.analysis.plots) on run directories written
with the trainers' own result builders: agents.trainer.summarize for RL, mtrl.vision.delta.delta_m for vision."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml
from scipy import stats

from agents.config import EnvConfig, TrainConfig, protocol_details
from agents.trainer import summarize
from envs.protocols import get_protocol
from mtrl.analysis import (
    find_runs,
    load_sweep,
    probability_of_improvement,
    report_markdown,
    result_keys,
    sample_efficiency,
    sweep_report,
)
from mtrl.vision.delta import Baseline, delta_m

pytest.importorskip("rliable")

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3")
REPS = 200


@pytest.fixture
def aggregate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """``scripts/aggregate.py``'s ``main`` run in this process: ``(exit code, stdout, stderr)``."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    from aggregate import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _rl_run(
    root: Path,
    balancer: str,
    seed: int,
    history: list[list[float]],
    protocol: Literal["metaworld-v3", "mtrl-legacy"] = "metaworld-v3",
    complete: bool = True,
) -> Path:
    """A run directory as scripts/train.py leaves it: config.yaml, and results.json with the keys of
    ``Trainer._finish`` (summary from the trainer's own ``summarize``); ``history`` holds the per-task
    success of each evaluation, one every 1000 steps."""
    run_dir = root / balancer / f"seed{seed}"
    run_dir.mkdir(parents=True)
    cfg = TrainConfig(env=EnvConfig(benchmark="MT10", protocol=protocol), balancer=balancer, seed=seed)
    details = protocol_details(cfg)
    evals = [
        {
            "step": 1000 * (i + 1),
            "success_mean": float(np.mean(s)),
            "success": dict(zip(TASKS, s, strict=True)),
            "return": {t: 100.0 * v for t, v in zip(TASKS, s, strict=True)},
        }
        for i, s in enumerate(history)
    ]
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "env": {"benchmark": "MT10", "protocol": protocol},
                "balancer": balancer,
                "seed": seed,
                "eval_every": 1000,
                "protocol_details": details,
            }
        )
    )
    results = {
        "run_dir": str(run_dir),
        "protocol": protocol,
        "protocol_details": details,
        "benchmark": "MT10",
        "critic_balancer": balancer,
        "actor_balancer": balancer,
        "seed": seed,
        "steps": 1000 * len(history),
        "complete": complete,
        "summary": summarize(evals, get_protocol(protocol)),
        "evals": evals,
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    return run_dir


def _levels(rng: np.random.Generator, low: float, high: float, evals: int = 3) -> list[list[float]]:
    return [list(np.round(rng.uniform(low, high, len(TASKS)), 2)) for _ in range(evals)]


def test_rl_report_matches_numpy_on_the_headline_evaluation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for seed in range(3):
        _rl_run(tmp_path, "pcgrad", seed, _levels(rng, 0.6, 1.0))
        _rl_run(tmp_path, "ew", seed, _levels(rng, 0.0, 0.4))
    sweep = load_sweep(tmp_path)
    assert (sweep.kind, sweep.protocol, sweep.statistic) == ("rl", "metaworld-v3", "final")
    report = sweep_report(sweep, [("pcgrad", "ew"), ("ew", "pcgrad"), ("ew", "ew")], reps=REPS)
    for group in ("pcgrad", "ew"):
        rows = [json.loads((tmp_path / group / f"seed{s}" / "results.json").read_text()) for s in range(3)]
        m = np.array([[r["evals"][-1]["success"][t] for t in TASKS] for r in rows])  # final evaluation
        scores = report.groups[group]
        assert scores.tasks == TASKS and scores.seeds == (0, 1, 2)
        np.testing.assert_array_equal(scores.scores, m)
        np.testing.assert_allclose(scores.headline["final success (reported)"], m.mean(axis=1))
        est = report.estimates[group]
        assert est["iqm"].point == pytest.approx(stats.trim_mean(m.ravel(), 0.25))
        assert est["mean"].point == pytest.approx(m.mean())
        assert est["median"].point == pytest.approx(np.median(m.mean(axis=0)))
        assert est["optimality_gap"].point == pytest.approx(np.mean(1.0 - m))
        assert all(iv.low <= iv.point <= iv.high for iv in est.values())
    assert report.improvements[("pcgrad", "ew")].point == 1.0  # every pcgrad run beats every ew run on every task
    assert report.improvements[("ew", "pcgrad")].point == 0.0
    same = report.improvements[("ew", "ew")]  # identical data: 0.5; the two sides are resampled independently
    assert same.point == 0.5 and same.low < 0.5 < same.high


def test_best_protocol_reads_the_best_evaluation_and_curves_give_the_iqm_per_step(tmp_path: Path) -> None:
    for seed in range(2):  # mtrl-legacy reports the best evaluation: here the middle one
        _rl_run(tmp_path, "ew", seed, [[0.1] * 4, [0.9, 0.8, 0.7, 1.0 - seed / 10], [0.2] * 4], "mtrl-legacy")
    sweep = load_sweep(tmp_path)
    assert sweep.statistic == "best"
    scores = sweep_report(sweep, reps=REPS).groups["ew"]
    np.testing.assert_array_equal(scores.scores, [[0.9, 0.8, 0.7, 1.0], [0.9, 0.8, 0.7, 0.9]])
    np.testing.assert_allclose(scores.headline["best success (reported)"], [0.85, 0.825])
    steps, curves = sample_efficiency(sweep, reps=REPS)
    np.testing.assert_array_equal(steps, [1000, 2000, 3000])
    assert [c.point for c in curves["ew"]] == pytest.approx([0.1, stats.trim_mean(scores.scores.ravel(), 0.25), 0.2])


def test_lower_is_better_flips_the_probability_of_improvement() -> None:
    low, high = np.zeros((3, 2)), np.ones((3, 2))
    better = probability_of_improvement({"low": low, "high": high}, [("low", "high")], lower_is_better=True, reps=50)
    assert better[("low", "high")].point == 1.0
    with pytest.raises(ValueError, match="no group 'nope' to compare; groups: high, low"):
        probability_of_improvement({"low": low, "high": high}, [("low", "nope")], reps=50)


def test_aggregate_script_default_report_out_file_and_plots(
    tmp_path: Path, aggregate: Callable[..., tuple[int, str, str]]
) -> None:
    rng = np.random.default_rng(1)
    for seed in range(2):
        _rl_run(tmp_path / "runs", "ew", seed, _levels(rng, 0.2, 0.8))
        _rl_run(tmp_path / "runs", "imtl_g", seed, _levels(rng, 0.3, 0.9))
    _rl_run(tmp_path / "runs", "ew", 7, _levels(rng, 0.0, 0.1), complete=False)  # interrupted: skipped
    out, plots = tmp_path / "report.md", tmp_path / "plots"
    code, text, _ = aggregate(
        str(tmp_path / "runs"),
        "--compare",
        "imtl_g",
        "ew",
        "--reps",
        str(REPS),
        "--out",
        str(out),
        "--plots",
        str(plots),
    )
    assert code == 0
    assert out.read_text().strip() == text.strip()
    assert "Skipped 1 run(s):" in text and "ew/seed7: unfinished" in text
    assert "| group | runs | IQM | mean | median | optimality gap |" in text
    assert "| ew | 2 |" in text and "| imtl_g | 2 |" in text  # seed 7 left out
    table = text[text.index("| | ew | imtl_g |") :].split("\n\n")[0].splitlines()
    assert [row.split(" | ")[0].strip("| ") for row in table[2:]] == ["final success (reported)", *TASKS]
    assert "| imtl_g | ew | " in text
    for name in ("seed", "protocol_details", "eval_every", "steps"):
        assert name not in text.replace("ew/seed7", "")
    for png in ("profiles.png", "sample_efficiency.png"):
        assert (plots / png).stat().st_size > 5000


def test_mixed_protocols_unknown_groups_and_metrics_mode(
    tmp_path: Path, aggregate: Callable[..., tuple[int, str, str]]
) -> None:
    _rl_run(tmp_path / "a", "ew", 0, [[0.5] * 4])
    _rl_run(tmp_path / "b", "ew", 0, [[0.5] * 4], "mtrl-legacy")
    code, out, err = aggregate(str(tmp_path))
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "mixes protocols: 'metaworld-v3'" in err and "aggregate one protocol at a time" in err
    with pytest.raises(ValueError, match="no group 'pcgrad' to compare"):
        sweep_report(load_sweep(tmp_path / "a"), [("pcgrad", "ew")], reps=REPS)
    keys = result_keys(find_runs(tmp_path / "a"))
    assert "summary/reported_value" in keys and "summary/final/success/reach-v3" in keys
    assert not [k for k in keys if k.startswith(("seed", "protocol_details/", "complete"))]
    code, out, _ = aggregate(str(tmp_path / "a"), "--metrics", "summary/reported_value")
    assert code == 0 and "| ew | 0.500 ± 0.000 (n=1) |" in out


def test_last_evaluations_score_and_holm_decisions(
    tmp_path: Path, aggregate: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """--last 3 scores a run by the mean of its last 3 evaluations per task (not its final one); --holm gives every
    comparison its bootstrap p-value and Holm's decision: a group far above ew differs, one equal to ew does not."""
    rng = np.random.default_rng(3)
    for seed in range(5):
        _rl_run(tmp_path, "ew", seed, [[0.0] * 4, *_levels(rng, 0.1, 0.3, evals=3)])
        _rl_run(tmp_path, "pcgrad", seed, [[0.0] * 4, *_levels(rng, 0.1, 0.3, evals=3)])
        _rl_run(tmp_path, "imtl", seed, [[0.0] * 4, *_levels(rng, 0.7, 0.9, evals=2), [0.0] * 4])  # final 0
    report = sweep_report(load_sweep(tmp_path, last=3), [("imtl", "ew"), ("pcgrad", "ew")], reps=REPS, holm_alpha=0.05)
    for group in ("ew", "imtl"):
        rows = [json.loads((tmp_path / group / f"seed{s}" / "results.json").read_text()) for s in range(5)]
        last3 = np.array([[np.mean([e["success"][t] for e in r["evals"][-3:]]) for t in TASKS] for r in rows])
        order = [report.groups[group].tasks.index(t) for t in TASKS]
        np.testing.assert_allclose(report.groups[group].scores[:, order], last3)
        np.testing.assert_allclose(report.groups[group].headline["mean of last 3 evaluations"], last3.mean(axis=1))
    assert report.holm == {("imtl", "ew"): True, ("pcgrad", "ew"): False}
    assert report.p_values[("imtl", "ew")] < 0.025 and report.p_values[("pcgrad", "ew")] > 0.05
    code, text, _ = aggregate(str(tmp_path), "--last", "3", "--confidence", "0.995", "--holm", "0.05",
                              "--compare", "imtl", "ew", "--compare", "pcgrad", "ew", "--reps", str(REPS))  # fmt: skip
    assert code == 0 and "the mean success of each run's last 3 evaluations" in text
    assert (
        "99.5% stratified-bootstrap interval" in text and "| X | Y | P(X > Y) | bootstrap p | differs (Holm) |" in text
    )
    assert "| imtl | ew |" in text and text.split("| imtl | ew |")[1].splitlines()[0].endswith("| yes |")
    assert text.split("| pcgrad | ew |")[1].splitlines()[0].endswith("| no |")
    with pytest.raises(ValueError, match="has 4 evaluation"):
        sweep_report(load_sweep(tmp_path, last=5), [], reps=REPS)
    for argv, message in ((["--holm", "0.05"], "at least one --compare"), (["--confidence", "95"], "in (0, 1)")):
        with pytest.raises(SystemExit):
            aggregate(str(tmp_path), *argv)
        assert message in capsys.readouterr().err


# --- vision ----------------------------------------------------------------------------------------
BASE = Baseline("stl", {"seg/miou": 0.5, "depth/abs_err": 0.2})


def _vision_run(root: Path, balancer: str, seed: int, miou: float, abs_err: float) -> dict[str, float]:
    """A run directory as scripts/train_vision.py leaves it with a baseline: results.json with the keys of
    ``VisionTrainer.results`` and ``delta_m`` from the trainer's own ``delta_m``."""
    run_dir = root / f"{balancer}_s{seed}"
    run_dir.mkdir(parents=True)
    # Two evaluations: at step 25 every metric is 10% worse than the baseline, at 50 the given values.
    evals = [
        {"step": 25, "seg/miou": 0.45, "depth/abs_err": 0.22},
        {"step": 50, "seg/miou": miou, "depth/abs_err": abs_err},
    ]
    history = [{k: v for k, v in e.items() if k != "step"} for e in evals]
    delta = dataclasses.asdict(delta_m(history, BASE, k=1))
    cfg = {"data": {"name": "synthetic"}, "balancer": {"name": balancer, "hparams": {}}, "seed": seed, "last_k": 1}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    results = {
        "run": run_dir.name,
        "data": "synthetic",
        "model": "small",
        "balancer": balancer,
        "single_task": None,
        "tasks": ["seg", "depth"],
        "seed": seed,
        "steps": 50,
        "train_time_s": 1.0,
        "final": history[-1],
        "selected": history[-1],
        "selection_rule": "mean of the last 1 evaluations",
        "evals": evals,
        "config": cfg,
        "delta_m": delta,
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    return {k: 100.0 * v for k, v in delta["relative"].items()}


def test_vision_sweep_reports_delta_m_lower_is_better(tmp_path: Path) -> None:
    good = [_vision_run(tmp_path, "nash_mtl", s, 0.55 + s / 100, 0.18) for s in range(3)]  # better than the base
    bad = [_vision_run(tmp_path, "ew", s, 0.45, 0.22 + s / 100) for s in range(3)]
    sweep = load_sweep(tmp_path)
    assert sweep.kind == "vision" and sweep.lower_is_better and "Δm against stl" in sweep.protocol
    report = sweep_report(sweep, [("nash_mtl", "ew")], reps=REPS)
    for group, rows in (("nash_mtl", good), ("ew", bad)):
        m = np.array([[r["seg/miou"], r["depth/abs_err"]] for r in rows])
        scores = report.groups[group]
        assert scores.tasks == ("seg/miou", "depth/abs_err")  # the baseline's order
        np.testing.assert_allclose(scores.scores, m)
        np.testing.assert_allclose(scores.headline["Δm% metric-weighted"], m.mean(axis=1))  # r_m mean = Δm
        assert set(report.estimates[group]) == {"iqm", "mean", "median"}  # no optimality gap for Δm
        assert report.estimates[group]["mean"].point == pytest.approx(m.mean())
    assert report.estimates["nash_mtl"]["mean"].point < 0 < report.estimates["ew"]["mean"].point
    assert report.improvements[("nash_mtl", "ew")].point == 1.0  # lower Δm on every metric
    text = report_markdown(report)
    assert "| X | Y | P(X < Y), lower Δm is better |" in text and "optimality gap" not in text
    table = text[text.index("| | ew | nash_mtl |") :].split("\n\n")[0].splitlines()
    labels = ["Δm% metric-weighted", "Δm% task-weighted", "seg/miou", "depth/abs_err"]
    assert [row.split(" | ")[0].strip("| ") for row in table[2:]] == labels


def test_vision_sample_efficiency_is_delta_m_of_every_evaluation_against_the_stored_baseline(tmp_path: Path) -> None:
    final = [_vision_run(tmp_path, "ew", s, 0.45, 0.22 + s / 100) for s in range(3)]
    sweep = load_sweep(tmp_path)
    steps, curves = sample_efficiency(sweep, reps=REPS)
    assert list(steps) == [25, 50]
    early, late = curves["ew"]
    assert early.point == pytest.approx(10.0)  # 100·r_m = +10% on both metrics at step 25
    scores = [r[k] for r in final for k in ("seg/miou", "depth/abs_err")]
    assert late.point == pytest.approx(stats.trim_mean(scores, 0.25))
    results = json.loads((tmp_path / "ew_s0" / "results.json").read_text())
    del results["delta_m"]["baseline_values"]  # a run written before the baseline values were stored
    (tmp_path / "ew_s0" / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"no delta_m\.baseline_values"):
        sample_efficiency(load_sweep(tmp_path), reps=REPS)


def test_vision_without_baseline_and_mixed_kinds_are_refused(tmp_path: Path) -> None:
    _vision_run(tmp_path / "v", "ew", 0, 0.5, 0.2)
    results = json.loads((tmp_path / "v" / "ew_s0" / "results.json").read_text())
    del results["delta_m"]
    (tmp_path / "v" / "ew_s0" / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=r"have no delta_m .*train them with baseline="):
        load_sweep(tmp_path / "v")
    _rl_run(tmp_path, "ew", 0, [[0.5] * 4])
    with pytest.raises(ValueError, match=r"both RL runs .* and vision runs .*aggregate one kind at a time"):
        load_sweep(tmp_path)
