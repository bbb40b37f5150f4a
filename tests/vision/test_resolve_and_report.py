"""The vision configuration is checked when it is loaded (``VisionConfig.resolve``), every configuration problem
of ``scripts/train_vision.py`` is one line (exit 2, nothing created), and a completed run ends with a table of each
task's metrics and Δm (``mtrl.vision.report.final_report``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from mtrl.config import ConfigError, load_config
from mtrl.vision.config import VisionConfig
from mtrl.vision.delta import CAGRAD_NYUV2_STL
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
PRESET = str(ROOT / "configs" / "vision" / "synthetic.yaml")
TINY_OVERRIDES = ["data.size=[32, 40]", "data.batch_size=4", "data.eval_batch_size=8", "data.train_length=8",
                  "data.val_length=4", "model.width=4", "optim.steps=2", "eval_every=2", "last_k=1",
                  "image_samples=0", "progress=false"]  # fmt: skip


@pytest.fixture(scope="module")
def train_vision() -> ModuleType:
    return load_script("train_vision")


AT_LOAD = {
    "log_every=0": r"bad value 0 for 'log_every': expected a positive integer",
    "data.batch_size=0": r"'data.batch_size': expected a positive integer",
    "optim.lr=-0.1": r"'optim.lr': expected a number > 0",
    "model.width=0": r"'model.width': expected a positive integer",
    "data.size=[32]": r"'data.size': expected \[H, W\]",
    "data.name=nyuv2": r"data set 'nyuv2' is read from files: set data.root=",
    "device=gpu": r"bad value 'gpu' for 'device'",
    "balancer.name=nope": r"bad value 'nope' for 'balancer.name'; valid choices: .*pcgrad",
    "balancer.hparams.nope=1": r"unknown balancer.hparams \['nope'\] for balancer 'ew'",
}


@pytest.mark.parametrize("override", sorted(AT_LOAD))
def test_a_bad_value_fails_when_the_config_is_loaded(override: str) -> None:
    with pytest.raises(ConfigError, match=AT_LOAD[override]):
        load_config(VisionConfig, PRESET, [override])


def test_resolve_is_idempotent_and_changes_nothing() -> None:
    cfg = load_config(VisionConfig, PRESET, ["balancer.name=pcgrad", "single_task=seg"])
    assert cfg.resolve() == cfg == load_config(VisionConfig, PRESET, ["balancer.name=pcgrad", "single_task=seg"])
    assert cfg.device == "auto"  # the trainer resolves it on the machine it runs on
    # a single-task reference trains with ew: its balancer settings are not judged
    load_config(VisionConfig, PRESET, ["single_task=seg", "balancer.hparams.nope=1"])


NYUV2 = str(ROOT / "configs" / "vision" / "nyuv2.yaml")
IN_THE_TRAINER = {  # (the arguments, the line's pattern)
    "missing data root": ([NYUV2, "data.root={tmp}/nothing"], r"data set 'nyuv2' \(train split\): .*nothing"),
    "unknown task": ([PRESET, *TINY_OVERRIDES, "single_task=bogus"], r"single_task='bogus' is not a task of"),
    "bad hyper-parameter value": ([PRESET, *TINY_OVERRIDES, "balancer.name=dgr", "balancer.hparams.lam=-1"], r"lam"),
    "bad data option value": ([PRESET, *TINY_OVERRIDES, "data.options.tasks=[colour]"], r"\(train split\): tasks="),
}


@pytest.mark.parametrize("case", sorted(IN_THE_TRAINER))
def test_train_vision_prints_configuration_problems_as_one_line(
    case: str, train_vision: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides, message = IN_THE_TRAINER[case]
    args = [*(o.format(tmp=tmp_path) for o in overrides), f"logdir={tmp_path / 'runs'}"]
    assert train_vision.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not (tmp_path / "runs").exists()  # nothing created


def test_a_completed_run_ends_with_a_table_of_each_tasks_metrics_and_delta_m(
    train_vision: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "reference.json"  # reference values of every metric (as a paper's table gives them)
    reference.write_text(json.dumps({"name": "made-up", "values": dict.fromkeys(CAGRAD_NYUV2_STL.values, 0.5)}))
    args = [PRESET, *TINY_OVERRIDES, f"logdir={tmp_path}", "run_name=mtl", "balancer.name=mgda",
            f"baseline=[{reference}]"]  # fmt: skip
    assert train_vision.main(args) == 0
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "mtl" / "results.json").read_text())
    assert "{" not in out  # a table, no JSON
    assert out.startswith("run: mtl (2 steps, balancer mgda, seed 0)")
    delta = results["delta_m"]
    for key, value in results["selected"].items():
        task, metric = key.split("/", 1)
        if task == "loss":
            task, metric = metric, "loss"
        row = re.search(rf"^\s+{task}\s+{re.escape(metric)}\s+[↑↓]?\s+(\S+)\s+(\S+)(?:\s+(\S+)\s+(\S+))?$", out, re.M)
        assert row is not None, (key, out)
        assert float(row[1]) == pytest.approx(value, abs=5e-5) and float(row[2]) == pytest.approx(
            results["final"][key], abs=5e-5
        )
        if key in delta["relative"]:
            assert float(row[3]) == pytest.approx(delta["baseline_values"][key], abs=5e-5)
            assert float(row[4]) == pytest.approx(100 * delta["relative"][key], abs=5e-3)
        else:
            assert row[3] is None, key  # evaluation losses have no baseline
    summary = f": {delta['metric_weighted']:+.2f} % metric-weighted, {delta['task_weighted']:+.2f} % task-weighted"
    assert f"Δm vs {delta['baseline']}{summary}" in out, out
