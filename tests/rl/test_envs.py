"""Meta-World MT10/MT50 builders, protocols, SAME_STEP transitions, evaluation and env checkpoints.

Real Meta-World environments (no mocks). Building MT10 costs ~6 s here (Meta-World draws 50 goals
per task, resetting a MuJoCo env for each), so the MT10 envs are built once per module; each test
resets what it uses. MT50 and the async strategy are behind ``@pytest.mark.slow``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import (
    PROTOCOLS,
    TOY_PROTOCOL,
    MultiTaskVecEnv,
    Protocol,
    continues_episodes,
    env_state,
    evaluate,
    get_protocol,
    load_env_state,
    restore_env_state,
    step_transitions,
)
from envs import metaworld as metaworld_builders
from envs.metaworld import make_mt_envs
from mtrl.checkpoint_io import UntrustedCheckpointError, safe_globals

pytest.importorskip("metaworld")

MT10_TASKS = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
GOAL = slice(36, 39)  # goal position inside the 39-d Meta-World v3 observation


class RandomAgent:
    """Uniform actions from a seeded RNG; records the masks it is reset with."""

    def __init__(self, num_tasks: int, action_dim: int = 4, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.shape = (num_tasks, action_dim)
        self.resets: list[np.ndarray] = []

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        assert observations.shape[0] == self.shape[0]
        return self.rng.uniform(-1.0, 1.0, size=self.shape)

    def reset(self, env_mask: np.ndarray) -> None:
        self.resets.append(np.asarray(env_mask).copy())


Built = tuple[MultiTaskVecEnv, np.ndarray]


def _build(protocol: str, seed: int, max_episode_steps: int | None = None) -> Iterator[Built]:
    envs = make_mt_envs("MT10", protocol=protocol, seed=seed, max_episode_steps=max_episode_steps)
    first_obs, _ = envs.reset()
    yield envs, first_obs
    envs.close()


@pytest.fixture(scope="module")
def v3_a() -> Iterator[Built]:
    yield from _build("metaworld-v3", seed=0)


@pytest.fixture(scope="module")
def v3_b() -> Iterator[Built]:
    yield from _build("metaworld-v3", seed=0)


@pytest.fixture(scope="module")
def v3_other_seed() -> Iterator[Built]:
    # Shorter episodes only to keep the official evaluation (which runs full episodes) fast.
    yield from _build("metaworld-v3", seed=1, max_episode_steps=100)


@pytest.fixture(scope="module")
def legacy() -> Iterator[Built]:
    yield from _build("mtrl-legacy", seed=0)


def _rand_vecs(envs: MultiTaskVecEnv) -> list[np.ndarray]:
    """Each sub-env's current goal/object-placement vector (its length depends on the task)."""
    return [np.array(v, copy=True) for v in envs.get_attr("_last_rand_vec")]


# --- protocols and argument checks (no env built) ----------------------------------------------
def test_protocols_encode_the_two_published_setups() -> None:
    v3, legacy_p = PROTOCOLS["metaworld-v3"], PROTOCOLS["mtrl-legacy"]
    assert (v3.max_episode_steps, v3.random_goals, v3.reward_function_version) == (500, True, "v2")
    assert (v3.eval_episodes_per_task, v3.evaluator, v3.report) == (50, "metaworld", "final_and_last_mean")
    assert (legacy_p.max_episode_steps, legacy_p.random_goals, legacy_p.eval_episodes_per_task) == (150, False, 1)
    assert (legacy_p.evaluator, legacy_p.report, legacy_p.deterministic_eval) == ("episodes", "best", True)
    assert legacy_p.summarize([0.2, 0.7, 0.5]) == {"best": 0.7, "final": 0.5}
    assert v3.summarize([0.0] * 5 + [0.5] * 10) == {"final": 0.5, "last_mean": 0.5}
    assert get_protocol(v3) is v3


