"""Bad input gives one line naming the file, key or index, exit status 2, at start-up: YAML files and overrides
(syntax errors, duplicate keys, empty files) in every training script, vision data sets checked in full (with
their check cache), sweeps validated before any job starts, aggregate.py on crashed runs and truncated
results.json, evaluate.py's out= location."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mtrl.config import ConfigError, load_config, parse_overrides
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "configs" / "toy_sac.yaml")
VISION = str(ROOT / "configs" / "vision" / "synthetic.yaml")


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The captured stderr, asserted to be one line."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


@pytest.fixture(scope="module")
def train() -> ModuleType:
    return load_script("train")


@pytest.fixture(scope="module")
def train_vision() -> ModuleType:
    return load_script("train_vision")


@pytest.fixture(scope="module")
def train_stl() -> ModuleType:
    return load_script("train_stl")


# --- YAML files and overrides -------------------------------------------------------------------------------
BAD_FILES = {
    "syntax": ("sac:\n  lr: [0.1\nseed: 1\n", r"is not valid YAML: expected ',' or '\]'.* at line \d+, column \d+"),
    "duplicate": ("seed: 1\nsac:\n  lr: 0.1\n  lr: 0.2\n", r"key 'lr' is set twice \(lines 3 and 4\): keep one"),
    "empty": ("# only a comment\n", r"is empty: name a preset of configs/.*or write \{\} in it"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
@pytest.mark.parametrize("script", ["train", "train_vision"])
def test_a_bad_config_file_is_one_line_naming_it(
    case: str, script: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = BAD_FILES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    before = _tree(tmp_path)
    code = request.getfixturevalue(script).main([str(path), f"logdir={tmp_path / 'runs'}"])
    assert code == 2
    line = _one_line(capsys)
    assert str(path) in line
    assert re.search(message, line), line
    assert _tree(tmp_path) == before  # nothing created


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_preset_of_train_stl_is_one_line_naming_it(
    case: str, train_stl: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_FILES[case][0])
    with pytest.raises(SystemExit) as exc:
        train_stl.main(["--preset", str(path), "--logdir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    line = _one_line(capsys)
    assert line.startswith("train_stl.py: error: argument --preset:") and str(path) in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sac.hidden_sizes=[64,"], r"bad override 'sac.hidden_sizes=\[64,': the value is not valid YAML"),
        (["seed=1", "seed=2"], r"overrides 'seed=1' and 'seed=2' set 'seed' twice: keep one"),
        (["sac.lr=0.1", "sac={lr: 0.2}"], r"overrides 'sac.lr=0.1' and 'sac=\{lr: 0.2\}' set both 'sac.lr' and 'sac'"),
        (["sac={lr: 0.1, lr: 0.2}"], r"key 'lr' is set twice"),
    ],
)
def test_bad_overrides_are_one_line_naming_them(
    overrides: list[str], message: str, train: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_overrides(overrides)
    assert train.main([TOY, f"logdir={tmp_path}", *overrides]) == 2
    assert re.search(message, _one_line(capsys))
    assert _tree(tmp_path) == []


@dataclass(frozen=True)
class _Sections:
    a: dict[str, Any] = field(default_factory=dict)
    b: dict[str, Any] = field(default_factory=dict)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    """``<<: *anchor`` then an explicit key is YAML's way to override a merged value, not a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text("a: &base {lr: 0.1, gamma: 0.9}\nb:\n  <<: *base\n  lr: 0.2\n")
    assert load_config(_Sections, path).b == {"lr": 0.2, "gamma": 0.9}


# --- sweeps: every run's configuration is checked before any run starts ---------------------------------------
@pytest.fixture(scope="module")
def sweep() -> ModuleType:
    return load_script("sweep")


