"""Per-task success-rate evaluation of a multi-task agent under a protocol.

The agent only needs Meta-World's two-method protocol (``metaworld.evaluation.Agent``)::

    agent.eval_action(obs: np.ndarray (T, D)) -> np.ndarray (T, A)   # D = obs_dim [+ T one-hot]
    agent.reset(env_mask: np.ndarray (T,) bool) -> None              # episodes that just ended

Two evaluators (:attr:`envs.protocols.Protocol.evaluator`):

* ``"metaworld"`` (metaworld-v3): the official ``metaworld.evaluation.evaluation(agent, envs,
  num_episodes)`` unchanged. It switches ``terminate_on_success`` on for the duration (so success =
  "any success in the episode"), resamples a goal at every reset, and counts the first
  ``num_episodes`` episodes of each task.
* ``"episodes"`` (mtrl-legacy, toy suite): mtrl's ``evaluate_vec_env_of_tasks`` loop: every sub-env
  runs ``episodes_per_task`` full episodes (until truncation, or termination if the env terminates);
  an episode is a success if ``info["success"]`` is set at any of its steps.

Both start with ``envs.reset()``, so the same eval envs can be evaluated repeatedly; they are left
mid-episode afterwards, so do not share them with training (or reset them before training on them).
Returns are undiscounted sums of the env's rewards (normalised rewards under mtrl-legacy).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np

from envs.protocols import Protocol as EnvProtocol
from envs.vector import MultiTaskVecEnv, step_transitions

__all__ = ["EvalAgent", "EvalResult", "evaluate"]


class EvalAgent(Protocol):
    """What :func:`evaluate` needs from an agent (= ``metaworld.evaluation.Agent``)."""

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        """Actions ``(T, A)`` for observations ``(T, D)``."""
        ...

    def reset(self, env_mask: np.ndarray) -> None:
        """Forget per-episode memory of the sub-envs where ``env_mask (T,)`` is True."""
        ...


class EvalResult(NamedTuple):
    """Outcome of one evaluation, tasks in env-index order.

    Attributes:
        success_per_task: ``(T,)`` fraction of successful episodes per task, in [0, 1].
        success_mean: mean of ``success_per_task`` (the number papers report).
        return_per_task: ``(T,)`` mean undiscounted episode return per task.
        episodes_per_task: episodes evaluated per task.
    """

    success_per_task: np.ndarray
    success_mean: float
    return_per_task: np.ndarray
    episodes_per_task: int

    def scalars(self, task_names: tuple[str, ...] | list[str], prefix: str = "eval") -> dict[str, float]:
        """``{prefix}/success_mean``, ``{prefix}/success/<task>``, ``{prefix}/return/<task>``."""
        if len(task_names) != len(self.success_per_task):
            raise ValueError(f"{len(task_names)} task names for {len(self.success_per_task)} tasks")
        out = {f"{prefix}/success_mean": self.success_mean}
        for name, success, ret in zip(task_names, self.success_per_task, self.return_per_task, strict=True):
            out[f"{prefix}/success/{name}"] = float(success)
            out[f"{prefix}/return/{name}"] = float(ret)
        return out


def evaluate(
    agent: EvalAgent,
    eval_envs: MultiTaskVecEnv,
    protocol: EnvProtocol | None = None,
    episodes_per_task: int | None = None,
) -> EvalResult:
    """Evaluate ``agent`` on every task of ``eval_envs`` under ``protocol``.

    Args:
        agent: see :class:`EvalAgent`; act deterministically if ``protocol.deterministic_eval``.
        eval_envs: evaluation envs (built separately from the training envs; under mtrl-legacy with
            the training seed, so that they hold the training goals).
        protocol: the :class:`~envs.protocols.Protocol`; None = ``eval_envs.protocol`` (the protocol
            the envs were built for).
        episodes_per_task: None = ``protocol.eval_episodes_per_task``.

    Returns:
        :class:`EvalResult` with ``success_per_task (T,)`` in [0, 1].
    """
    spec = eval_envs.protocol if protocol is None else protocol
    episodes = spec.eval_episodes_per_task if episodes_per_task is None else episodes_per_task
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes_per_task must be a positive int, got {episodes!r}")
    if spec.evaluator == "metaworld":
        return _evaluate_metaworld(agent, eval_envs, episodes)
    return _evaluate_episodes(agent, eval_envs, episodes)


def _evaluate_metaworld(agent: EvalAgent, eval_envs: MultiTaskVecEnv, episodes: int) -> EvalResult:
    """``metaworld.evaluation.evaluation``; its per-task dicts are re-ordered to env-index order."""
    from metaworld.evaluation import evaluation

    _, _, success_by_name, returns_by_name = evaluation(agent, eval_envs, num_episodes=episodes)  # type: ignore[arg-type]
    names = eval_envs.task_names
    if set(success_by_name) != set(names):
        raise ValueError(f"Meta-World evaluated tasks {sorted(success_by_name)}, envs have {list(names)}")
    success_T = np.array([success_by_name[name] for name in names], dtype=np.float64)
    return_T = np.array([np.mean(returns_by_name[name]) for name in names], dtype=np.float64)
    return EvalResult(success_T, float(success_T.mean()), return_T, episodes)


def _evaluate_episodes(agent: EvalAgent, eval_envs: MultiTaskVecEnv, episodes: int) -> EvalResult:
    """mtrl's loop: ``episodes`` episodes per sub-env, success = any step with ``info["success"]``."""
    num_tasks = eval_envs.num_envs
    obs, _ = eval_envs.reset()
    agent.reset(np.ones(num_tasks, dtype=bool))
    finished_T = np.zeros(num_tasks, dtype=np.int64)
    successes_T = np.zeros(num_tasks)
    returns_T = np.zeros(num_tasks)
    episode_success_T = np.zeros(num_tasks, dtype=bool)
    episode_return_T = np.zeros(num_tasks)
    while (finished_T < episodes).any():
        actions: Any = agent.eval_action(obs)
        step = step_transitions(eval_envs, actions)
        episode_success_T |= step.success
        episode_return_T += step.reward
        counted_T = step.done & (finished_T < episodes)
        successes_T += counted_T * episode_success_T
        returns_T += np.where(counted_T, episode_return_T, 0.0)
        finished_T += counted_T
        episode_success_T[step.done] = False
        episode_return_T[step.done] = 0.0
        agent.reset(step.done)
        obs = step.obs
    success_T = successes_T / episodes
    return EvalResult(success_T, float(success_T.mean()), returns_T / episodes, episodes)
