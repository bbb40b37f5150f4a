"""Meta-World v3 task sets (MT1, MT10, MT25, MT50, custom) as vector envs under a named protocol.

Built only through gymnasium's Meta-World ids (the Meta-World+ entry points; ``gymnasium.make``
does not work for multi-task benchmarks): ``Meta-World/MT10``, ``/MT25``, ``/MT50``,
``Meta-World/custom-mt-envs`` and ``Meta-World/MT1`` (:mod:`envs.task_sets` says which tasks each
name means). API facts this module relies on, checked on metaworld 3.1.1 / gymnasium 1.4:

* the one-hot is off by default: we pass ``use_one_hot`` explicitly (default True); its size is T;
* ``reset(seed=...)`` is ignored by Meta-World: determinism comes only from ``make_vec(seed=...)``,
  which seeds the 50 goals per task and every sub-env;
* ``Meta-World/MT1`` has no vector entry point: ``make_vec`` wraps ``gymnasium.make`` in a
  ``SyncVectorEnv`` (we ask for SAME_STEP autoreset and no env checker). With ``use_one_hot=True``
  it asserts unless ``env_id=0`` is passed. ``gymnasium.make`` consumes ``max_episode_steps`` for an
  outer ``TimeLimit``, so Meta-World's own time limit stays at 500 and the protocol's (≤ 500)
  length is enforced outside it;
* ``Meta-World/custom-mt-envs`` seeds sub-env ``i`` with ``seed + i`` and treats seed 0 as *no seed*
  (unseeded, not reproducible); we pass ``seed + 1``, so every run seed, 0 included, is
  deterministic (sub-env ``i`` gets Meta-World seed ``seed + 1 + i``);
* episodes truncate at ``max_episode_steps`` and stepping past it raises ``ValueError``; SAME_STEP
  autoreset resets them in the same step (see :func:`envs.vector.step_transitions`);
* fixed goals (``mtrl-legacy``) are obtained by ``toggle_sample_tasks_on_reset(False)`` after the
  first reset, not by ``num_goals=1``, which mutates the module global ``metaworld._N_GOALS``.

Resuming: :func:`env_state` / :func:`load_env_state` (from :mod:`envs.checkpoint`) save and restore
goals and RNGs through Meta-World's ``CheckpointWrapper`` and, on sync envs, the episodes in
progress (:mod:`envs.episode_state`: MuJoCo state, edited model fields, env and wrapper
attributes), so a resumed run continues its episodes exactly. Async workers cannot be reached
that way: their interrupted episodes restart from a reset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from envs.checkpoint import env_state, load_env_state
from envs.protocols import PROTOCOLS, Protocol, get_protocol
from envs.task_sets import METAWORLD_BENCHMARKS, MetaWorldBenchmark, resolve_tasks
from envs.vector import MultiTaskVecEnv
from mtrl.interrupt import HANGUP

__all__ = [
    "BENCHMARKS",
    "GYM_IDS",
    "MT10_TASKS",
    "PROTOCOLS",
    "Protocol",
    "env_state",
    "load_env_state",
    "make_mt_envs",
]

#: Our benchmark names → the gymnasium ids registered by ``import metaworld``.
GYM_IDS: dict[str, str] = {
    "MT1": "Meta-World/MT1",
    "MT10": "Meta-World/MT10",
    "MT25": "Meta-World/MT25",
    "MT50": "Meta-World/MT50",
    "custom": "Meta-World/custom-mt-envs",
}
#: The Meta-World benchmark names :func:`make_mt_envs` accepts.
BENCHMARKS: tuple[str, ...] = METAWORLD_BENCHMARKS
VECTOR_STRATEGIES = ("sync", "async")
#: MT10 task names in env-index (= one-hot) order, Meta-World v3 ``env_dict.MT10_V3``.
MT10_TASKS: tuple[str, ...] = (
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


def make_mt_envs(
    benchmark: MetaWorldBenchmark,
    protocol: str | Protocol = "metaworld-v3",
    seed: int = 0,
    vector_strategy: Literal["sync", "async"] = "sync",
    use_one_hot: bool = True,
    *,
    tasks: Sequence[str] | None = None,
    max_episode_steps: int | None = None,
) -> MultiTaskVecEnv:
    """Build the T Meta-World sub-envs of a task set (env ``t`` = task ``t`` = one-hot index ``t``).

    Args:
        benchmark: ``"MT1"``, ``"MT10"``, ``"MT25"``, ``"MT50"`` or ``"custom"`` (:mod:`envs.task_sets`).
        protocol: the :class:`~envs.protocols.Protocol` (what a run passes: its resolved config's
            ``TrainConfig.protocol``), or a name from :data:`envs.protocols.PROTOCOLS`
            (``"metaworld-v3"``, ``"mtrl-legacy"``), looked up here for callers that hold a user's name.
        seed: a non-negative int; seeds the goal sets and every sub-env (the only seed Meta-World
            honours). Under ``mtrl-legacy`` the fixed goals are drawn from it, so evaluation envs
            built with the training seed get the training goals (as mtrl did).
        vector_strategy: ``"sync"`` (faster on 2 cores) or ``"async"`` (one process per task). The
            async worker processes ignore SIGINT and SIGHUP (they are started with both ignored), so a
            Ctrl-C or a closed terminal, which reach the whole process group, only ask the trainer to
            stop cleanly and the workers stay alive for the final checkpoint. (SIGTERM is not ignored:
            it is how gymnasium and multiprocessing end a worker that does not close.)
        use_one_hot: append the task one-hot ``(T,)`` to observations.
        tasks: ``MT1``: exactly one task name; ``custom``: its task names; the fixed benchmarks
            take None (or their own list).
        max_episode_steps: override the protocol's episode length (tests, debugging; the result is
            no longer the named protocol, and ``protocol.name`` says so:
            ``"metaworld-v3[max_episode_steps=100]"``).

    Returns:
        :class:`~envs.vector.MultiTaskVecEnv`: observations ``(T, 39 [+ T])`` float32, actions
        ``(T, 4)`` in ``[-1, 1]``, ``task_names`` like ``("reach-v3", "push-v3", ...)``. Under
        ``mtrl-legacy`` the envs have already been reset once (to draw the fixed goals); resetting
        again keeps the goals.
    """
    names = resolve_tasks(benchmark, tasks)
    if vector_strategy not in VECTOR_STRATEGIES:
        raise ValueError(f"unknown vector_strategy {vector_strategy!r}; valid choices: {', '.join(VECTOR_STRATEGIES)}")
    spec = protocol if isinstance(protocol, Protocol) else get_protocol(protocol)  # a name: the edge lookup
    if spec.reward_function_version is None:
        raise ValueError(f"protocol {spec.name!r} is not a Meta-World protocol; valid choices: {', '.join(PROTOCOLS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise TypeError(f"seed must be a non-negative int (Meta-World ignores reset(seed=)), got {seed!r}")
    steps = spec.max_episode_steps if max_episode_steps is None else max_episode_steps
    if not 1 <= steps <= 500:
        raise ValueError(f"max_episode_steps must be in [1, 500] (Meta-World's own limit), got {steps}")

    gym = _import_metaworld()
    env_kwargs: dict[str, Any] = {
        "max_episode_steps": steps,
        "reward_function_version": spec.reward_function_version,
        "terminate_on_success": False,
    }
    if spec.reward_normalization is not None:
        env_kwargs["reward_normalization_method"] = spec.reward_normalization
    with warnings.catch_warnings(), _workers_ignore_stop_signals(vector_strategy == "async"):
        # Meta-World's float64 bounds are cast to the float32 Box of the vector env; harmless.
        warnings.filterwarnings("ignore", message=r".*precision lowered by casting to float32")
        vec = _make_vec(gym, benchmark, names, seed, vector_strategy, use_one_hot, env_kwargs)
    task_names = _task_names(vec.get_attr("task_name"))
    if task_names != names:
        raise RuntimeError(f"Meta-World built tasks {list(task_names)} for {benchmark}, expected {list(names)}")
    if not spec.random_goals:
        vec.reset()  # draws one goal per sub-env from the seeded task RNG
        vec.call("toggle_sample_tasks_on_reset", False)
    shape = vec.single_observation_space.shape
    assert shape is not None
    obs_dim = int(shape[0]) - (len(task_names) if use_one_hot else 0)
    if max_episode_steps is not None and max_episode_steps != spec.max_episode_steps:
        # No longer the named protocol: say so in its name (stamped into env states and logs).
        spec = dataclasses.replace(
            spec, name=f"{spec.name}[max_episode_steps={max_episode_steps}]", max_episode_steps=max_episode_steps
        )
    return MultiTaskVecEnv(
        vec,
        task_names=task_names,
        obs_dim=obs_dim,
        use_one_hot=use_one_hot,
        protocol=spec,
        benchmark=benchmark,
        seed=seed,
    )


def _make_vec(
    gym: Any,
    benchmark: str,
    tasks: tuple[str, ...],
    seed: int,
    vector_strategy: str,
    use_one_hot: bool,
    env_kwargs: dict[str, Any],
) -> Any:
    """``gymnasium.make_vec`` with each id's own arguments (see the module docstring for the traps)."""
    gym_id = GYM_IDS[benchmark]
    if benchmark == "MT1":
        return gym.make_vec(
            gym_id,
            num_envs=1,
            vectorization_mode=vector_strategy,
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            env_name=tasks[0],
            seed=seed,
            use_one_hot=use_one_hot,
            env_id=0,  # required with use_one_hot=True (one-hot of size 1)
            disable_env_checker=True,
            **env_kwargs,
        )
    if benchmark == "custom":
        return gym.make_vec(
            gym_id,
            vector_strategy=vector_strategy,
            envs_list=list(tasks),
            seed=seed + 1,  # custom-mt-envs treats 0 as "no seed"
            use_one_hot=use_one_hot,
            **env_kwargs,
        )
    return gym.make_vec(gym_id, vector_strategy=vector_strategy, seed=seed, use_one_hot=use_one_hot, **env_kwargs)