def test_protocol_details_round_trip_without_a_lookup() -> None:
    """``Protocol.details`` (a run's ``protocol_details``) → ``Protocol.from_details`` gives the protocol
    back, with the run's evaluation episodes and cadence as its defaults."""
    for spec in (*PROTOCOLS.values(), TOY_PROTOCOL):
        assert Protocol.from_details(spec.details()) == spec
    run = Protocol.from_details(PROTOCOLS["mtrl-legacy"].details(eval_episodes=5, eval_every=0))
    assert (run.eval_episodes_per_task, run.eval_every, run.reported_statistic) == (5, 0, "best")
    with pytest.raises(ValueError, match=r"lack \['name'\]: resolve the config first"):
        Protocol.from_details({k: v for k, v in TOY_PROTOCOL.details().items() if k != "name"})
    with pytest.raises(ValueError, match="goals 'sometimes'"):
        Protocol.from_details({**TOY_PROTOCOL.details(), "goals": "sometimes"})


def test_unknown_names_raise_with_valid_choices() -> None:
    with pytest.raises(ValueError, match="MT1, MT10, MT25, MT50, custom"):
        make_mt_envs("MT20")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metaworld-v3, mtrl-legacy"):
        make_mt_envs("MT10", protocol="mtrl")
    with pytest.raises(ValueError, match="metaworld-v3, mtrl-legacy"):
        make_mt_envs("MT10", protocol="toy")
    with pytest.raises(ValueError, match="sync, async"):
        make_mt_envs("MT10", vector_strategy="threads")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed"):
        make_mt_envs("MT10", seed=None)  # type: ignore[arg-type]


def test_step_transitions_refuses_next_step_autoreset() -> None:
    envs = gym.vector.SyncVectorEnv(
        [lambda: gym.make("Pendulum-v1")], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
    )
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="SAME_STEP"):
        step_transitions(envs, np.zeros((1, 1), dtype=np.float32))


# --- MT10 --------------------------------------------------------------------------------------
def test_same_seed_gives_identical_observations(v3_a: Built, v3_b: Built) -> None:
    (a, first_a), (b, first_b) = v3_a, v3_b
    np.testing.assert_array_equal(first_a, first_b)
    a.reset()
    b.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 10, 4))
    for act in actions:
        np.testing.assert_array_equal(step_transitions(a, act).obs, step_transitions(b, act).obs)


def test_different_seed_gives_different_goals(v3_a: Built, v3_other_seed: Built) -> None:
    (_, first_a), (_, first_c) = v3_a, v3_other_seed
    assert not np.array_equal(first_a[:, GOAL], first_c[:, GOAL])


def test_one_hot_and_task_order(v3_a: Built) -> None:
    envs, first_obs = v3_a
    assert envs.task_names == MT10_TASKS == metaworld_builders.MT10_TASKS and envs.num_tasks == envs.num_envs == 10
    assert (envs.obs_dim, envs.obs_dim_with_one_hot, envs.action_dim) == (39, 49, 4)
    assert first_obs.shape == (10, 49)
    one_hot = first_obs[:, 39:]
    np.testing.assert_array_equal(one_hot, np.eye(10))
    np.testing.assert_array_equal(one_hot.argmax(axis=1), np.arange(10))
    assert envs.strip_one_hot(first_obs).shape == (10, 39)


def test_legacy_truncates_at_150_with_final_obs_as_next_obs(legacy: Built) -> None:
    envs, first_obs = legacy
    assert envs.protocol.max_episode_steps == 150
    envs.reset()
    rng = np.random.default_rng(0)
    for _ in range(149):
        step = step_transitions(envs, rng.uniform(-1, 1, size=(10, 4)))
        assert not step.done.any()
        np.testing.assert_array_equal(step.next_obs, step.obs)
    step = step_transitions(envs, rng.uniform(-1, 1, size=(10, 4)))
    assert step.truncated.all() and not step.terminated.any() and step.done.all()
    final_obs = np.stack(step.info["final_obs"])
    np.testing.assert_allclose(step.next_obs, final_obs, rtol=0, atol=1e-6)
    assert not np.allclose(step.next_obs[:, :18], step.obs[:, :18])  # next_obs is not the reset obs
    np.testing.assert_array_equal(step.episode_length, np.full(10, 150))
    assert np.isfinite(step.episode_return).all()
    np.testing.assert_array_equal(step.obs[:, GOAL], first_obs[:, GOAL])  # autoreset keeps the fixed goal
    step_transitions(envs, np.zeros((10, 4)))  # stepping on after autoreset does not raise


