"""Checkpoints and state files are read as plain data, never unpickled with code (issue 19).

A payload whose ``__reduce__`` calls :func:`_plant` (which writes a marker file) is planted in every kind of file
the project reads back — an RL checkpoint (through ``resume=true`` and ``scripts/evaluate.py``), a vision
checkpoint, the Meta-World task data inside an env state, the single-task reference's stable-baselines3 model and
replay buffer — and each loader must refuse it with one line naming the file, without the marker appearing.
Checkpoints written by the release before these loaders (``tests/data/legacy_checkpoints``, with numpy RNG tuples)
must still resume to exactly the results of an uninterrupted run.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import shutil
import zipfile
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.checkpoint import load_checkpoint
from agents.config import TrainConfig
from agents.trainer import Trainer
from mtrl.checkpoint_io import CheckpointError, UntrustedCheckpointError, load_envelope, load_torch
from mtrl.config import load_config, update_config
from mtrl.recovery import load_newest_intact
from mtrl.runstart import VISION as VISION_TRAINER
from mtrl.vision import run_state
from mtrl.vision.config import VisionConfig
from mtrl.vision.trainer import VisionTrainer
from tests.data.legacy_checkpoints.generate import TOY, VISION
from tests.helpers import run_script

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "tests" / "data" / "legacy_checkpoints"
TOY_PRESET = str(ROOT / "configs" / "toy_sac.yaml")


def _plant(marker: str) -> None:
    """What the payload runs when it is unpickled: leave a file behind."""
    Path(marker).write_text("unpickled code ran")


class Payload:
    """An object whose unpickling calls :func:`_plant` (a function of an importable module, not a blocked one)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _plant, (str(self.marker),)


def _one_line_naming(message: str, path: Path) -> None:
    assert "\n" not in message.strip(), message
    assert str(path) in message or path.name in message, message


