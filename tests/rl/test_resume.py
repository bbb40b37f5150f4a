"""Resume = uninterrupted, exactly, on the toy suite; logs cut back to the checkpoint; one hparams session.

An uninterrupted run is compared with (a) a run that crashes after an interval checkpoint and is
resumed from it, and (b) a run stopped by a real SIGINT mid-run (the Ctrl-C code path) and resumed,
both with ``total_steps`` unchanged: losses and balancer scalars at every logged step, evaluations,
final parameters, optimiser and replay state, and ``results.json`` must be identical; TensorBoard
(read back with its own reader) and ``metrics.jsonl`` must hold each step once.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from agents.checkpoint import load_checkpoint
from agents.config import TrainConfig
from agents.trainer import Trainer
from mtrl.config import ConfigError, load_config, with_defaults

ROOT = Path(__file__).resolve().parents[2]
TOY = str(ROOT / "configs" / "toy_sac.yaml")
TOTAL = 400
COMMON = [
    f"total_steps={TOTAL}",
    "log_every=50",
    "sac.warmup_steps=100",
    "sac.hidden_sizes=[32, 32]",
    "sac.batch_per_task=16",
    "eval_every=150",
    "eval_episodes=3",
    "checkpoint_every=100",
    "progress=false",
]


class Crash(RuntimeError):
    """Stands in for a crash (OOM, killed machine) between two checkpoints."""


def _trainer(logdir: Path, name: str, *extra: str) -> Trainer:
    overrides = [f"logdir={logdir}", f"run_name={name}", *with_defaults(COMMON, extra)]  # extra replaces COMMON's
    return Trainer(load_config(TrainConfig, TOY, overrides))


def _hook_step(trainer: Trainer, at: int, action: Callable[[], None]) -> None:
    """Run ``action`` right after vector step ``at`` of ``trainer`` (instance-level wrapper)."""
    original = trainer.env_step

    def step() -> int:
        updates = original()
        if trainer.step == at:
            action()
        return updates

    trainer.env_step = step  # type: ignore[method-assign]


def _crash() -> None:
    raise Crash("simulated crash")


def _sigint() -> None:
    signal.raise_signal(signal.SIGINT)  # the real Ctrl-C path: the trainer's SIGINT handler


def _rows(run_dir: Path) -> dict[int, dict[str, float]]:
    """Deterministic scalars of metrics.jsonl by step (perf/* are timings); fails on a repeated step."""
    by_step: dict[int, dict[str, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "step" not in row or "text" in row:
            continue
        values = {k: v for k, v in row.items() if k != "step" and not k.startswith("perf/")}
        overlap = set(values) & set(by_step.get(row["step"], {}))
        assert not overlap, f"step {row['step']} logged twice: {sorted(overlap)[:3]}"
        by_step.setdefault(row["step"], {}).update(values)
    return by_step


def _results(run_dir: Path) -> dict[str, Any]:
    results = json.loads((run_dir / "results.json").read_text())
    results.pop("run_dir")
    return results


def _assert_same_state(a: dict[str, Any], b: dict[str, Any], total: int = TOTAL) -> None:
    assert a["step"] == b["step"] == total
    for net in ("actor", "critic", "critic_target"):
        for key, value in a["agent"][net].items():
            assert torch.equal(value, b["agent"][net][key]), f"{net}.{key} differs"
    assert torch.equal(a["agent"]["log_alpha"], b["agent"]["log_alpha"])
    for opt in ("actor_opt", "critic_opt", "alpha_opt"):
        for pid, s in a["agent"][opt]["state"].items():
            for key, value in s.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["agent"][opt]["state"][pid][key]))
    for key, value in a["replay"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b["replay"][key]), f"replay {key} differs"
    assert a["evals"] == b["evals"] and a["last_metrics"] == b["last_metrics"]


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logdir = tmp_path_factory.mktemp("full")
    _trainer(logdir, "full").train()
    return logdir / "full"


@pytest.mark.parametrize("interruption", ["crash_after_interval_checkpoint", "sigint_mid_run"])
def test_resume_gives_the_uninterrupted_numbers(tmp_path: Path, uninterrupted: Path, interruption: str) -> None:
    first = _trainer(tmp_path, "split")
    if interruption == "crash_after_interval_checkpoint":
        _hook_step(first, 251, _crash)  # after logging step 250; last checkpoint: the interval one at 200
        with pytest.raises(Crash):
            first.train()
        resume_step = 200
    else:
        _hook_step(first, 230, _sigint)  # between checkpoints, mid-episode (episodes are 40 steps)
        interrupted = first.train()
        assert interrupted["complete"] is False and interrupted["steps"] == 230
        resume_step = 230
    assert load_checkpoint(tmp_path / "split")["step"] == resume_step
    assert max(_rows(tmp_path / "split")) == (250 if resume_step == 200 else 200)  # stale rows exist

    resumed = _trainer(tmp_path, "split", "resume=true").train()
    assert resumed["complete"] is True and resumed["steps"] == TOTAL
    split = tmp_path / "split"
    _assert_same_state(load_checkpoint(uninterrupted), load_checkpoint(split))
    assert _results(uninterrupted) == _results(split)
    full_rows, split_rows = _rows(uninterrupted), _rows(split)
    assert full_rows == split_rows  # losses, balancer scalars, evals, hparam metrics: every step once
    assert "train/critic_loss" in full_rows[TOTAL] and "eval/success_mean" in full_rows[300]
    # the training episode in progress at step 230 (steps 201-240) ends after the resume with the same return
    tasks = {k.rsplit("/", 1)[1] for k in full_rows[TOTAL] if k.startswith("train/alpha/")}
    assert {k for k in full_rows[240] if k.startswith("rollout/")} == {
        f"rollout/{what}/{task}" for what in ("return", "success") for task in tasks
    } and len(tasks) == 4
    # TensorBoard: the stale steps of the interrupted process are purged, nothing is doubled.
    for tag in ("train/critic_loss", "train/alpha/reach-2", "eval/success_mean", "balancer/critic/cos_min"):
        full_events, split_events = _scalars(uninterrupted, tag), _scalars(split, tag)
        assert [s for s, _ in split_events] == sorted({s for s, _ in split_events}), f"{tag} has a repeated step"
        assert split_events == full_events, tag


MT10 = str(ROOT / "configs" / "mt10_sac.yaml")
MT10_SHORT = ["env.protocol=mtrl-legacy", "total_steps=50", "sac.warmup_steps=20", "sac.hidden_sizes=[16, 16]",
              "sac.batch_per_task=4", "sac.buffer_capacity=1000", "eval_every=0", "checkpoint_every=0",
              "log_every=10", "progress=false", "device=cpu"]  # fmt: skip


@pytest.mark.slow  # ~80 s: six MT10 builds (train + eval envs of three trainers)
def test_resumed_mt10_run_continues_its_episodes_and_gives_the_uninterrupted_numbers(tmp_path: Path) -> None:
    """Real MT10 (sync envs): a run stopped by SIGINT mid-episode (step 35 of 150) and resumed ends
    with exactly the parameters, optimiser and replay state, losses and results.json of an
    uninterrupted run; the trainer notes nothing about restarted episodes."""

    def mt10(name: str, *extra: str) -> Trainer:
        overrides = [f"logdir={tmp_path}", f"run_name={name}", *MT10_SHORT, *extra]
        return Trainer(load_config(TrainConfig, MT10, overrides))

    mt10("full").train()
    first = mt10("split")
    _hook_step(first, 35, _sigint)
    assert first.train()["steps"] == 35
    resumed = mt10("split", "resume=true")
    assert not any("restart" in note for note in resumed.notes), resumed.notes
    assert resumed.train()["complete"] is True
    _assert_same_state(load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split"), total=50)
    assert _results(tmp_path / "full") == _results(tmp_path / "split")
    assert _rows(tmp_path / "full") == _rows(tmp_path / "split")


def _hparams_sessions(run_dir: Path) -> list[plugin_data_pb2.HParamsPluginData]:
    """Every hparams session-start summary in every event file of ``run_dir`` (raw events)."""
    out = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    out.append(plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content))
    return out


def test_hparams_written_at_start_with_protocol_and_reported_metric(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "hp", "total_steps=200", "eval_every=100")
    run_dir = tmp_path / "hp"
    trainer.logger.flush()
    sessions = _hparams_sessions(run_dir)  # before any step: a running (or crashing) run has hparams
    assert len(sessions) == 1
    hp = sessions[0].session_start_info.hparams
    assert hp["env.protocol"].string_value == "toy" and hp["protocol_details.max_episode_steps"].number_value == 40
    assert hp["protocol_details.reported_statistic"].string_value == "final"
    assert hp["eval_episodes"].number_value == 3 and hp["device"].string_value == "cpu"
    _hook_step(trainer, 150, _sigint)
    trainer.train()
    _trainer(tmp_path, "hp", "total_steps=200", "eval_every=100", "resume=true").train()

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info"}  # one session, no end-spam
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert metric_tags == {"hparam/success_reported", "hparam/success_final", "hparam/success_last_mean"}
    reported = acc.Scalars("hparam/success_reported")
    evals = json.loads((run_dir / "results.json").read_text())["evals"]
    assert [e.step for e in reported] == [e["step"] for e in evals] == [100, 200]
    assert reported[-1].value == pytest.approx(evals[-1]["success_mean"])  # toy reports the final eval
    results = json.loads((run_dir / "results.json").read_text())
    assert results["summary"]["reported_statistic"] == "final"
    assert results["summary"]["reported_value"] == results["summary"]["reported"]["final"]
    assert results["protocol_details"]["eval_episodes_per_task"] == 3
    # one hparams summary per process start (2), none added by finishing; the reader keeps one session
    assert len(_hparams_sessions(run_dir)) == 2


def test_ew_run_logs_gramian_diagnostics_at_log_steps(tmp_path: Path) -> None:
    """ew skips G at ordinary updates but computes it where metrics are logged."""
    _trainer(tmp_path, "ew", "total_steps=200", "balancer=ew").train()
    acc = EventAccumulator(str(tmp_path / "ew"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for group in ("critic", "actor"):
        for key in ("cos_min", "cos_mean", "cond", "grad_norm/reach-0", "weight/reach-3"):
            assert f"balancer/{group}/{key}" in tags, f"balancer/{group}/{key} missing"
        cos = [e.value for e in acc.Scalars(f"balancer/{group}/cos_min")]
        cond = [e.value for e in acc.Scalars(f"balancer/{group}/cond")]
        assert [e.step for e in acc.Scalars(f"balancer/{group}/cond")] == [150, 200]  # log steps after warm-up
        assert all(-1.0 <= c <= 1.0 for c in cos) and all(c >= 1.0 for c in cond)
        assert all(e.value == 1.0 for e in acc.Scalars(f"balancer/{group}/weight/reach-1"))


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    _trainer(tmp_path, "r", "total_steps=120", "checkpoint_every=0").train()
    with pytest.raises(ConfigError, match=r"sac\.lr.*seed|seed.*sac\.lr") as err:
        _trainer(tmp_path, "r", "total_steps=120", "resume=true", "seed=3", "sac.lr=0.01")
    assert "total_steps" in str(err.value)  # the message lists what may change
    assert not (tmp_path / "r" / "checkpoints" / "step_000000121.pt").exists()
    # allowed: a longer budget, another device spelling and log cadence
    resumed = _trainer(tmp_path, "r", "total_steps=160", "resume=true", "device=auto", "log_every=20").train()
    assert resumed["steps"] == 160
    with pytest.raises(ConfigError, match="run_name"):
        Trainer(load_config(TrainConfig, TOY, [f"logdir={tmp_path}", "resume=true"]))
    with pytest.raises(ConfigError, match="no checkpoint"):
        _trainer(tmp_path, "nothing-here", "resume=true")
    assert not (tmp_path / "nothing-here").exists()
