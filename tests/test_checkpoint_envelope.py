"""The run skeleton's checkpoint plumbing, once for the three trainers: the RNG state (:mod:`mtrl.rng`), the
checkpoint envelope and its loader (:func:`mtrl.checkpoint_io.save_envelope` / ``load_envelope``) and the
latest-checkpoint lookup (:func:`mtrl.recovery.checkpoint_candidates`). Real files throughout: every checkpoint
is written to disk and read back; the checkpoints of earlier releases are the fixtures of
``tests/data/legacy_checkpoints`` (their bit-for-bit resumes are ``tests/test_trusted_loading.py``'s).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents import checkpoint as rl_checkpoint
from mtrl.checkpoint_io import (
    ENVELOPE_FORMAT,
    CheckpointError,
    ForeignCheckpointError,
    UntrustedCheckpointError,
    load_envelope,
    load_torch,
    save_envelope,
)
from mtrl.recovery import checkpoint_candidates, latest_checkpoint, load_newest_intact
from mtrl.rng import capture_rng, restore_rng
from mtrl.runstart import RL, STL, STL_FLAGS, VISION
from mtrl.vision import run_state

LEGACY = Path(__file__).resolve().parent / "data" / "legacy_checkpoints"
LEGACY_RL = LEGACY / "toy" / "checkpoints" / "step_000000130.pt"
LEGACY_VISION = LEGACY / "vision" / "checkpoint.pt"


def _draws(np_gen: np.random.Generator, torch_gen: torch.Generator) -> list[Any]:
    """One draw from every source a checkpoint restores."""
    return [
        random.random(),
        np.random.rand(3).tolist(),
        torch.rand(3).tolist(),
        np_gen.random(3).tolist(),
        torch.rand(3, generator=torch_gen).tolist(),
    ]


def _one_line_naming(message: str, path: Path) -> None:
    assert "\n" not in message.strip(), message
    assert str(path) in message, message


# --- the RNG state ----------------------------------------------------------------------------------------
def test_restored_rngs_draw_what_they_drew_after_the_capture(tmp_path: Path) -> None:
    """Capture, draw, restore from a checkpoint file, draw again: the same numbers from every source."""
    np_gen, torch_gen = np.random.default_rng(7), torch.Generator().manual_seed(7)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    _draws(np_gen, torch_gen)  # states away from their seeds
    save_envelope(tmp_path / "rng.pt", RL, {"rng": capture_rng({"a": np_gen}, {"b": torch_gen})}, step=0)
    after_capture = [_draws(np_gen, torch_gen) for _ in range(3)]
    fresh_np, fresh_torch = np.random.default_rng(99), torch.Generator().manual_seed(99)
    restore_rng(load_envelope(tmp_path / "rng.pt", RL)["rng"], {"a": fresh_np}, {"b": fresh_torch})
    assert [_draws(fresh_np, fresh_torch) for _ in range(3)] == after_capture


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rngs_restore_from_a_checkpoint_read_onto_the_gpu(tmp_path: Path) -> None:
    """A checkpoint read with ``map_location="cuda"`` holds its RNG tensors on the GPU; the CUDA generators and
    a CUDA ``torch.Generator`` come back too."""
    cuda_gen = torch.Generator(device="cuda").manual_seed(5)
    save_envelope(tmp_path / "rng.pt", RL, {"rng": capture_rng(torch_generators={"g": cuda_gen})}, step=0)

    def draws() -> list[list[float]]:
        return [torch.rand(3, device="cuda").tolist(), torch.rand(3, generator=cuda_gen, device="cuda").tolist()]

    expected = draws()
    restore_rng(load_envelope(tmp_path / "rng.pt", RL, map_location="cuda")["rng"], torch_generators={"g": cuda_gen})
    assert draws() == expected


def test_rng_state_is_plain_data_with_one_entry_per_named_generator() -> None:
    state = capture_rng({"x": np.random.default_rng(0), "y": np.random.default_rng(1)})
    assert set(state) == {"python", "numpy", "torch", "cuda", "numpy_generators", "torch_generators"}
    assert set(state["numpy_generators"]) == {"x", "y"} and state["torch_generators"] == {}
    assert isinstance(state["numpy"]["state"]["key"], list)  # no numpy array: nothing to allow on loading


def test_a_generator_missing_from_the_saved_state_is_named() -> None:
    state = capture_rng({"np_rng": np.random.default_rng(0)})
    with pytest.raises(ValueError, match=r"no generator 'sampler' \(it holds \['np_rng'\]\)"):
        restore_rng(state, {"sampler": np.random.default_rng(0)})


@pytest.mark.parametrize("path", [LEGACY_RL, LEGACY_VISION], ids=["rl", "vision"])
def test_rng_layouts_of_earlier_releases_restore_exactly(path: Path) -> None:
    """The multi-task trainer's old layout (``numpy_global``, its generators as top-level keys) and the vision
    trainer's (``numpy``, ``cuda``: None): every generator ends up in the saved state."""
    saved = load_torch(path)["rng"]
    np_gen, torch_gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    named = ({"np_rng": np_gen}, {"sample_gen": torch_gen}) if "np_rng" in saved else ({}, {})
    restore_rng(saved, *named)
    assert torch.equal(torch.get_rng_state(), saved["torch"])
    assert random.getstate() == saved["python"]
    numpy_saved = saved.get("numpy", saved.get("numpy_global"))
    numpy_now = np.random.get_state(legacy=isinstance(numpy_saved, tuple))
    if isinstance(numpy_saved, tuple):
        assert numpy_now[0] == numpy_saved[0] and np.array_equal(numpy_now[1], numpy_saved[1])
        assert numpy_now[2:] == numpy_saved[2:]
    else:
        assert list(numpy_now["state"]["key"]) == list(numpy_saved["state"]["key"])
        assert numpy_now["state"]["pos"] == numpy_saved["state"]["pos"]
    if "np_rng" in saved:
        assert np_gen.bit_generator.state == saved["np_rng"]
        assert torch.equal(torch_gen.get_state(), saved["sample_gen"])