def test_the_payload_runs_under_plain_pickle(tmp_path: Path) -> None:
    """The control: the payload is real, so a missing marker below means the loader refused it."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "marker")))
    assert (tmp_path / "marker").is_file()


def test_every_torch_loader_refuses_a_malicious_file_and_reads_broken_ones_as_corrupt(tmp_path: Path) -> None:
    marker, evil = tmp_path / "marker", tmp_path / "step_000000100.pt"
    torch.save({"step": 100, "agent": {"actor": Payload(marker)}}, evil)
    loaders = {
        "load_torch": lambda p: load_torch(p),
        "RL load_checkpoint": lambda p: load_checkpoint(p),
        "vision load_checkpoint": lambda p: run_state.load_checkpoint(p, {}, torch.device("cpu")),
    }
    for name, load in loaders.items():
        with pytest.raises(UntrustedCheckpointError) as err:
            load(evil)
        _one_line_naming(str(err.value), evil)
        assert "_plant" in str(err.value), name  # names what it refused
        assert not marker.exists(), f"{name} ran the payload"
    good = io.BytesIO()
    torch.save({"step": 1, "w": torch.ones(3)}, good)
    for size in (0, 10, len(good.getvalue()) // 2):  # empty, cut in the header, cut mid-file
        broken = tmp_path / f"cut_{size}.pt"
        broken.write_bytes(good.getvalue()[:size])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as cut:
            load_checkpoint(broken)
        assert not isinstance(cut.value, UntrustedCheckpointError)
        _one_line_naming(str(cut.value), broken)


def test_numpy_arrays_written_under_numpy_1_module_names_load(tmp_path: Path) -> None:
    """numpy 1 pickles its arrays as ``numpy.core.multiarray._reconstruct`` (numpy 2: ``numpy._core``); a
    checkpoint written with numpy 1 names them so (torch.save's protocol 2 spells each global out as text)."""
    written, renamed = tmp_path / "numpy2.pt", tmp_path / "numpy1.pt"
    torch.save({"key": np.arange(5, dtype=np.uint32), "gauss": np.float64(2.5)}, written)
    with zipfile.ZipFile(written) as old, zipfile.ZipFile(renamed, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            new.writestr(item, data)
    loaded = load_torch(renamed)
    np.testing.assert_array_equal(loaded["key"], np.arange(5, dtype=np.uint32))
    assert loaded["key"].dtype == np.uint32 and loaded["gauss"] == 2.5


def test_queues_holding_items_load_as_lists(tmp_path: Path) -> None:
    """gymnasium's episode-statistics queues in an env state hold the last episodes' returns once an episode
    has ended; torch's weights-only reader fills only lists, so a ``deque`` with items comes back as the list
    of its items (empty or full, in files of this release and the previous one alike)."""
    path = tmp_path / "queues.pt"
    torch.save({"full": deque([1.5, -2.0], maxlen=100), "empty": deque(maxlen=100), "plain": deque([3])}, path)
    assert load_torch(path) == {"full": [1.5, -2.0], "empty": [], "plain": [3]}


def test_an_untrusted_newest_checkpoint_stops_the_resume_instead_of_falling_back(tmp_path: Path) -> None:
    """A truncated newest checkpoint is damage (the older one is used); one that asks for more than plain data
    is tampering: the resume stops with its one line and the older file is not read."""
    marker, newest, older = tmp_path / "marker", tmp_path / "step_2.pt", tmp_path / "step_1.pt"
    torch.save({"step": 2, "agent": Payload(marker)}, newest)
    torch.save({"step": 1}, older)
    read: list[Path] = []

    def load(path: Path) -> Any:
        read.append(path)
        return load_torch(path)

    with pytest.raises(UntrustedCheckpointError) as err:
        load_newest_intact([newest, older], load)
    _one_line_naming(str(err.value), newest)
    assert read == [newest] and not marker.exists()
    newest.write_bytes(newest.read_bytes()[:100])
    path, state, notes = load_newest_intact([newest, older], load_torch)
    assert path == older and state == {"step": 1} and newest.name in notes[0]


def _legacy_run(tmp_path: Path, name: str) -> Path:
    """A copy of a legacy fixture run directory under ``tmp_path`` (the fixtures stay read-only)."""
    run_dir = tmp_path / name
    shutil.copytree(LEGACY / name, run_dir)
    return run_dir


def test_rl_resume_and_evaluate_refuse_a_malicious_checkpoint(tmp_path: Path) -> None:
    run_dir, marker = _legacy_run(tmp_path, "toy"), tmp_path / "marker"
    for step_file in (run_dir / "checkpoints").glob("step_*.pt"):  # no intact one to fall back to
        torch.save({"step": 100, "agent": Payload(marker)}, step_file)
    resume = run_script("train", TOY_PRESET, f"logdir={tmp_path}", "run_name=toy", *TOY, "resume=true")
    evaluate = run_script("evaluate", str(run_dir))
    for result in (resume, evaluate):
        assert result.returncode == 2, result.stderr[-2000:]
        _one_line_naming(result.stderr, run_dir / "checkpoints" / "step_000000130.pt")
    assert not marker.exists()


def test_vision_resume_refuses_a_malicious_checkpoint(tmp_path: Path) -> None:
    run_dir, marker = _legacy_run(tmp_path, "vision"), tmp_path / "marker"
    torch.save({"step": 5, "model": Payload(marker)}, run_dir / "checkpoint.pt")
    preset = str(run_dir / "config.yaml")
    result = run_script("train_vision", preset, f"logdir={tmp_path}", "run_name=vision", "resume=true")
    assert result.returncode == 2, result.stderr[-2000:]
    _one_line_naming(result.stderr, run_dir / "checkpoint.pt")
    assert not marker.exists()


# --- Meta-World task data inside an env state --------------------------------------------------------------
def _reach_envs() -> Any:
    from envs.metaworld import make_mt_envs

    return make_mt_envs("MT1", protocol="metaworld-v3", seed=3, tasks=["reach-v3"], max_episode_steps=30)


def _steps(envs: Any, actions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for action in actions:
        obs, reward, *_ = envs.step(action[None])
        out.append((np.array(obs), np.array(reward)))
    return out


@pytest.fixture(scope="module")
def reach_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Any], np.ndarray]:
    """A MT1 reach env state taken mid-episode, the raw Meta-World checkpoint at that point (with the pickled
    task data, the format of earlier releases) and what the env does next (across an episode boundary)."""
    from envs.checkpoint import env_state

    envs = _reach_envs()
    envs.last_obs, _ = envs.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, size=(45, 4))
    _steps(envs, actions[:12])
    state, raw = env_state(envs), list(envs.call("get_checkpoint"))
    after = _steps(envs, actions[12:])
    envs.close()
    return state, raw, np.array([np.concatenate([o.ravel(), r.ravel()]) for o, r in after])


