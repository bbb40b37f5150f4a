"""scripts/evaluate.py on a tiny toy run: run directory or checkpoint file, the printed table, the JSON
file, and one-line errors for every usage problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch

from agents.trainer import train_from_args
from tests.helpers import load_script, run_script

ROOT = Path(__file__).resolve().parents[2]
TOY = str(ROOT / "configs" / "toy_sac.yaml")
TASKS = [f"reach-{t}" for t in range(4)]


@pytest.fixture(scope="module")
def evaluate_script() -> ModuleType:
    return load_script("evaluate")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """150 vector steps on the toy suite, checkpoints at 100 and 150, one evaluation at the end."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logdir = tmp_path_factory.mktemp("eval_runs")
        results = train_from_args(
            TOY,
            [f"logdir={logdir}", "run_name=toy", "total_steps=150", "sac.warmup_steps=50", "sac.hidden_sizes=[16, 16]",
             "sac.batch_per_task=8", "eval_every=0", "checkpoint_every=100", "log_every=50", "progress=false"],
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return logdir / "toy", results


def _run(module: ModuleType, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = module.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_dir_evaluates_the_latest_checkpoint_and_reproduces_the_final_evaluation(
    evaluate_script: ModuleType, toy_run: tuple[Path, dict], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run_dir, results = toy_run
    out = tmp_path / "e.json"
    code, stdout, err = _run(evaluate_script, [str(run_dir), f"out={out}"], capsys)
    assert code == 0, err
    table = json.loads(out.read_text())
    assert Path(table["checkpoint"]).name == "step_000000150.pt" and table["step"] == 150
    assert table["benchmark"] == "toy" and table["protocol"] == "toy"
    assert table["episodes"] == 10  # the run's eval_episodes (configs/toy_sac.yaml)
    assert list(table["success"]) == TASKS and list(table["return"]) == TASKS
    assert all(0.0 <= v <= 1.0 for v in table["success"].values())
    assert table["success_mean"] == pytest.approx(sum(table["success"].values()) / 4)
    # Same checkpoint, same seed, same episodes, fresh eval env: the training run's own final evaluation.
    final = results["summary"]["final"]
    assert final["step"] == 150 and table["success"] == final["success"]
    # The printed table: a header naming step and episodes, one row per task, the mean.
    lines = stdout.splitlines()
    assert "step 150" in lines[0] and "10 episodes/task" in lines[0]
    for name in TASKS:
        row = next(line for line in lines if line.startswith(name))
        assert float(row.split()[1]) == pytest.approx(table["success"][name], abs=5e-4)
    mean_row = next(line for line in lines if line.startswith("mean"))
    assert float(mean_row.split()[1]) == pytest.approx(table["success_mean"], abs=5e-4)


def test_checkpoint_file_and_default_output_path(
    evaluate_script: ModuleType, toy_run: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = toy_run
    ckpt = run_dir / "checkpoints" / "step_000000100.pt"
    assert ckpt.is_file()
    code, stdout, err = _run(evaluate_script, [str(ckpt), "episodes=2"], capsys)
    assert code == 0, err
    table = json.loads((run_dir / "eval_100.json").read_text())  # default: <run dir>/eval_<step>.json
    assert table["step"] == 100 and table["episodes"] == 2 and Path(table["checkpoint"]) == ckpt
    assert "step 100" in stdout and "2 episodes/task" in stdout
    # Without last.txt the highest step_*.pt is the latest; a copied checkpoint finds its config via config=.
    copy = run_dir.parent / "copy"
    shutil.copytree(run_dir / "checkpoints", copy / "checkpoints")
    (copy / "checkpoints" / "last.txt").unlink()
    code, _, err = _run(evaluate_script, [str(copy), f"config={run_dir / 'config.yaml'}", "episodes=1",
                                          f"out={copy / 'e.json'}"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads((copy / "e.json").read_text())["step"] == 150


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "does not exist: pass a run directory of scripts/train.py"),
        (["{empty}"], "no checkpoint in"),
        (["{run}", "episodes=abc"], "bad value 'abc' for episodes: expected a positive integer (e.g. episodes=10)"),
        (["{run}", "episodes=2.5"], "bad value '2.5' for episodes"),
        (["{run}", "episodes=0"], "bad value '0' for episodes"),
        (["{run}", "episode=3"], "bad argument 'episode=3'; valid options: episodes=... out=... device=... config=..."),
        (["{run}", "10"], "bad argument '10'; valid options"),
        (["{run}", "device=gpu"], "bad device 'gpu'"),
        (["{orphan}"], "no config.yaml next to"),
        (["{notckpt}", "config={run}/config.yaml"], "cannot read checkpoint"),
        (["{stl}"], "is a scripts/train_stl.py run"),
    ],
)
def test_usage_errors_are_one_line(
    evaluate_script: ModuleType,
    toy_run: tuple[Path, dict],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    run_dir, _ = toy_run
    (tmp_path / "empty").mkdir()
    orphan = tmp_path / "orphan" / "step_000000001.pt"
    orphan.parent.mkdir()
    shutil.copy(run_dir / "checkpoints" / "step_000000100.pt", orphan)
    (tmp_path / "notckpt.pt").write_text("not a checkpoint")
    stl = tmp_path / "stl"
    (stl / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "checkpoints" / "step_000000100.pt", stl / "checkpoints" / "step_000000100.pt")
    (stl / "config.yaml").write_text("method: stl_sb3_sac\nbalancer: stl\n")
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "run": run_dir, "orphan": orphan,
             "notckpt": tmp_path / "notckpt.pt", "stl": stl}  # fmt: skip
    code, stdout, err = _run(evaluate_script, [a.format(**paths) for a in argv], capsys)
    assert code == 2 and stdout == ""
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1  # one line, no traceback


def test_cli_missing_checkpoint_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = run_script("evaluate", str(tmp_path), "episodes=3")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: no checkpoint in")


def test_a_run_is_evaluated_under_its_saved_protocol_after_the_definition_changed(
    evaluate_script: ModuleType, toy_run: tuple[Path, dict], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A saved run whose protocol_details no longer match the protocol's definition in the code (it changed
    since the run was trained) is still evaluated, under the run's own details, with a note."""
    import shutil

    import yaml

    run_dir = tmp_path / "toy"
    shutil.copytree(toy_run[0], run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["protocol_details"]["report_last_n"] = 7
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    code, _, err = _run(evaluate_script, [str(run_dir), f"out={tmp_path / 'e.json'}"], capsys)
    assert code == 0, err
    assert "differs from the run's saved protocol_details in ['report_last_n']; evaluating under the saved" in err
    assert json.loads((tmp_path / "e.json").read_text())["success"] == toy_run[1]["summary"]["final"]["success"]
