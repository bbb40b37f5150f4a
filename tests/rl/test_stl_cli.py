"""scripts/train_stl.py takes ``CONFIG key=value`` like the other trainers (the ``--flag`` form still works for this
release, with a note), so scripts/sweep.py runs the single-task reference over seeds."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from agents.stl_config import load_stl_config
from mtrl.config import ConfigError
from tests.helpers import load_script
from tests.test_tensorboard_layout import lines, read_layout

ROOT = Path(__file__).resolve().parents[2]
PRESET = "configs/mt10_sac.yaml"
#: One task, 30 environment steps (20 random), one evaluation episode: seconds per run.
TINY = ["tasks=[reach-v3]", "protocol=mtrl-legacy", "steps=30", "warmup=20", "log_every=10", "buffer=300",
        "eval_every=0", "eval_episodes=1", "device=cpu", "progress=false"]  # fmt: skip


@pytest.fixture(scope="module")
def stl() -> ModuleType:
    return load_script("train_stl")


def test_config_and_overrides_resolve_like_the_deprecated_flags(stl: ModuleType, tmp_path: Path) -> None:
    dotted = load_stl_config(PRESET, [*TINY, "seed=3", f"logdir={tmp_path}", "run_name=r", "checkpoint_replay=false"])
    flags = stl.parse_args(["--preset", PRESET, "--tasks", "reach-v3", "--protocol", "mtrl-legacy", "--steps", "30",
                            "--warmup", "20", "--log-every", "10", "--buffer", "300", "--eval-every", "0",
                            "--eval-episodes", "1", "--device", "cpu", "--no-progress", "--seed", "3", "--logdir",
                            str(tmp_path), "--run-name", "r", "--no-checkpoint-replay"])  # fmt: skip
    assert dotted == flags
    assert dotted.tasks == ("reach-v3",) and dotted.cfg.seed == 3 and dotted.buffer_capacity == 300


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["step=5"], r"unknown config key\(s\) \['step'\] \(did you mean steps\?\)"),
        (["steps=0"], r"bad value for 'steps': expected an integer >= 1, got 0"),
        (["tasks=[fly-v3]"], r"bad value for 'tasks': unknown task 'fly-v3'"),
        (["preset=configs/mt50_sac.yaml"], r"the preset is CONFIG, the first argument"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key(
    stl: ModuleType, overrides: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_stl_config(PRESET, overrides)
    assert stl.main([PRESET, *overrides, f"logdir={tmp_path}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: "), lines
    assert list(tmp_path.iterdir()) == []  # nothing created


#: The sweep's runs: 10 environment steps, 8 of them warm-up (two SAC updates, one before the training charts are
#: logged at step 10), one evaluation episode at the end, no replay in the checkpoint. A run's time is mostly
#: starting Python (torch, stable-baselines3, Meta-World) and building its Meta-World envs.
FAST = ["tasks=[reach-v3]", "protocol=mtrl-legacy", "steps=10", "warmup=8", "log_every=10", "buffer=300",
        "eval_every=0", "eval_episodes=1", "checkpoint_replay=false", "device=cpu", "progress=false"]  # fmt: skip


def test_sweep_runs_a_two_seed_single_task_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/sweep.py (in this process; its runs are the real scripts/train_stl.py, one process each) runs the
    single-task reference over two seeds from ``CONFIG key=value``; a second call finds both finished."""
    sweep = load_script("sweep")
    argv = [str(ROOT / "scripts" / "train_stl.py"), PRESET, "--balancers", "stl", "--seeds", "0", "1",
            "--root", str(tmp_path), *FAST]  # fmt: skip
    assert sweep.main([*argv, "--jobs", "2"]) == 0, capsys.readouterr().err[-3000:]
    for seed in (0, 1):
        run = tmp_path / "stl" / f"seed{seed}"
        results = json.loads((run / "results.json").read_text())
        assert results["complete"] is True and results["seed"] == seed and results["steps"] == 10
        assert list(results["summary"]["final"]["success"]) == ["reach-v3"]
        assert (run / "checkpoints" / "reach-v3" / "model.zip").is_file()
        command = (run / "job.log").read_text().splitlines()[0]
        assert f"seed={seed}" in command and "balancer=" not in command and "--" not in command
    layout, tags = read_layout(tmp_path / "stl" / "seed0")  # TensorBoard's per-task charts, as the RL runs'
    assert set(layout) == {"per task: evaluation", "per task: training"}  # no balancer
    for category in layout.values():
        for title, regexes in category.items():
            assert [len(found) for found in lines(regexes, tags)] == [1], (title, sorted(tags))  # reach-v3's line
    capsys.readouterr()
    finished = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("results.json")}
    assert sweep.main(argv) == 0
    assert "every run of the sweep has results.json already" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("results.json")} == finished  # nothing ran again