def test_v3_truncates_at_500_and_bootstraps(v3_a: Built) -> None:
    """metaworld-v3: 500-step episodes end by truncation (never termination) with final_obs as next_obs."""
    envs, _ = v3_a
    assert envs.protocol.max_episode_steps == 500
    envs.reset()
    rng = np.random.default_rng(1)
    for _ in range(499):
        step = step_transitions(envs, rng.uniform(-1, 1, size=(10, 4)))
        assert not step.done.any()
    before_goal = np.array(_rand_vecs(envs), dtype=object)
    step = step_transitions(envs, rng.uniform(-1, 1, size=(10, 4)))
    assert step.truncated.all() and not step.terminated.any()
    np.testing.assert_allclose(step.next_obs, np.stack(step.info["final_obs"]), rtol=0, atol=1e-6)
    assert not np.allclose(step.next_obs[:, :18], step.obs[:, :18])  # the stored obs is not the reset obs
    np.testing.assert_array_equal(step.episode_length, np.full(10, 500))
    assert any(not np.array_equal(a, b) for a, b in zip(before_goal, _rand_vecs(envs), strict=True))  # new goals
    step_transitions(envs, np.zeros((10, 4)))  # SAME_STEP autoreset: stepping on does not raise


def test_restored_eval_env_repeats_the_evaluation(v3_other_seed: Built) -> None:
    """restore_env_state (what a resumed trainer does to its eval envs) brings the goal sampler back:
    the next official evaluation draws the same goals and gives the same returns."""
    envs, _ = v3_other_seed
    evaluate(RandomAgent(10, seed=4), envs, episodes_per_task=1)  # advance the goal sampler
    state = env_state(envs)
    first = evaluate(RandomAgent(10, seed=5), envs, episodes_per_task=1)
    goals_first = _rand_vecs(envs)
    restore_env_state(envs, state)
    again = evaluate(RandomAgent(10, seed=5), envs, episodes_per_task=1)
    np.testing.assert_array_equal(again.return_per_task, first.return_per_task)
    np.testing.assert_array_equal(again.success_per_task, first.success_per_task)
    for a, b in zip(_rand_vecs(envs), goals_first, strict=True):
        np.testing.assert_array_equal(a, b)
    after_third = evaluate(RandomAgent(10, seed=5), envs, episodes_per_task=1)  # not restored: new goals
    assert not np.array_equal(after_third.return_per_task, first.return_per_task)


def test_legacy_goals_stay_fixed_and_v3_goals_change(legacy: Built, v3_other_seed: Built) -> None:
    fixed, first_fixed = legacy
    goals = [fixed.reset()[0][:, GOAL] for _ in range(3)]
    for g in goals:
        np.testing.assert_array_equal(g, first_fixed[:, GOAL])
    assert not any(fixed.get_attr("sample_tasks_on_reset"))

    moving, _ = v3_other_seed
    vecs = []
    for _ in range(3):
        moving.reset()
        vecs.append(_rand_vecs(moving))
    for t in range(10):  # every task drew a new goal at one of the two later resets
        assert not (np.array_equal(vecs[0][t], vecs[1][t]) and np.array_equal(vecs[1][t], vecs[2][t]))


