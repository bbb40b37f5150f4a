"""Training loop on the toy suite and a short real MT10 run: learning, determinism, resume,
TensorBoard output, results, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.checkpoint import load_checkpoint
from agents.config import TrainConfig
from agents.trainer import Trainer, train_from_args
from envs import evaluate, make_toy_envs
from mtrl.config import ConfigError, load_config
from tests.helpers import run_script
from tests.rl.helpers import interrupt_once_logged

ROOT = Path(__file__).resolve().parents[2]
TOY = str(ROOT / "configs" / "toy_sac.yaml")
SHORT = [
    "log_every=50",
    "sac.warmup_steps=100",
    "sac.hidden_sizes=[32, 32]",
    "sac.batch_per_task=16",
    "eval_every=150",
    "progress=false",
]


class RandomAgent:
    """Uniform random actions in [-1, 1] (the toy action space), for the success baseline."""

    def __init__(self, num_tasks: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.num_tasks = num_tasks

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=(self.num_tasks, 2))

    def reset(self, env_mask: np.ndarray) -> None:
        return None


def _random_success(num_tasks: int = 4, episodes: int = 10) -> float:
    return evaluate(
        RandomAgent(num_tasks, 0), make_toy_envs(num_tasks, seed=123), episodes_per_task=episodes
    ).success_mean


@pytest.mark.parametrize("balancer", ["ew", "imtl_g"])
def test_learns_toy_suite(tmp_path: Path, balancer: str) -> None:
    results = train_from_args(TOY, [f"logdir={tmp_path}", f"balancer={balancer}", "progress=false"])
    final = results["summary"]["final"]["success_mean"]
    random_success = _random_success()
    assert random_success <= 0.1
    assert final >= 0.75, f"{balancer}: final success {final} after {results['steps']} steps"
    if balancer != "ew":  # a Gramian balancer reports its geometry for both loss groups
        logged = set().union(*(json.loads(line) for line in (Path(results["run_dir"]) / "metrics.jsonl").open()))
        for group in ("critic", "actor"):
            assert {f"balancer/{group}/cos_min", f"balancer/{group}/cond", f"balancer/{group}/weight/reach-0"} <= logged


def _run(tmp_path: Path, name: str, steps: int, *extra: str) -> dict:
    return train_from_args(TOY, [f"logdir={tmp_path}", f"run_name={name}", f"total_steps={steps}", *SHORT, *extra])


def _jsonl_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/critic_loss"]) for r in rows if "train/critic_loss" in r]


def test_two_runs_one_seed_identical(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", 300, "checkpoint_every=0")
    b = _run(tmp_path, "b", 300, "checkpoint_every=0")
    assert a["evals"] == b["evals"]
    la, lb = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    for key, value in la["agent"]["critic"].items():
        assert torch.equal(value, lb["agent"]["critic"][key])


def test_resume_continues_identically(tmp_path: Path) -> None:
    _run(tmp_path, "full", 400)
    _run(tmp_path, "split", 200)
    resumed = _run(tmp_path, "split", 400, "resume=true")
    assert resumed["steps"] == 400
    full, split = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    assert full["step"] == split["step"] == 400
    for net in ("actor", "critic", "critic_target"):
        for key, value in full["agent"][net].items():
            assert torch.equal(value, split["agent"][net][key]), f"{net}.{key} differs after resume"
    assert torch.equal(full["agent"]["log_alpha"], split["agent"]["log_alpha"])
    assert full["last_metrics"] == split["last_metrics"]
    assert dict(_jsonl_losses(tmp_path / "full"))[400] == dict(_jsonl_losses(tmp_path / "split"))[400]


def test_run_directory_and_tensorboard(tmp_path: Path) -> None:
    results = _run(tmp_path, "tb", 300, "balancer=famo")
    run_dir = tmp_path / "tb"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "results.json").is_file()
    assert list((run_dir / "checkpoints").glob("step_*.pt"))
    saved = load_config(TrainConfig, run_dir / "config.yaml")
    assert (saved.critic_balancer, saved.actor_balancer, saved.env.protocol) == ("famo", "ew", "toy")
    assert json.loads((run_dir / "results.json").read_text())["summary"] == results["summary"]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        "train/critic_loss",
        "train/actor_loss",
        "train/alpha/reach-0",
        "train/critic_loss/reach-3",
        "eval/success/reach-1",
        "eval/success_mean",
        "perf/sps",
        "perf/updates_per_s",
        "balancer/critic/weight/reach-0",
    ):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    assert acc.Scalars("eval/success_mean")[-1].step == 300
    hparams = acc.PluginTagToContent("hparams")
    assert hparams, "no hparams summary"
    texts = acc.Tags()["tensors"]
    assert any("run/notes" in t for t in texts)
    assert b"env.protocol" in b"".join(hparams.values())
    proc = run_script("evaluate", str(run_dir), "episodes=2", f"out={tmp_path / 'e.json'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = json.loads((tmp_path / "e.json").read_text())
    assert table["step"] == 300 and table["episodes"] == 2 and set(table["success"]) == {f"reach-{t}" for t in range(4)}
    assert "reach-3" in proc.stdout and "mean" in proc.stdout


def test_bad_config_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sac\.nope"):
        load_config(TrainConfig, TOY, ["sac.nope=1"])
    with pytest.raises(ConfigError, match="valid choices"):
        load_config(TrainConfig, TOY, ["balancer=adam"])
    with pytest.raises(ConfigError, match="protocol"):
        load_config(TrainConfig, TOY, ["env.protocol=metaworld-v3"])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), TOY, "env.vector_strategy=threads", f"logdir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and "env.vector_strategy" in proc.stderr and "'sync'" in proc.stderr


def test_ctrl_c_saves_and_exits_cleanly(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        TOY,
        f"logdir={tmp_path}",
        "run_name=int",
        "total_steps=1000000",
        "eval_every=0",
        "checkpoint_every=0",
        "log_every=20",
        "progress=false",
    ]
    rc, err = interrupt_once_logged(cmd, ROOT, tmp_path / "int" / "metrics.jsonl", '"train/critic_loss"', 60)
    assert rc == 130, err  # 128 + SIGINT: stopped with a checkpoint, not finished
    state = load_checkpoint(tmp_path / "int")
    assert 0 < state["step"] < 1_000_000
    results = json.loads((tmp_path / "int" / "results.json").read_text())
    assert results["complete"] is False and results["steps"] == state["step"]
    assert err.strip().splitlines()[-2].startswith(f"interrupted by SIGINT at step {state['step']}: saved ")
    assert err.strip().endswith(f"logdir={tmp_path} run_name=int resume=true")


def test_short_real_mt10_run(tmp_path: Path) -> None:
    """40 vector steps of real MT10 (mtrl-legacy) through scripts/train.py: ~20 s on an idle 2-core CPU."""
    proc = run_script(
        "train",
        str(ROOT / "configs" / "mt10_sac.yaml"),
        "env.protocol=mtrl-legacy",
        "total_steps=40",
        "sac.warmup_steps=20",
        "sac.batch_per_task=8",
        "sac.hidden_sizes=[64, 64]",
        "eval_every=0",
        "progress=false",
        "device=cpu",
        f"logdir={tmp_path}",
        "run_name=mt10",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "mt10" / "results.json").read_text())
    assert results["steps"] == 40 and results["protocol"] == "mtrl-legacy"
    assert len(results["summary"]["final"]["success"]) == 10
    assert "reach-v3" in results["summary"]["final"]["success"]


def test_replay_stores_final_obs_and_no_termination_on_truncation(tmp_path: Path) -> None:
    """Trainer level: a truncated toy episode stores its true last observation (not the reset one)
    as next_obs, with terminated = 0 so the critic bootstraps through the time limit."""
    overrides = [
        f"logdir={tmp_path}",
        "run_name=trunc",
        "env.toy_episode_steps=10",
        "total_steps=25",
        "sac.warmup_steps=25",
        "eval_every=0",
        "eval_episodes=1",
        "checkpoint_every=0",
        "progress=false",
    ]
    trainer = Trainer(load_config(TrainConfig, TOY, overrides))
    trainer.train()
    buf = trainer.buffer
    assert buf.size == 25
    obs, act, next_obs = buf.obs_TCO[:, :25], buf.action_TCA[:, :25], buf.next_obs_TCO[:, :25]
    # toy dynamics: p' = clip(p + 0.1·clip(a)); the stored next_obs follows them on every row ...
    expected = torch.clamp(obs + 0.1 * act.clamp(-1, 1), -1, 1)
    torch.testing.assert_close(next_obs, expected, rtol=0, atol=1e-6)
    assert bool((buf.terminated_TC[:, :25] == 0).all())
    for k in range(24):
        continues = (k + 1) % 10 != 0  # row k is step k+1; steps 10 and 20 end by truncation
        same = torch.allclose(next_obs[:, k], obs[:, k + 1], rtol=0, atol=1e-6)
        assert same == continues, f"row {k}: next_obs {'should' if continues else 'should not'} be the next obs"


@pytest.mark.slow
def test_ctrl_c_with_async_envs_saves_and_resumes(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group (trainer and its async env workers): the workers ignore
    it, the trainer saves a checkpoint (env state included) and exits 130, and the run resumes."""
    base = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        str(ROOT / "configs" / "mt10_sac.yaml"),
        "env.vector_strategy=async",
        "env.protocol=mtrl-legacy",
        "sac.warmup_steps=10",
        "sac.batch_per_task=8",
        "sac.hidden_sizes=[32, 32]",
        "sac.buffer_capacity=20000",
        "eval_every=0",
        "checkpoint_every=0",
        "log_every=5",
        "progress=false",
        "device=cpu",
        f"logdir={tmp_path}",
        "run_name=async",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*base, "total_steps=100000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, start_new_session=True,
    )  # fmt: skip
    metrics = tmp_path / "async" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and '"train/critic_loss"' in metrics.read_text()):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]  # stopped with a checkpoint
    state = load_checkpoint(tmp_path / "async")
    assert 15 <= state["step"] < 100000 and len(state["env_state"]["metaworld"]) == 10
    stopped = state["step"]
    resumed = subprocess.run(
        [*base, f"total_steps={stopped + 5}", "resume=true"], cwd=ROOT, capture_output=True, text=True,
        env=env, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    results = json.loads((tmp_path / "async" / "results.json").read_text())
    assert results["steps"] == stopped + 5 and results["complete"] is True