#: The stop signals async workers are started with ignored: those a terminal sends the whole process group.
WORKER_IGNORED_SIGNALS: tuple[int, ...] = (signal.SIGINT, *HANGUP)


@contextlib.contextmanager
def _workers_ignore_stop_signals(active: bool) -> Iterator[None]:
    """Ignore :data:`WORKER_IGNORED_SIGNALS` (SIGINT, SIGHUP) while the async workers start, so they inherit
    SIG_IGN; restore the handlers afterwards.

    Without this a Ctrl-C or a terminal's hangup reaches every worker (same process group), gymnasium's
    worker loop catches the KeyboardInterrupt and closes its env (or SIGHUP kills it), and the trainer's clean
    stop (checkpoint: env state) then talks to dead workers. A fresh interpreter (spawn/forkserver) keeps an
    inherited SIG_IGN too. No-op outside the main thread (signal handlers can only be changed there).
    """
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in WORKER_IGNORED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _import_metaworld() -> Any:
    """Import gymnasium with the Meta-World ids registered; one-line error if Meta-World is missing."""
    try:
        import gymnasium
        import metaworld  # noqa: F401  (registers "Meta-World/*")
    except ImportError as err:
        raise ImportError(f"Meta-World envs need `pip install 'metaworld>=3.1,<4' packaging` ({err})") from err
    return gymnasium


def _task_names(class_names: tuple[str, ...]) -> tuple[str, ...]:
    """Sub-env class names (``SawyerReachEnvV3``) → task names (``reach-v3``), as Meta-World's evaluation names them."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    by_class = {cls.__name__: name for name, cls in ALL_V3_ENVIRONMENTS.items()}
    return tuple(by_class[name] for name in class_names)
