"""Replay buffer: stratified sampling, task grouping, no one-hot stored, ring wrap, state round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtrl.replay import Batch, MultiTaskReplayBuffer

T, O, A = 3, 4, 2


def _fill(buf: MultiTaskReplayBuffer, steps: int, start: int = 0) -> None:
    """Transition ``k`` of task ``t`` carries the value ``100 t + k`` everywhere (identifiable rows)."""
    for k in range(start, start + steps):
        tag_T = np.array([100.0 * t + k for t in range(T)])
        buf.add(
            np.repeat(tag_T[:, None], O, 1),
            np.repeat(tag_T[:, None], A, 1),
            tag_T,
            np.repeat(tag_T[:, None] + 0.5, O, 1),
            np.zeros(T),
        )


def test_stratified_grouped_rows(device: torch.device) -> None:
    buf = MultiTaskReplayBuffer(T, O, A, capacity_total=300, device=device)
    _fill(buf, 50)
    batch = buf.sample(7, torch.Generator().manual_seed(0))
    assert isinstance(batch, Batch)
    assert batch.obs.shape == (T, 7, O) and batch.action.shape == (T, 7, A)
    assert batch.reward.shape == (T, 7) and batch.terminated.shape == (T, 7) and batch.next_obs.shape == (T, 7, O)
    task_of_row = torch.div(batch.reward, 100, rounding_mode="floor")
    assert torch.equal(task_of_row, torch.arange(T, device=device, dtype=torch.float32)[:, None].expand(T, 7))
    # the stored observation is the env observation without a one-hot: width O, same tag as the reward
    assert torch.equal(batch.obs, batch.reward[..., None].expand(T, 7, O))
    assert torch.equal(batch.next_obs, batch.obs + 0.5)


def test_rejects_observation_with_one_hot() -> None:
    buf = MultiTaskReplayBuffer(T, O, A, capacity_total=30)
    with pytest.raises(ValueError, match="one-hot removed"):
        buf.add(np.zeros((T, O + T)), np.zeros((T, A)), np.zeros(T), np.zeros((T, O)), np.zeros(T))


def test_ring_buffer_wraps_per_task() -> None:
    buf = MultiTaskReplayBuffer(T, O, A, capacity_total=3 * 5)  # 5 per task
    _fill(buf, 8)  # k = 0..7: the oldest three (0, 1, 2) are overwritten
    assert buf.size == 5 and len(buf) == 15 and buf.pos == 3
    kept = sorted(int(v) % 100 for v in buf.reward_TC[1].tolist())
    assert kept == [3, 4, 5, 6, 7]
    batch = buf.sample(200, torch.Generator().manual_seed(1))
    assert set((batch.reward % 100).long().unique().tolist()) == {3, 4, 5, 6, 7}


def test_sampling_is_seeded_and_state_round_trips() -> None:
    buf = MultiTaskReplayBuffer(T, O, A, capacity_total=60)
    _fill(buf, 25)
    a = buf.sample(5, torch.Generator().manual_seed(3))
    b = buf.sample(5, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    copy = MultiTaskReplayBuffer(T, O, A, capacity_total=60)
    copy.load_state_dict(buf.state_dict())
    c = copy.sample(5, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert (copy.pos, copy.size) == (buf.pos, buf.size)


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="capacity_total"):
        MultiTaskReplayBuffer(T, O, A, capacity_total=2)
    buf = MultiTaskReplayBuffer(T, O, A, capacity_total=30)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4)
    _fill(buf, 2)
    with pytest.raises(ValueError, match="n_per_task"):
        buf.sample(0)
    with pytest.raises(ValueError, match="capacity_per_task"):
        MultiTaskReplayBuffer(T, O, A, capacity_total=60).load_state_dict(buf.state_dict())


def test_state_dict_holds_only_the_filled_rows(tmp_path: Path) -> None:
    buf = MultiTaskReplayBuffer(T, O, A, capacity_total=3 * 10_000)
    _fill(buf, 5)
    state = buf.state_dict()
    assert state["obs"].shape == (T, 5, O)
    torch.save(state, tmp_path / "replay.pt")
    assert (tmp_path / "replay.pt").stat().st_size < 20_000  # not the 10k-row preallocated storage