# --- the envelope -------------------------------------------------------------------------------------------
def test_envelope_round_trip_and_what_the_file_holds(tmp_path: Path) -> None:
    state = {"w": torch.arange(4.0), "evals": [{"step": 5}], "obs": np.ones((2, 3))}
    path = save_envelope(tmp_path / "c.pt", VISION, state, step=5)
    loaded = load_envelope(path, VISION)
    assert set(loaded) == set(state) and torch.equal(loaded["w"], state["w"]) and loaded["evals"] == [{"step": 5}]
    np.testing.assert_array_equal(loaded["obs"], state["obs"])
    raw = load_torch(path)
    assert {k: v for k, v in raw.items() if k != "state"} == {
        "mtrl_checkpoint": ENVELOPE_FORMAT,
        "kind": "vision",
        "script": "scripts/train_vision.py",
        "step": 5,
    }
    assert load_envelope(save_envelope(tmp_path / "s.pt", STL, {"steps": {"a": 3}}, 3), STL_FLAGS) == {
        "steps": {"a": 3}
    }


def test_a_save_keeps_the_one_before_as_previous(tmp_path: Path) -> None:
    path, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.prev.pt"
    save_envelope(path, VISION, {"n": 1}, 1, previous=prev)
    save_envelope(path, VISION, {"n": 2}, 2, previous=prev)
    assert load_envelope(path, VISION) == {"n": 2} and load_envelope(prev, VISION) == {"n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]  # no temporary


@pytest.mark.parametrize(
    ("writer", "reader", "script"),
    [(RL, VISION, "scripts/train.py"), (VISION, RL, "scripts/train_vision.py"), (STL, RL, "scripts/train_stl.py")],
)
def test_a_checkpoint_of_another_trainer_is_refused_in_one_line(
    writer: Any, reader: Any, script: str, tmp_path: Path
) -> None:
    path = save_envelope(tmp_path / "c.pt", writer, {"n": 1}, 1)
    with pytest.raises(ForeignCheckpointError) as err:
        load_envelope(path, reader)
    _one_line_naming(str(err.value), path)
    assert f"was written by {script} ({writer.name}), not by {reader.script}" in str(err.value)


def test_old_checkpoints_load_as_their_trainer_and_are_refused_by_the_others() -> None:
    rl = load_envelope(LEGACY_RL, RL)
    assert rl["step"] == 130 and "agent" in rl and "env_state" in rl
    vision = run_state.load_checkpoint(LEGACY_VISION, {}, torch.device("cpu"))
    assert vision.step == 5
    refusals = [(LEGACY_RL, VISION, "scripts/train.py"), (LEGACY_VISION, RL, "scripts/train_vision.py"),
                (LEGACY_RL, STL, "scripts/train.py")]  # fmt: skip
    for path, reader, script in refusals:
        with pytest.raises(ForeignCheckpointError, match=f"was written by {script}") as err:
            load_envelope(path, reader)
        _one_line_naming(str(err.value), path)


def test_a_newer_envelope_format_and_an_envelope_without_state_are_refused(tmp_path: Path) -> None:
    newer, hollow = tmp_path / "newer.pt", tmp_path / "hollow.pt"
    torch.save({"mtrl_checkpoint": ENVELOPE_FORMAT + 1, "kind": "rl", "step": 1, "state": {}}, newer)
    torch.save({"mtrl_checkpoint": ENVELOPE_FORMAT, "kind": "rl", "step": 1, "state": [1]}, hollow)
    with pytest.raises(ForeignCheckpointError, match="newer than this release reads") as err:
        load_envelope(newer, RL)
    _one_line_naming(str(err.value), newer)
    with pytest.raises(CheckpointError, match="holds no state dict") as err:
        load_envelope(hollow, RL)
    _one_line_naming(str(err.value), hollow)


def test_a_truncated_envelope_is_damage_not_a_foreign_file(tmp_path: Path) -> None:
    path = save_envelope(tmp_path / "c.pt", RL, {"w": torch.zeros(1000)}, 1)
    whole = path.read_bytes()
    for size in (0, 10, len(whole) // 2):
        path.write_bytes(whole[:size])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
            load_envelope(path, RL)
        assert not isinstance(err.value, ForeignCheckpointError | UntrustedCheckpointError)
        _one_line_naming(str(err.value), path)


def test_vision_checkpoint_parts_and_progress_round_trip(tmp_path: Path) -> None:
    """A real model and optimizer through ``run_state.save_checkpoint``/``load_checkpoint``: restored parts,
    progress and RNGs (the next dropout draw is the one after the save)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pt"
    run_state.save_checkpoint(path, {"model": model, "optimizer": optimizer, "scaler": None},
                              run_state.Progress(7, [{"step": 7}], 1.5))  # fmt: skip
    expected = torch.rand(5)
    fresh_model = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.SGD(fresh_model.parameters(), lr=0.1, momentum=0.9)
    parts = {"model": fresh_model, "optimizer": fresh_optimizer}
    progress = run_state.load_checkpoint(path, parts, torch.device("cpu"))
    assert progress == run_state.Progress(7, [{"step": 7}], 1.5)
    assert torch.equal(torch.rand(5), expected)
    for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(a, b)
    momentum = [o.state_dict()["state"][0]["momentum_buffer"] for o in (optimizer, fresh_optimizer)]
    assert torch.equal(*momentum)


# --- the latest-checkpoint lookup ---------------------------------------------------------------------------
def _rl_run(tmp_path: Path, steps: tuple[int, ...] = (50, 100)) -> Path:
    for step in steps:
        rl_checkpoint.save_checkpoint({"step": step}, tmp_path / "run" / "checkpoints", step)
    return tmp_path / "run"


def test_rl_lookup_follows_last_txt_then_steps_newest_first(tmp_path: Path) -> None:
    run = _rl_run(tmp_path, (50, 100, 150))  # keeps the two newest
    ckpts = run / "checkpoints"
    expected = [ckpts / "step_000000150.pt", ckpts / "step_000000100.pt"]
    assert checkpoint_candidates(run, RL) == (expected, [])
    assert checkpoint_candidates(ckpts, RL) == (expected, [])  # the checkpoints/ folder
    assert checkpoint_candidates(expected[1], RL) == ([expected[1]], [])  # a file: itself only
    assert rl_checkpoint.checkpoint_candidates(run) == (expected, [])  # the multi-task re-export
    (ckpts / "last.txt").write_text("step_000000100.pt")  # a pointer behind the highest step (a stop mid-save)
    assert checkpoint_candidates(run, RL)[0] == [expected[1], expected[0]]
    assert rl_checkpoint.load_checkpoint(run)["step"] == 100


def test_rl_lookup_with_a_dangling_or_missing_last_txt_uses_the_highest_step_with_a_note(tmp_path: Path) -> None:
    run = _rl_run(tmp_path)
    ckpts = run / "checkpoints"
    (ckpts / "last.txt").write_text("step_000000200.pt")
    candidates, notes = checkpoint_candidates(run, RL)
    assert candidates == [ckpts / "step_000000100.pt", ckpts / "step_000000050.pt"]
    assert notes == [f"{ckpts / 'last.txt'} names step_000000200.pt, which is missing: using the highest step "
                     "file, step_000000100.pt"]  # fmt: skip
    (ckpts / "last.txt").unlink()
    assert checkpoint_candidates(run, RL)[1] == [f"{ckpts / 'last.txt'} is missing: using the highest step file, "
                                                 "step_000000100.pt"]  # fmt: skip


def test_vision_and_stl_lookups_follow_their_trainer_kinds(tmp_path: Path) -> None:
    run = tmp_path / "vision"
    for step in (3, 6):
        run_state.save_checkpoint(run / "checkpoint.pt", {}, run_state.Progress(step, [], 0.0))
    assert checkpoint_candidates(run, VISION) == ([run / "checkpoint.pt", run / "checkpoint.prev.pt"], [])
    assert run_state.checkpoint_candidates(run) == [run / "checkpoint.pt", run / "checkpoint.prev.pt"]
    (run / "checkpoint.pt").unlink()  # a kill between the two renames leaves the previous one only
    assert latest_checkpoint(run, VISION) == run / "checkpoint.prev.pt"
    for pattern in STL.checkpoints:
        (tmp_path / "stl" / pattern).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stl" / pattern).write_text("{}")
    assert checkpoint_candidates(tmp_path / "stl", STL)[0] == [tmp_path / "stl" / p for p in STL.checkpoints]
    for kind in (RL, VISION, STL):  # nothing there: one line naming what was looked for
        with pytest.raises(FileNotFoundError, match=f"no checkpoint in '{tmp_path / 'empty'}' \\(looked for "):
            latest_checkpoint(tmp_path / "empty", kind)
    assert checkpoint_candidates(tmp_path / "empty", VISION) == ([], [])


def test_resume_loads_the_newest_intact_and_stops_at_a_foreign_file(tmp_path: Path) -> None:
    run = _rl_run(tmp_path)
    newest = run / "checkpoints" / "step_000000100.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    candidates, _ = checkpoint_candidates(run, RL)
    path, state, notes = load_newest_intact(candidates, rl_checkpoint.load_checkpoint)
    assert path.name == "step_000000050.pt" and state["step"] == 50
    assert len(notes) == 1 and str(newest) in notes[0]
    save_envelope(newest, VISION, {"step": 100}, 100)  # intact, but another trainer's: no fall-back
    with pytest.raises(ForeignCheckpointError) as err:
        load_newest_intact(candidates, rl_checkpoint.load_checkpoint)
    _one_line_naming(str(err.value), newest)


def test_a_vision_checkpoint_missing_a_part_is_named_not_a_key_error(tmp_path: Path) -> None:
    """A vision file (enveloped or of an earlier release) without one of the parts the run restores, e.g. written
    by a run without an optimizer, stops the resume with one line naming the file and the part."""
    model, optimizer = torch.nn.Linear(2, 2), None
    path = tmp_path / "checkpoint.pt"
    run_state.save_checkpoint(path, {"model": model, "optimizer": optimizer}, run_state.Progress(3, [], 1.0))
    with pytest.raises(
        CheckpointError, match=r"checkpoint file .*checkpoint.pt has no scheduler: it is not a complete"
    ):
        run_state.load_checkpoint(path, {"model": model, "scheduler": torch.nn.Linear(1, 1)}, torch.device("cpu"))
    assert run_state.load_checkpoint(path, {"model": model, "optimizer": None}, torch.device("cpu")).step == 3