@pytest.mark.parametrize(
    ("script", "preset", "args", "message"),
    [
        ("train.py", TOY, ["--balancers", "ew", "nope"], r"run nope/seed0: bad value 'nope' for 'balancer'"),
        ("train.py", TOY, ["--balancers", "ew", "--vary", "sac.nope=1,2"], r"run ew/nope=1/seed0: unknown config key"),
        ("train.py", TOY, ["--balancers", "ew", "seed=4"], r"overrides 'seed=0' and 'seed=4' set 'seed' twice"),
        (
            "train_vision.py",
            VISION,
            ["--balancers", "ew", "nope"],
            r"run nope/seed0: bad value 'nope' for 'balancer.name'",
        ),
        (
            "train_vision.py",
            VISION,
            ["--balancers", "pcgrad", "balancer.hparams={x: 1}"],
            r"run pcgrad/seed0: unknown balancer.hparams \['x'\] for balancer 'pcgrad'",
        ),
    ],
)
def test_a_sweep_with_a_bad_run_launches_nothing(
    script: str,
    preset: str,
    args: list[str],
    message: str,
    sweep: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "sweep"
    argv = [str(ROOT / "scripts" / script), preset, "--seeds", "0", "1", "--root", str(root), *args]
    assert sweep.main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith("sweep.py: config error: run ") and re.search(message, line), line
    assert not root.exists()  # no run directory, no job log: nothing launched


def test_overrides_may_follow_the_seeds_list(
    sweep: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--seeds 0 total_steps=100`` is seed 0 and an override, not an invalid seed."""
    argv = ["--balancers", "ew", "pcgrad", "total_steps=100", "--seeds", "0", "1", "eval_every=50", "--root", "r"]
    assert sweep.split_list_overrides(argv) == (
        ["--balancers", "ew", "pcgrad", "--seeds", "0", "1", "--root", "r"],
        ["total_steps=100", "eval_every=50"],
    )
    root = tmp_path / "sweep"
    argv = [str(ROOT / "scripts" / "train.py"), TOY, "--balancers", "ew", "--root", str(root), "--seeds", "0"]
    assert sweep.main([*argv, "total_steps=ten"]) == 2  # reaches the runs' configuration, named there
    assert "run ew/seed0: bad value 'ten' for 'total_steps'" in _one_line(capsys)
    assert not root.exists()


# --- aggregate.py: crashed runs and unreadable files are skipped, named, with the reason ----------------------
@pytest.fixture(scope="module")
def aggregate() -> ModuleType:
    return load_script("aggregate")


def _broken_runs(root: Path) -> dict[str, Path]:
    """Next to the good runs: a crashed run (config.yaml, metrics.jsonl, no results.json), a run whose
    results.json was cut mid-write, and one whose config.yaml was."""
    crashed, truncated, bad_cfg = root / "ew" / "seed7", root / "ew" / "seed8", root / "ew" / "seed9"
    for run in (crashed, truncated, bad_cfg):
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("balancer: ew\nseed: 7\n")
    (crashed / "metrics.jsonl").write_text('{"step": 10, "eval/success_mean": 0.1}\n')
    (truncated / "results.json").write_text('{"summary": {"num_evals": 3, "reported_')
    (bad_cfg / "config.yaml").write_text("balancer: [ew\n")
    (bad_cfg / "results.json").write_text("{}")
    return {"crashed": crashed, "truncated": truncated / "results.json", "bad_cfg": bad_cfg / "config.yaml"}


def test_aggregate_report_lists_crashed_and_truncated_runs_as_skipped(
    aggregate: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rliable")
    from tests.test_sweep_report import _rl_run

    for seed in (0, 1):
        _rl_run(tmp_path, "ew", seed, [[0.5, 0.5, 0.2, 0.1]])
    bad = _broken_runs(tmp_path)
    assert aggregate.main([str(tmp_path), "--reps", "50"]) == 0
    report = capsys.readouterr().out
    assert "| ew | 2 |" in report and "Skipped 3 run(s):" in report
    assert f"- {bad['crashed']}: no results.json (crashed, or still running)" in report
    assert f"- {bad['truncated']}: unreadable (Unterminated string" in report
    assert f"- {bad['bad_cfg']}: unreadable (expected ',' or ']'" in report


def test_aggregate_metrics_skip_bad_runs_and_fail_in_one_line_when_none_is_left(
    aggregate: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _broken_runs(tmp_path)
    assert aggregate.main([str(tmp_path)]) == 1  # nothing valid: one line naming a skipped run and why
    line = _one_line(capsys)
    assert line.startswith(f"aggregate.py: no finished runs (config.yaml + results.json) under {tmp_path} (3 skipped")
    good = tmp_path / "ew" / "seed0"
    good.mkdir()
    (good / "config.yaml").write_text("balancer: ew\nseed: 0\n")
    (good / "results.json").write_text('{"steps": 40, "final": 0.5}')
    assert aggregate.main([str(tmp_path), "--metrics", "final"]) == 0
    out, err = capsys.readouterr()
    assert "| ew | 0.500 ± 0.000 (n=1) |" in out
    with pytest.raises(json.JSONDecodeError) as decode:
        json.loads(bad["truncated"].read_text())
    json_error = str(decode.value)
    assert err.splitlines() == [
        f"skipped {bad['crashed']}: no results.json (crashed, or still running); resume it to include it",
        f"skipped {bad['truncated']}: unreadable ({json_error}; a truncated write?); run or resume it again",
        f"skipped {bad['bad_cfg']}: unreadable (expected ',' or ']', but got '<stream end>' at line 2, column 1; "
        "a truncated write?); run or resume it again",
    ]


# --- evaluate.py: the out= location is checked before anything is evaluated --------------------------------
LEGACY_TOY = ROOT / "tests" / "data" / "legacy_checkpoints" / "toy"


def test_evaluate_refuses_an_out_path_below_a_file_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluate = load_script("evaluate")
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file, not a folder")
    for out, message in (
        (blocker / "sub" / "x.json", f"cannot write out='{blocker / 'sub' / 'x.json'}': '{blocker}' is a file"),
        (tmp_path, f"out='{tmp_path}' is not a file path"),
    ):
        # The target does not exist either: the out= check comes first, before any checkpoint is looked up.
        assert evaluate.main([str(tmp_path / "no_such_run"), f"out={out}"]) == 2
        assert _one_line(capsys).startswith(f"error: {message}")
    assert sorted(tmp_path.iterdir()) == [blocker]


def test_evaluate_creates_the_missing_folders_of_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agents.evaluate import check_out

    evaluate = load_script("evaluate")
    out = tmp_path / "missing" / "dir" / "x.json"
    assert check_out(str(out)) == out and not (tmp_path / "missing").exists()  # nothing created yet
    assert evaluate.main([str(LEGACY_TOY), f"out={out}", "episodes=1"]) == 0
    assert json.loads(out.read_text())["step"] == 130
    assert f"wrote {out}" in capsys.readouterr().out


# --- vision data sets: every sample checked at start-up, the check recorded -----------------------------------
def _nyuv2(root: Path, n: int = 5) -> None:
    """A small NYUv2 root in the MTAN layout, its files dated an hour back (old enough for the check record)."""

    from tests.vision.test_data import _write_layout

    for split in ("train", "val"):
        _write_layout(root, split, n)
    _age(root)


def _age(root: Path) -> None:
    import os
    import time

    for path in root.rglob("*.npy"):
        os.utime(path, (time.time() - 3600, time.time() - 3600))


@pytest.mark.parametrize("case", ["shape", "label_255", "truncated"])
def test_a_bad_vision_sample_past_index_0_stops_the_start_in_one_line(
    case: str, train_vision: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    root = tmp_path / "nyuv2"
    _nyuv2(root)
    if case == "shape":  # a wider image at index 3: torch.stack would fail in the middle of an epoch
        bad = root / "train" / "image" / "3.npy"
        np.save(bad, np.zeros((12, 17, 3), np.float32))
        message = f"expected {bad} of shape (12, 16, 3) like {root / 'train' / 'image' / '0.npy'}"
    elif case == "label_255":  # the 255-for-ignore convention at index 2 (this project's ignore label is -1)
        bad = root / "train" / "label" / "2.npy"
        label = np.load(bad)
        label[3, 4] = 255
        np.save(bad, label)
        message = f"{bad} holds labels [255] outside [-1, 12]"
    else:  # a depth map cut in mid-copy at index 4
        bad = root / "train" / "depth" / "4.npy"
        bad.write_bytes(bad.read_bytes()[:300])
        message = f"cannot read {bad} (mmap length is greater than file size); re-create it"
    runs = tmp_path / "runs"
    argv = [str(ROOT / "configs" / "vision" / "nyuv2.yaml"), f"data.root={root}", f"logdir={runs}", "device=cpu"]
    assert train_vision.main([*argv, "data.workers=0"]) == 2  # the data check comes before any model is built
    line = _one_line(capsys)
    assert line.startswith("config error: ") and message in line, line
    assert not runs.exists()  # no run directory left without a checkpoint


def test_the_full_vision_check_is_recorded_and_not_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first start reads every file; a second start of the same files reads none (the record beside the
    data says they passed); a changed file is checked again; a folder where the record cannot be written
    keeps it in the user's cache folder."""
    import numpy as np

    from mtrl.vision.data import NpyLayoutDataset, NYUv2
    from mtrl.vision.data.check_cache import CACHE_NAME

    root = tmp_path / "nyuv2"
    _nyuv2(root, n=6)
    reads: list[str] = []
    real_load = NpyLayoutDataset._load

    def counting_load(self: NpyLayoutDataset, folder: str, index: int, mmap: bool = False) -> np.ndarray:
        reads.append(f"{folder}/{index}")
        return real_load(self, folder, index, mmap)

    monkeypatch.setattr(NpyLayoutDataset, "_load", counting_load)
    NYUv2(root, "train")
    assert len(reads) == 6 * 4  # image, label, depth, normal of every sample
    assert (root / "train" / CACHE_NAME).is_file()
    reads.clear()
    assert len(NYUv2(root, "train")) == 6 and reads == []  # the record: nothing read
    NYUv2(root, "train", tasks=NYUv2.default_tasks[:1])  # another check (seg only): not covered by the record
    assert len(reads) == 6 * 2
    reads.clear()
    label = np.load(root / "train" / "label" / "5.npy")
    label[0, 0] = 13
    np.save(root / "train" / "label" / "5.npy", label)  # a changed file (new time): checked again, and caught
    with pytest.raises(ConfigError, match=r"label/5\.npy holds labels \[13\]"):
        NYUv2(root, "train")
    # A data folder where the record cannot be written: the record goes to the user's cache folder.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (root / "val" / CACHE_NAME).mkdir()
    reads.clear()
    NYUv2(root, "val")
    assert len(reads) == 6 * 4 and len(list((tmp_path / "cache" / "mtrl" / "data_checks").iterdir())) == 1
    reads.clear()
    NYUv2(root, "val")
    assert reads == []


def test_files_written_just_now_are_not_vouched_for(tmp_path: Path) -> None:
    """A rewrite within the file system's timestamp granularity could keep size and time: young files get no
    record, so the next start checks them again."""
    from mtrl.vision.data import NYUv2
    from mtrl.vision.data.check_cache import CACHE_NAME
    from tests.vision.test_data import _write_layout

    _write_layout(tmp_path, "train", 2)
    NYUv2(tmp_path, "train")
    assert not (tmp_path / "train" / CACHE_NAME).exists()
    _age(tmp_path)
    NYUv2(tmp_path, "train")
    assert (tmp_path / "train" / CACHE_NAME).is_file()


def test_a_truncated_baseline_file_is_one_line_naming_it(
    train_vision: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "stl_seg" / "results.json"
    truncated.parent.mkdir()
    truncated.write_text('{"selected": {"seg/miou": 0.')
    runs = tmp_path / "runs"
    argv = [VISION, f"baseline=[{truncated}]", f"logdir={runs}", "device=cpu", "data.workers=0"]
    assert train_vision.main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith(f"config error: baseline '{truncated}' cannot be read (") and "truncated" in line, line
    assert not runs.exists()


def test_a_scripts_own_defaults_give_way_to_the_users_overrides() -> None:
    """A script passing defaults with a user's overrides (scripts/vision_table.py) drops the defaults the user
    sets, so that the training script's refusal of a key given twice does not hit them."""
    from mtrl.config import with_defaults
    from mtrl.vision.table import table_job

    defaults = ["threads=1", "device=cpu", "sac.lr=0.1"]
    assert with_defaults(defaults, ["device=cuda", "sac={lr: 0.2}"]) == ["threads=1", "device=cuda", "sac={lr: 0.2}"]
    assert parse_overrides(with_defaults(defaults, ["device=cuda"])) == {
        "threads": 1,
        "device": "cuda",
        "sac": {"lr": 0.1},
    }
    cmd = list(table_job(VISION, Path("runs"), "ew_s0", 0, ["device=cuda"]).argv())
    assert "device=cuda" in cmd and "device=cpu" not in cmd and "threads=1" in cmd


def test_torn_run_files_read_by_the_curves_are_named(
    aggregate: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtrl.analysis import run_history

    run = tmp_path / "ew" / "seed0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("balancer: ew\nseed: 0\n")
    (run / "results.json").write_text('{"evals": [{"step": 10, "success": {"a": 0.')
    with pytest.raises(ValueError, match=rf"{re.escape(str(run / 'results.json'))}: unreadable \(Expecting "):
        run_history(run)
    (run / "results.json").write_text('{"final": 0.5}')
    (run / "metrics.jsonl").write_text('{"step": 10, "eval/success_mean": 0.1}\n{"step": 20, "eval/succ')
    curve = ["--metrics", "final", "--curve", "eval/success_mean", "--plot", str(tmp_path / "c.png")]
    assert aggregate.main([str(tmp_path), *curve]) == 1
    assert _one_line(capsys).startswith(f"aggregate.py: {run / 'metrics.jsonl'}: line 2 is not JSON (")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "1", "--steps", "5", "--seed=2"], "--seed given twice: keep one"),
        (["--progress", "--no-progress"], "--progress and --no-progress both given: keep one"),
    ],
)
def test_a_train_stl_flag_given_twice_is_one_line(
    argv: list[str], message: str, train_stl: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        train_stl.main([*argv, "--logdir", str(tmp_path / "runs")])
    assert exc.value.code == 2
    assert _one_line(capsys) == f"train_stl.py: error: {message}"
    assert not (tmp_path / "runs").exists()
