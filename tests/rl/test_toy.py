"""The pure-numpy toy reaching suite: interface parity with Meta-World, maths, determinism, resume."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs import (
    EvalResult,
    MultiTaskVecEnv,
    ToyReachVecEnv,
    env_state,
    evaluate,
    load_env_state,
    make_toy_envs,
    step_transitions,
)


class GoalPolicy:
    """Scripted agent: moves the point of task ``t`` straight to goal ``goals[target[t]]``."""

    def __init__(self, envs: MultiTaskVecEnv, target: np.ndarray | None = None) -> None:
        base = envs.vec_env
        assert isinstance(base, ToyReachVecEnv)
        self.goals_T2 = base.goals_T2 if target is None else base.goals_T2[target]
        self.step_size = base.step_size
        self.resets: list[np.ndarray] = []

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        return np.clip((self.goals_T2 - observations[:, :2]) / self.step_size, -1.0, 1.0)

    def reset(self, env_mask: np.ndarray) -> None:
        self.resets.append(np.asarray(env_mask).copy())


class ZeroPolicy:
    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        return np.zeros((observations.shape[0], 2))

    def reset(self, env_mask: np.ndarray) -> None:
        return None


def _rollout(envs: MultiTaskVecEnv, actions_NT2: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """(next_obs, obs, reward, done) of every step of an action sequence ``(N, T, 2)``."""
    out: list[tuple[np.ndarray, ...]] = []
    for actions in actions_NT2:
        step = step_transitions(envs, actions)
        out.append((step.next_obs, step.obs, step.reward, step.done))
    return out


def _assert_same(a: list[tuple[np.ndarray, ...]], b: list[tuple[np.ndarray, ...]]) -> None:
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b, strict=True):
        for x, y in zip(row_a, row_b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_interface_matches_the_metaworld_builder() -> None:
    envs = make_toy_envs(num_tasks=3, seed=0, max_episode_steps=30)
    assert isinstance(envs, gym.vector.VectorEnv)
    assert envs.num_envs == envs.num_tasks == 3
    assert envs.task_names == ("reach-0", "reach-1", "reach-2")
    assert (envs.obs_dim, envs.obs_dim_with_one_hot, envs.action_dim) == (2, 5, 2)
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert envs.protocol.max_episode_steps == 30 and envs.protocol.evaluator == "episodes"
    obs, info = envs.reset()
    assert obs.shape == (3, 5) and obs.dtype == np.float32 and info == {}
    assert envs.observation_space.contains(obs)
    np.testing.assert_array_equal(obs[:, 2:], np.eye(3))  # one-hot = env index
    np.testing.assert_array_equal(envs.strip_one_hot(obs), obs[:, :2])
    obs, reward, terminated, truncated, info = envs.step(np.zeros((3, 2)))
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert info["success"].dtype == np.float64 and info["_success"].all()
    no_one_hot = make_toy_envs(num_tasks=3, use_one_hot=False)
    assert no_one_hot.reset()[0].shape == (3, 2) and no_one_hot.obs_dim_with_one_hot == 5


def test_goals_are_spread_evenly_and_reward_is_minus_distance() -> None:
    envs = make_toy_envs(num_tasks=4, seed=1)
    goals_T2 = envs.vec_env.goals_T2  # type: ignore[attr-defined]
    np.testing.assert_allclose(np.linalg.norm(goals_T2, axis=1), 0.6)
    np.testing.assert_allclose(goals_T2.sum(axis=0), 0.0, atol=1e-12)  # no single goal-agnostic optimum
    np.testing.assert_allclose(goals_T2[0], [0.6, 0.0])
    np.testing.assert_allclose(goals_T2[2], [-0.6, 0.0], atol=1e-12)
    obs, _ = envs.reset()
    actions = np.array([[1.0, 0.0], [0.0, 5.0], [-0.5, 0.5], [0.0, 0.0]])
    step = step_transitions(envs, actions)
    expected_pos = obs[:, :2].astype(np.float64) + 0.1 * np.clip(actions, -1, 1)
    np.testing.assert_allclose(step.obs[:, :2], expected_pos, atol=1e-6)
    np.testing.assert_allclose(step.reward, -np.linalg.norm(expected_pos - goals_T2, axis=1), atol=1e-6)
    assert not step.success.any() and not step.done.any()
    np.testing.assert_array_equal(step.next_obs, step.obs)


def test_truncation_uses_final_obs_and_is_not_terminal() -> None:
    envs = make_toy_envs(num_tasks=2, seed=3, max_episode_steps=5)
    envs.reset()
    rewards = []
    for _ in range(4):
        step = step_transitions(envs, np.ones((2, 2)))
        rewards.append(step.reward)
        assert not step.done.any()
    last = step.obs
    step = step_transitions(envs, np.ones((2, 2)))
    rewards.append(step.reward)
    assert step.truncated.all() and not step.terminated.any() and step.done.all()
    np.testing.assert_allclose(step.next_obs[:, :2], np.clip(last[:, :2] + 0.1, -1, 1), atol=1e-6)
    assert np.abs(step.obs[:, :2]).max() <= 0.1  # the reset observation (start box)
    np.testing.assert_array_equal(step.episode_length, [5, 5])
    np.testing.assert_allclose(step.episode_return, np.sum(rewards, axis=0))
    np.testing.assert_array_equal(step.info["final_obs"][0], step.next_obs[0])


def test_terminate_on_success_ends_episode_at_the_goal() -> None:
    envs = make_toy_envs(num_tasks=2, seed=0, terminate_on_success=True)
    policy = GoalPolicy(envs)
    obs, _ = envs.reset()
    steps = 0
    while steps < 20:
        step = step_transitions(envs, policy.eval_action(obs))
        obs, steps = step.obs, steps + 1
        if step.done.any():
            break
    assert steps <= 8  # the goal is 0.6 away (± 0.1 start noise), steps of 0.1
    assert np.array_equal(step.terminated, step.done) and not step.truncated.any()
    assert step.success[step.done].all()
    goals = envs.vec_env.goals_T2  # type: ignore[attr-defined]
    assert (np.linalg.norm(step.next_obs[step.done, :2] - goals[step.done], axis=1) < 0.1).all()
    assert (step.episode_length[step.done] == steps).all()


def test_same_seed_same_trajectory_different_seed_differs() -> None:
    actions = np.random.default_rng(0).uniform(-1.5, 1.5, size=(90, 4, 2))  # spans two autoresets
    a, b, c = (make_toy_envs(num_tasks=4, seed=s, max_episode_steps=40) for s in (7, 7, 8))
    obs_a, obs_b, obs_c = a.reset()[0], b.reset()[0], c.reset()[0]
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.array_equal(obs_a, obs_c)
    _assert_same(_rollout(a, actions), _rollout(b, actions))


def test_state_round_trip_continues_identically_mid_episode() -> None:
    rng = np.random.default_rng(1)
    envs = make_toy_envs(num_tasks=3, seed=11, max_episode_steps=10)
    envs.reset()
    history = _rollout(envs, rng.uniform(-1, 1, size=(13, 3, 2)))  # mid-episode, after one autoreset
    state = env_state(envs)
    future = rng.uniform(-1, 1, size=(25, 3, 2))
    expected = _rollout(envs, future)
    sampled = envs.action_space.sample()

    resumed = make_toy_envs(num_tasks=3, seed=999, max_episode_steps=10)  # seed overridden by the state
    obs = load_env_state(resumed, state)
    np.testing.assert_array_equal(obs, history[-1][1])  # the observation to act on at the save point
    _assert_same(_rollout(resumed, future), expected)
    np.testing.assert_array_equal(resumed.action_space.sample(), sampled)

    # The plain get_state/set_state API gives the same continuation.
    other = make_toy_envs(num_tasks=3, seed=5, max_episode_steps=10)
    other.vec_env.set_state(state["toy"])  # type: ignore[attr-defined]
    _assert_same(_rollout(other, future), expected)


def test_state_of_another_suite_is_rejected() -> None:
    state = env_state(make_toy_envs(num_tasks=3))
    with pytest.raises(ValueError, match="tasks"):
        load_env_state(make_toy_envs(num_tasks=4), state)


def test_scripted_policy_solves_every_task_and_zero_policy_none() -> None:
    envs = make_toy_envs(num_tasks=4, seed=0)
    scripted = GoalPolicy(envs)
    result = evaluate(scripted, envs)
    assert isinstance(result, EvalResult) and result.episodes_per_task == 10
    np.testing.assert_array_equal(result.success_per_task, np.ones(4))
    assert result.success_mean == 1.0
    assert scripted.resets[0].all()  # evaluation starts with every episode reset
    zero = evaluate(ZeroPolicy(), envs, episodes_per_task=3)
    np.testing.assert_array_equal(zero.success_per_task, np.zeros(4))
    assert (zero.return_per_task < result.return_per_task).all()


def test_task_identity_is_needed_to_solve_all_tasks() -> None:
    envs = make_toy_envs(num_tasks=4, seed=0)
    always_goal_0 = GoalPolicy(envs, target=np.zeros(4, dtype=np.int64))  # ignores which task it is
    result = evaluate(always_goal_0, envs, episodes_per_task=2)
    np.testing.assert_array_equal(result.success_per_task, [1.0, 0.0, 0.0, 0.0])
    assert result.scalars(envs.task_names)["eval/success/reach-0"] == 1.0
    assert result.scalars(envs.task_names)["eval/success_mean"] == 0.25


def test_success_is_any_step_of_the_episode() -> None:
    """Reach the goal, then leave it: the episode still counts as a success (mtrl's rule)."""

    class ReachThenLeave(GoalPolicy):
        def __init__(self, envs: MultiTaskVecEnv) -> None:
            super().__init__(envs)
            self.t = 0

        def eval_action(self, observations: np.ndarray) -> np.ndarray:
            self.t += 1
            toward = super().eval_action(observations)
            return toward if self.t <= 10 else -np.sign(self.goals_T2)

    envs = make_toy_envs(num_tasks=2, seed=0, max_episode_steps=20)
    result = evaluate(ReachThenLeave(envs), envs, episodes_per_task=1)
    np.testing.assert_array_equal(result.success_per_task, [1.0, 1.0])


def test_step_transitions_reads_the_list_of_dicts_info_layout() -> None:
    envs = make_toy_envs(num_tasks=2, seed=4, max_episode_steps=3)
    listed = gym.wrappers.vector.DictInfoToList(make_toy_envs(num_tasks=2, seed=4, max_episode_steps=3))
    envs.reset()
    listed.reset()
    for _ in range(3):
        a = step_transitions(envs, np.full((2, 2), 0.5))
        b = step_transitions(listed, np.full((2, 2), 0.5))
        for name in ("next_obs", "obs", "reward", "done", "success", "episode_length"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.episode_return, b.episode_return)  # NaN == NaN for arrays
    assert a.done.all() and (a.episode_length == 3).all()


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="num_tasks"):
        make_toy_envs(num_tasks=0)
    with pytest.raises(ValueError, match="max_episode_steps"):
        make_toy_envs(max_episode_steps=0)
    envs = make_toy_envs(num_tasks=2)
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.zeros((2, 2)))
    envs.reset()
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        envs.step(np.zeros((3, 2)))