def _resumed(tmp_path: Path, state: dict[str, Any]) -> np.ndarray:
    """Save ``state`` as a checkpoint, read it back with the RL loader and restore it into fresh envs."""
    from envs.checkpoint import load_env_state

    path = tmp_path / "step_000000012.pt"
    torch.save({"step": 12, "env_state": state}, path)
    envs = _reach_envs()
    try:
        load_env_state(envs, load_checkpoint(path)["env_state"])
        actions = np.random.default_rng(0).uniform(-1, 1, size=(45, 4))
        after = _steps(envs, actions[12:])
    finally:
        envs.close()
    return np.array([np.concatenate([o.ravel(), r.ravel()]) for o, r in after])


def test_env_state_holds_no_pickled_task_data_and_continues_exactly(
    reach_state: tuple[dict[str, Any], list[Any], np.ndarray], tmp_path: Path
) -> None:
    state, _, expected = reach_state
    tasks = state["metaworld"][0][1]["tasks"]
    assert len(tasks) == 50 and all(set(task) == {"env_name", "sha256"} for task in tasks)
    np.testing.assert_array_equal(_resumed(tmp_path, state), expected)


def test_env_state_of_earlier_releases_is_checked_by_hash_and_continues_exactly(
    reach_state: tuple[dict[str, Any], list[Any], np.ndarray], tmp_path: Path
) -> None:
    state, raw, expected = reach_state
    legacy = {**state, "metaworld": raw}  # Meta-World's own checkpoint: each task's data as base64 pickles
    assert "data" in raw[0][1]["tasks"][0]
    np.testing.assert_array_equal(_resumed(tmp_path, legacy), expected)


def test_a_tampered_metaworld_task_is_refused_without_unpickling(
    reach_state: tuple[dict[str, Any], list[Any], np.ndarray], tmp_path: Path
) -> None:
    state, raw, _ = reach_state
    marker = tmp_path / "marker"
    evil_task = {"env_name": "reach-v3", "data": base64.b64encode(pickle.dumps(Payload(marker))).decode("ascii")}
    for tasks in (state["metaworld"], raw):  # the new format and that of earlier releases
        env_id, ckpt = tasks[0]
        tampered = {**state, "metaworld": [(env_id, {**ckpt, "tasks": [evil_task, *ckpt["tasks"][1:]]})]}
        with pytest.raises(UntrustedCheckpointError, match="Meta-World task of 'reach-v3'") as err:
            _resumed(tmp_path, tampered)
        _one_line_naming(str(err.value), tmp_path / "step_000000012.pt")
        assert not marker.exists()


# --- checkpoints of the release before these loaders -------------------------------------------------------
def _toy_trainer(logdir: Path, name: str, *extra: str) -> Trainer:
    return Trainer(load_config(TrainConfig, TOY_PRESET, [f"logdir={logdir}", f"run_name={name}", *TOY, *extra]))


def _results(run_dir: Path, drop: tuple[str, ...] = ("run_dir",)) -> dict[str, Any]:
    results = json.loads((run_dir / "results.json").read_text())
    return {key: value for key, value in results.items() if key not in drop}


def _assert_same_tensors(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)