def test_evaluate_random_agent_v3_official(v3_other_seed: Built) -> None:
    envs, _ = v3_other_seed
    agent = RandomAgent(10)
    result = evaluate(agent, envs, episodes_per_task=1)
    assert result.success_per_task.shape == (10,) and result.return_per_task.shape == (10,)
    assert ((result.success_per_task >= 0) & (result.success_per_task <= 1)).all()
    assert result.success_mean == pytest.approx(result.success_per_task.mean())
    assert np.isfinite(result.return_per_task).all()
    # an overridden episode length is no longer the named protocol, and the name says so
    assert envs.protocol.max_episode_steps == 100 and envs.protocol.name == "metaworld-v3[max_episode_steps=100]"
    assert agent.resets[0].all()
    assert not any(envs.get_attr("terminate_on_success"))  # restored after the official evaluation


def test_evaluate_random_agent_legacy_episodes(legacy: Built) -> None:
    envs, _ = legacy
    agent = RandomAgent(10, seed=1)
    result = evaluate(agent, envs)  # the legacy protocol: 1 episode of 150 steps per task
    assert result.episodes_per_task == 1 and result.success_per_task.shape == (10,)
    assert set(np.unique(result.success_per_task)) <= {0.0, 1.0}
    assert len(agent.resets) == 151  # the initial reset + one mask per step
    assert agent.resets[-1].all() and not np.any(agent.resets[1:-1])


def test_env_state_round_trip_continues_the_episodes_in_progress(
    v3_a: Built, v3_b: Built, v3_other_seed: Built
) -> None:
    """A sync env's state holds its episodes in progress: loaded into envs of the same seed elsewhere in their
    run, they go on step for step as the source does (goals, RNGs, simulator and wrapper state all come along),
    and the next resets draw the same goals. Envs of another seed are refused: their tasks are not the saved
    ones, and Meta-World's task data is never taken from a state (envs.checkpoint)."""
    source, _ = v3_a
    target, _ = v3_b  # the same seed at another point: its goal sampler differs until the state is loaded
    for _ in range(3):
        source.reset()  # advance the task-sampling RNGs
    rng = np.random.default_rng(2)
    for act in rng.uniform(-1, 1, size=(5, 10, 4)):
        step_transitions(source, act)  # into the episode
    state = env_state(source)
    with pytest.raises(UntrustedCheckpointError, match="not one of the tasks this run's seed builds"):
        load_env_state(v3_other_seed[0], state)
    assert continues_episodes(target, state)
    obs_target = load_env_state(target, state)
    assert source.last_obs is not None
    np.testing.assert_array_equal(obs_target, source.last_obs)
    for vec_target, vec_source in zip(_rand_vecs(target), _rand_vecs(source), strict=True):
        np.testing.assert_array_equal(vec_target, vec_source)
    for act in rng.uniform(-1, 1, size=(3, 10, 4)):
        got, want = step_transitions(target, act), step_transitions(source, act)
        np.testing.assert_array_equal(got.obs, want.obs)
        np.testing.assert_array_equal(got.reward, want.reward)
    np.testing.assert_array_equal(target.reset()[0], source.reset()[0])


