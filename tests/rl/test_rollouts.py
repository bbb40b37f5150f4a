"""agents.rollouts.RolloutStats: an episode's return is the sum of its rewards and it counts as a success when any of
its steps did (Meta-World's rule); values are reported at the step the episode ends, then the sums restart."""

from __future__ import annotations

import numpy as np
import pytest

from agents.rollouts import RolloutStats
from envs import StepResult


def _step(reward: list[float], success: list[bool], done: list[bool]) -> StepResult:
    n = len(reward)
    zeros = np.zeros((n, 3))
    return StepResult(
        next_obs=zeros, obs=zeros, reward=np.asarray(reward), terminated=np.zeros(n, dtype=bool),
        truncated=np.asarray(done), done=np.asarray(done), success=np.asarray(success),
        episode_return=np.full(n, np.nan), episode_length=np.zeros(n, dtype=np.int64), info={},
    )  # fmt: skip


def test_an_episode_succeeds_when_any_step_did_and_sums_restart_at_its_end() -> None:
    stats = RolloutStats(["a", "b"])
    assert stats.record(_step([1.0, 2.0], [False, True], [False, False])) == {}
    assert stats.record(_step([0.5, 1.0], [False, False], [True, False])) == {
        "rollout/return/a": 1.5, "rollout/success/a": 0.0
    }  # fmt: skip
    ended = stats.record(_step([4.0, 1.0], [False, False], [True, True]))
    assert ended == {"rollout/return/a": 4.0, "rollout/success/a": 0.0, "rollout/return/b": 4.0,
                     "rollout/success/b": 1.0}  # fmt: skip  # b succeeded at its first step only
    saved = stats.state_dict()
    assert saved["return"].tolist() == [0.0, 0.0] and saved["success"].tolist() == [False, False]


def test_the_episode_in_progress_is_saved_and_continued() -> None:
    first, second = RolloutStats(["a"]), RolloutStats(["a"])
    first.record(_step([2.0], [True], [False]))
    second.load_state_dict(first.state_dict())
    assert second.record(_step([1.0], [False], [True])) == {"rollout/return/a": 3.0, "rollout/success/a": 1.0}
    with pytest.raises(ValueError, match="rollout state for 1 tasks, this run has 2"):
        RolloutStats(["a", "b"]).load_state_dict(first.state_dict())