def test_legacy_toy_checkpoint_resumes_to_the_uninterrupted_results(tmp_path: Path) -> None:
    """The toy fixture stopped at step 130 of 200 by the earlier release: resumed now, it ends with the results
    and parameters of an uninterrupted run with this code, which are those the earlier release recorded."""
    _legacy_run(tmp_path, "toy")
    resumed = _toy_trainer(tmp_path, "toy", "resume=true")
    assert resumed.step == 130
    resumed.train()
    _toy_trainer(tmp_path, "full").train()
    assert _results(tmp_path / "toy") == _results(tmp_path / "full")
    assert _results(tmp_path / "full") == json.loads((LEGACY / "toy_uninterrupted.json").read_text())
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "toy")
    assert a["step"] == b["step"] == 200
    for part in ("agent", "replay"):
        _assert_same_tensors(a[part], b[part], part)


def test_legacy_vision_checkpoint_resumes_to_the_uninterrupted_results(tmp_path: Path) -> None:
    _legacy_run(tmp_path, "vision")
    cfg = update_config(update_config(VisionConfig(), VISION), {"logdir": str(tmp_path)})
    resumed = VisionTrainer(update_config(cfg, {"run_name": "vision", "resume": True}))
    assert resumed.step == 5
    resumed.run()
    VisionTrainer(update_config(cfg, {"run_name": "full"})).run()
    drop = ("run", "run_dir", "config", "train_time_s")
    resumed_results, full_results = _results(tmp_path / "vision", drop), _results(tmp_path / "full", drop)
    assert resumed_results == full_results
    recorded = json.loads((LEGACY / "vision_uninterrupted.json").read_text())
    assert {k: v for k, v in recorded.items() if k not in drop} == full_results
    a, b = (load_envelope(tmp_path / run / "checkpoint.pt", VISION_TRAINER) for run in ("full", "vision"))
    for part in ("model", "optimizer", "balancer", "rng"):
        _assert_same_tensors(a[part], b[part], part)


# --- the single-task reference's stable-baselines3 files ---------------------------------------------------
@pytest.fixture(scope="module")
def sb3_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """A stable-baselines3 SAC on MT1 reach after 30 steps (10 updates): its ``model.zip`` and ``replay.pkl``
    as ``agents.stl`` writes them, and the settings it was built with."""
    from agents.config import SACConfig
    from agents.sb3 import make_sb3_sac, make_task_env, silence_logger

    folder = tmp_path_factory.mktemp("sb3")
    sac = SACConfig(hidden_sizes=(16, 16), warmup_steps=20, batch_per_task=8, buffer_capacity=200)
    model = make_sb3_sac(make_task_env("reach-v3", "mtrl-legacy", 0), sac, seed=0)
    silence_logger(model)
    model.learn(30)
    model.save(folder / "model.zip")
    model.save_replay_buffer(folder / "replay.pkl")
    return folder / "model.zip", folder / "replay.pkl", sac


def _continued(model: Any) -> Any:
    from agents.sb3 import restart_episode, silence_logger

    restart_episode(model)
    silence_logger(model)
    model.learn(10, reset_num_timesteps=False)
    return model