def test_resumed_sync_envs_continue_bit_identically_across_an_autoreset(v3_other_seed: Built) -> None:
    """What a resumed trainer does: the state goes through a checkpoint file (torch.save, read back as plain
    data) into envs built afresh from the run's seed; the next 80 steps, crossing the time limit at 100 and its
    autoreset, equal the uninterrupted envs' steps bit for bit (observations, rewards, flags, successes, episode
    returns)."""
    source, _ = v3_other_seed
    source.reset()
    rng = np.random.default_rng(3)
    for act in rng.uniform(-1, 1, size=(60, 10, 4)):
        step_transitions(source, act)
    buffer = io.BytesIO()
    torch.save(env_state(source), buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(safe_globals()):
        state = torch.load(buffer, weights_only=True)
    actions = rng.uniform(-1, 1, size=(80, 10, 4))
    expected = [step_transitions(source, act) for act in actions]
    target = make_mt_envs("MT10", protocol="metaworld-v3", seed=1, max_episode_steps=100)  # v3_other_seed's
    try:
        load_env_state(target, state)
        for act, want in zip(actions, expected, strict=True):
            got = step_transitions(target, act)
            for field in ("next_obs", "obs", "reward", "terminated", "truncated", "success", "episode_length"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
            np.testing.assert_array_equal(got.episode_return, want.episode_return)  # NaN where none ended
    finally:
        target.close()
    assert sum(int(step.truncated.sum()) for step in expected) == 10  # every task crossed its time limit


def test_env_state_restores_legacy_fixed_goals_and_reward_statistics(legacy: Built) -> None:
    envs, first_obs = legacy
    state = env_state(envs)
    variances = envs.get_attr("_reward_var")
    envs.call("toggle_sample_tasks_on_reset", True)
    for _ in range(3):
        envs.reset()  # draws new goals
    step_transitions(envs, np.ones((10, 4)))  # moves the running reward statistics
    assert envs.get_attr("_reward_var") != variances
    obs = load_env_state(envs, state)
    np.testing.assert_array_equal(obs[:, GOAL], first_obs[:, GOAL])
    assert not any(envs.get_attr("sample_tasks_on_reset"))
    assert envs.get_attr("_reward_var") == variances
    with pytest.raises(ValueError, match="protocol"):
        load_env_state(envs, {**state, "protocol": "metaworld-v3"})


# --- slow ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mt50_builds_with_one_hot_and_steps() -> None:
    envs = make_mt_envs("MT50", protocol="mtrl-legacy", seed=0)
    try:
        assert envs.num_tasks == 50 and len(set(envs.task_names)) == 50
        assert set(MT10_TASKS) <= set(envs.task_names)
        obs, _ = envs.reset()
        assert obs.shape == (50, 89)
        np.testing.assert_array_equal(obs[:, 39:].argmax(axis=1), np.arange(50))
        step = step_transitions(envs, np.zeros((50, 4)))
        assert np.isfinite(step.reward).all() and not step.done.any()
    finally:
        envs.close()


@pytest.mark.slow
def test_async_matches_sync() -> None:
    sync_envs = make_mt_envs("MT10", seed=3, vector_strategy="sync")
    async_envs = make_mt_envs("MT10", seed=3, vector_strategy="async")
    try:
        np.testing.assert_array_equal(sync_envs.reset()[0], async_envs.reset()[0])
        act = np.random.default_rng(0).uniform(-1, 1, size=(10, 4))
        np.testing.assert_array_equal(step_transitions(sync_envs, act).obs, step_transitions(async_envs, act).obs)
        obs = load_env_state(async_envs, env_state(sync_envs))
        assert obs.shape == (10, 49)
    finally:
        sync_envs.close()
        async_envs.close()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the workers' signal masks from /proc")
def test_async_workers_start_with_ctrl_c_and_hangup_ignored_but_not_sigterm() -> None:
    """A terminal's Ctrl-C and hangup reach the whole process group: the async workers (real processes, their
    ``SigIgn`` mask read from /proc) ignore SIGINT and SIGHUP, so only the trainer stops and it can still reach them
    for its checkpoint; SIGTERM stays deliverable (gymnasium ends a worker that will not close with it), and the
    driver's own handlers are as before."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)}
    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal (a suite run under nohup would ignore it)
    before = {s: signal.getsignal(s) for s in saved}
    envs = make_mt_envs("custom", tasks=["reach-v3", "drawer-close-v3"], seed=0, vector_strategy="async")
    try:
        workers = envs.unwrapped.processes
        assert len(workers) == 2 and all(w.is_alive() for w in workers)
        for worker in workers:
            status = Path(f"/proc/{worker.pid}/status").read_text()
            ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
            assert ignored >> (signal.SIGINT - 1) & 1 and ignored >> (signal.SIGHUP - 1) & 1
            assert not ignored >> (signal.SIGTERM - 1) & 1
    finally:
        envs.close()
        after = {s: signal.getsignal(s) for s in saved}
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert after == before
