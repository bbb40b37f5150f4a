"""The single-task reference (agents.stl, scripts/train_stl.py): a real SB3 SAC per Meta-World task, in
train.py's run layout.

Budgets are tiny (120 steps per task, 100 of them random warm-up: 20 updates of the 3×400 SAC), so
what is checked is the plumbing — tags read back with tensorboard's reader, config/results files,
checkpoints, resume, argument errors — not learning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.config import EnvConfig, TrainConfig, protocol_details
from agents.stl import STLRun
from agents.stl_config import STLConfig, STLConfigError
from agents.stl_state import read_state
from envs.protocols import PROTOCOLS
from mtrl.config import ConfigError, update_config
from mtrl.runstart import STL
from tests.helpers import load_script, run_script
from tests.rl.helpers import interrupt_once_logged

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_stl.py"
TINY = ["--protocol", "mtrl-legacy", "--steps", "120", "--warmup", "100", "--log-every", "10", "--buffer", "300",
        "--device", "cpu", "--no-progress"]  # fmt: skip
MT_RESULT_KEYS = {"run_dir", "protocol", "benchmark", "critic_balancer", "actor_balancer", "seed", "steps", "complete",
                  "summary", "evals"}  # fmt: skip  (agents.trainer.Trainer._finish)


@pytest.fixture(scope="module")
def stl() -> ModuleType:
    """scripts/train_stl.py imported as a module (in-process runs skip the interpreter start-up)."""
    return load_script("train_stl")


def _events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_cli_run_writes_the_multi_task_layout(tmp_path: Path) -> None:
    proc = run_script("train_stl", "--tasks", "reach-v3", "push-v3", "--eval-every", "60", *TINY,
                      "--logdir", str(tmp_path), "--run-name", "stl", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "stl"

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["env"]["protocol"] == "mtrl-legacy" and cfg["balancer"] == "stl"
    # The multi-task runs' protocol stamp (agents.config.protocol_details), with the protocol's values.
    mt_stamp = protocol_details(TrainConfig(env=EnvConfig(benchmark="MT10", protocol="mtrl-legacy"), eval_episodes=1))
    assert cfg["protocol_details"] == mt_stamp
    legacy = PROTOCOLS["mtrl-legacy"]
    assert cfg["protocol_details"]["max_episode_steps"] == legacy.max_episode_steps == 150
    assert cfg["protocol_details"]["reward_function_version"] == legacy.reward_function_version
    assert cfg["env"]["tasks"] == ["reach-v3", "push-v3"]
    assert cfg["sac"]["hidden_sizes"] == [400, 400, 400] and cfg["sac"]["batch_per_task"] == 128

    results = json.loads((run_dir / "results.json").read_text())
    assert MT_RESULT_KEYS <= set(results)
    assert results["protocol_details"] == cfg["protocol_details"]
    assert results["complete"] is True and results["steps"] == 120
    assert [e["step"] for e in results["evals"]] == [60, 120]
    for e in results["evals"]:
        assert set(e["success"]) == {"reach-v3", "push-v3"}
        assert e["success_mean"] == pytest.approx(sum(e["success"].values()) / 2)
    assert results["summary"]["report_rule"] == "best" and set(results["summary"]["reported"]) == {"best", "final"}

    acc = _events(run_dir)
    scalars = set(acc.Tags()["scalars"])
    for tag in ("train/critic_loss", "train/actor_loss", "train/alpha_loss", "perf/sps", "perf/updates_per_s",
                "eval/success_mean"):  # fmt: skip
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    for task in ("reach-v3", "push-v3"):
        for key in ("train/critic_loss", "train/actor_loss", "train/alpha", "train/alpha_loss", "eval/success",
                    "eval/return", "perf/sps"):  # fmt: skip
            assert f"{key}/{task}" in scalars, f"{key}/{task} missing"
        assert [e.step for e in acc.Scalars(f"eval/success/{task}")] == [60, 120]
        losses = acc.Scalars(f"train/critic_loss/{task}")
        assert [e.step for e in losses] == [110, 120]  # every --log-every steps once updates run (after warm-up)
        assert all(e.value >= 0 for e in losses)  # a sum of squared TD errors
        alphas = [e.value for e in acc.Scalars(f"train/alpha/{task}")]
        assert all(0 < a < 1.0 for a in alphas)  # starts at 1.0, and α falls while the policy is near-uniform
    # The mean over tasks is logged as soon as every task reached the step, not only at the end.
    mean_60 = next(e for e in acc.Scalars("eval/success_mean") if e.step == 60)
    assert mean_60.wall_time < acc.Scalars("eval/success/reach-v3")[-1].wall_time
    mean_loss = {e.step: e.value for e in acc.Scalars("train/critic_loss")}
    per_task = [{e.step: e.value for e in acc.Scalars(f"train/critic_loss/{t}")} for t in ("reach-v3", "push-v3")]
    assert mean_loss[120] == pytest.approx((per_task[0][120] + per_task[1][120]) / 2, rel=1e-6)
    hparams = b"".join(acc.PluginTagToContent("hparams").values())
    assert b"env.protocol" in hparams and b"protocol_details.max_episode_steps" in hparams
    assert b"hparam/success_reported" in hparams  # the metric, logged as a scalar at every evaluation
    assert [e.step for e in acc.Scalars("hparam/success_reported")] == [60, 120]
    assert any("run/notes" in t for t in acc.Tags()["tensors"])

    from stable_baselines3 import SAC

    model = SAC.load(run_dir / "checkpoints" / "push-v3" / "model.zip", device="cpu")
    assert model.num_timesteps == 120
    widths = [m.out_features for m in model.policy.actor.latent_pi if isinstance(m, torch.nn.Linear)]
    assert widths == [400, 400, 400]
    assert (run_dir / "checkpoints" / "push-v3" / "replay.pkl").is_file()


def _args(stl: ModuleType, tmp_path: Path, *extra: str) -> Any:
    return stl.parse_args(["--tasks", "reach-v3", "push-v3", "--eval-every", "0", *TINY, "--logdir", str(tmp_path),
                           "--run-name", "r", *extra])  # fmt: skip


def test_resume_skips_finished_task_and_reloads_the_one_in_progress(
    stl: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--eval-every 0 (only at the end): tasks run one after the other; interrupt push-v3 at step 110."""
    run = STLRun(_args(stl, tmp_path))
    original = run._after_env_step

    def interrupt(task: str, step: int) -> bool:
        if task == "push-v3" and step == 110:
            run.request_stop()
        return original(task, step)

    run._after_env_step = interrupt
    first = run.train()
    run_dir = tmp_path / "r"
    assert read_state(run_dir / "checkpoints", ["reach-v3", "push-v3"], STL).steps == {"reach-v3": 120, "push-v3": 110}
    assert first["complete"] is False and first["steps_per_task"] == {"reach-v3": 120, "push-v3": 110}
    assert first["evals"] == []  # no step at which both tasks were evaluated yet
    reach_model = (run_dir / "checkpoints" / "reach-v3" / "model.zip").read_bytes()

    capsys.readouterr()
    with pytest.raises(ConfigError, match="already has checkpoints"):
        STLRun(_args(stl, tmp_path))
    changed = r"--resume with a configuration .*env\.protocol: the run has .mtrl-legacy., now .metaworld-v3."
    with pytest.raises(ConfigError, match=changed):
        STLRun(stl.parse_args(["--tasks", "reach-v3", "push-v3", "--protocol", "metaworld-v3", "--logdir",
                                   str(tmp_path), "--run-name", "r", "--resume", "--no-progress"]))  # fmt: skip

    resumed = STLRun(_args(stl, tmp_path, "--resume")).train()
    err = capsys.readouterr().err
    assert "reach-v3: finished (120 steps), skipped" in err
    assert "push-v3: resumed at step 110" in err
    assert (run_dir / "checkpoints" / "reach-v3" / "model.zip").read_bytes() == reach_model  # untouched
    assert resumed["complete"] is True and resumed["steps_per_task"] == {"reach-v3": 120, "push-v3": 120}
    assert [e["step"] for e in resumed["evals"]] == [120]
    assert [h["step"] for h in resumed["history"]["reach-v3"]] == [120]  # evaluated once, before the stop
    # push-v3 continued from 110: its loss at 110 was logged once (first run), then 120 (resumed run).
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    push_steps = [r["step"] for r in rows if "train/critic_loss/push-v3" in r]
    reach_steps = [r["step"] for r in rows if "train/critic_loss/reach-v3" in r]
    assert push_steps == [110, 120] and reach_steps == [110, 120]
    from stable_baselines3 import SAC

    assert SAC.load(run_dir / "checkpoints" / "push-v3" / "model.zip", device="cpu").num_timesteps == 120
    assert json.loads((run_dir / "results.json").read_text())["complete"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eval-every", "-1"], "argument --eval-every: expected an integer >= 0, got -1"),
        (["--eval-every", "ten"], "argument --eval-every: expected an integer >= 0, got 'ten'"),
        (["--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
        (["--eval-episodes", "0"], "argument --eval-episodes: expected an integer >= 1, got 0"),
        (["--tasks", "reach-v3", "fly-v3"], "argument --tasks: unknown task 'fly-v3' in --tasks: not one"),
        (["--tasks", "hammer-v3"], "unknown task 'hammer-v3' in --tasks: not one of the 10 MT10 tasks"),
        (["--benchmark", "MT1", "--tasks", "reach-v2"], "of the 50 Meta-World v3 tasks; close matches: reach-v3"),
        (["--benchmark", "MT1"], "argument --tasks: --benchmark MT1 needs its task names"),
        (["--tasks", "reach-v3", "reach-v3"], "duplicate task names"),
        (["--resume"], "--resume needs --run-name"),
        (["--protocol", "v1"], "argument --protocol: invalid choice: 'v1'"),
        (["--device", "gpu0"], "argument --device: bad device 'gpu0'; valid:"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(
    stl: ModuleType, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        stl.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_resume_without_checkpoints_is_a_clear_error(
    stl: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="nothing to resume"):
        STLRun(_args(stl, tmp_path, "--resume"))
    argv = ["--tasks", "reach-v3", *TINY, "--logdir", str(tmp_path), "--run-name", "r", "--resume"]
    assert stl.main(argv) == 2  # the script: one line, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume: nothing to resume in")


def test_config_is_typed_and_names_the_flag() -> None:
    """STLConfig goes through mtrl.config (unknown keys, types) and its checks name the flag."""
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['step'\] \(did you mean steps\?\)"):
        update_config(STLConfig(), {"step": 10})
    with pytest.raises(ConfigError, match="bad value 'x' for 'steps': expected an integer"):
        update_config(STLConfig(), {"steps": "x"})
    with pytest.raises(ConfigError, match=r"bad value 'v1' for 'protocol': expected .*'metaworld-v3', 'mtrl-legacy'"):
        update_config(STLConfig(), {"protocol": "v1"})
    with pytest.raises(STLConfigError, match=r"^--eval-every: expected an integer >= 0, got -5$") as exc:
        STLConfig(eval_every=-5)
    assert exc.value.key == "eval_every"
    assert update_config(STLConfig(), {"tasks": ["reach-v3"]}).tasks == ("reach-v3",)


def test_help_documents_every_argument() -> None:
    proc = run_script("train_stl", "--help")
    assert proc.returncode == 0
    for flag in ("--tasks", "--protocol", "--steps", "--eval-every", "--checkpoint-every", "--resume", "--logdir"):
        assert flag in proc.stdout


def test_ctrl_c_saves_and_writes_results(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--tasks", "reach-v3", "--protocol", "mtrl-legacy", "--steps", "1000000",
           "--warmup", "20", "--eval-every", "0", "--log-every", "5", "--buffer", "300", "--device", "cpu",
           "--no-progress", "--logdir", str(tmp_path), "--run-name", "int"]  # fmt: skip
    rc, err = interrupt_once_logged(cmd, ROOT, tmp_path / "int" / "metrics.jsonl", "train/critic_loss/reach-v3", 120)
    assert rc == 130, err[-3000:]  # 128 + SIGINT: stopped with a checkpoint, not finished
    assert err.strip().endswith(f"--logdir {tmp_path} --run-name int --resume")
    saved = read_state(tmp_path / "int" / "checkpoints", ["reach-v3"], STL).steps["reach-v3"]
    assert 20 < saved < 1_000_000
    results = json.loads((tmp_path / "int" / "results.json").read_text())
    assert results["complete"] is False and results["steps"] == saved
    assert (tmp_path / "int" / "checkpoints" / "reach-v3" / "model.zip").is_file()