def test_sb3_files_load_without_unpickling_and_continue_like_sb3s_own_load(
    sb3_files: tuple[Path, Path, Any],
) -> None:
    from stable_baselines3 import SAC

    from agents.sb3 import load_sb3_replay, load_sb3_sac, make_task_env

    model_zip, replay, sac = sb3_files
    # Each continues right after its load: a load seeds the global RNGs (SB3's set_random_seed), training draws them.
    ours = load_sb3_sac(model_zip, make_task_env("reach-v3", "mtrl-legacy", 0), sac, seed=0, buffer_size=200)
    load_sb3_replay(ours, replay)
    _continued(ours)
    theirs = SAC.load(model_zip, env=make_task_env("reach-v3", "mtrl-legacy", 0), device="cpu")  # trusted: ours
    theirs.load_replay_buffer(replay)
    _continued(theirs)
    assert ours.num_timesteps == theirs.num_timesteps == 40 and ours._n_updates == theirs._n_updates == 20
    _assert_same_tensors(ours.policy.state_dict(), theirs.policy.state_dict(), "policy")
    assert torch.equal(ours.log_ent_coef, theirs.log_ent_coef)
    for name in ("observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(ours.replay_buffer, name), getattr(theirs.replay_buffer, name))


def _rewrite_zip(source: Path, dest: Path, member: str, content: bytes) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(dest, "w") as new:
        for item in old.infolist():
            new.writestr(item, content if item.filename == member else old.read(item.filename))


def test_malicious_sb3_files_are_refused_or_never_unpickled(sb3_files: tuple[Path, Path, Any], tmp_path: Path) -> None:
    from agents.sb3 import load_sb3_replay, load_sb3_sac, make_task_env

    model_zip, replay, sac = sb3_files
    marker = tmp_path / "marker"
    planted = {":type:": "x", ":serialized:": base64.b64encode(pickle.dumps(Payload(marker))).decode("ascii")}
    data = json.loads(zipfile.ZipFile(model_zip).read("data"))
    env = make_task_env("reach-v3", "mtrl-legacy", 0)
    # A pickled entry SB3 knows (the schedule) is rebuilt from the settings, never unpickled: it loads.
    _rewrite_zip(model_zip, tmp_path / "known.zip", "data", json.dumps({**data, "lr_schedule": planted}).encode())
    assert load_sb3_sac(tmp_path / "known.zip", env, sac, seed=0, buffer_size=200).num_timesteps == 30
    # One it does not know, a policy member that is not plain tensors, a pickled replay buffer: refused.
    _rewrite_zip(model_zip, tmp_path / "unknown.zip", "data", json.dumps({**data, "extra": planted}).encode())
    evil_pth = io.BytesIO()
    torch.save({"actor": Payload(marker)}, evil_pth)
    _rewrite_zip(model_zip, tmp_path / "policy.zip", "policy.pth", evil_pth.getvalue())
    for bad in (tmp_path / "unknown.zip", tmp_path / "policy.zip"):
        with pytest.raises(UntrustedCheckpointError) as err:
            load_sb3_sac(bad, env, sac, seed=0, buffer_size=200)
        _one_line_naming(str(err.value), bad)
    model = load_sb3_sac(model_zip, env, sac, seed=0, buffer_size=200)
    (tmp_path / "replay.pkl").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UntrustedCheckpointError) as err:
        load_sb3_replay(model, tmp_path / "replay.pkl")
    _one_line_naming(str(err.value), tmp_path / "replay.pkl")
    assert not marker.exists()
    load_sb3_replay(model, replay)  # the genuine one loads
    assert model.replay_buffer.pos == 30


@pytest.mark.slow  # ~40 s: an SB3 run, then the script's start-up (the loaders themselves are tested above)
def test_stl_resume_refuses_a_malicious_replay_buffer(tmp_path: Path) -> None:
    """scripts/train_stl.py --resume of a task stopped at step 25 of 30 whose replay.pkl was replaced: exit 2,
    one line naming the file, nothing run."""
    from agents.stl import STLRun
    from tests.helpers import load_script

    argv = ["--tasks", "reach-v3", "--protocol", "mtrl-legacy", "--steps", "30", "--warmup", "20", "--eval-every",
            "0", "--eval-episodes", "1", "--buffer", "100", "--device", "cpu", "--no-progress", "--logdir",
            str(tmp_path), "--run-name", "stl"]  # fmt: skip
    run = STLRun(load_script("train_stl").parse_args(argv))
    original = run._after_env_step

    def stop_at_25(task: str, step: int) -> bool:
        if step == 25:
            run.request_stop()
        return original(task, step)

    run._after_env_step = stop_at_25  # type: ignore[method-assign]
    assert run.train()["steps_per_task"] == {"reach-v3": 25}
    replay, marker = tmp_path / "stl" / "checkpoints" / "reach-v3" / "replay.pkl", tmp_path / "marker"
    replay.write_bytes(pickle.dumps(Payload(marker)))
    result = run_script("train_stl", *argv, "--resume")
    assert result.returncode == 2, result.stderr[-2000:]
    _one_line_naming(result.stderr, replay)
    assert "refusing to load" in result.stderr and not marker.exists()
