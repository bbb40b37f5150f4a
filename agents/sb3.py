"""stable-baselines3's SAC set up like our multi-task SAC: the trusted single-task reference.

One place builds the reference so that every comparison uses the same settings: the single-task
row (``scripts/train_stl.py``), the A/B learning harness (``scripts/bench_learning.py``), the update
benchmark and the update-equivalence test. :func:`make_sb3_sac` maps a :class:`~agents.config.SACConfig`
onto ``stable_baselines3.SAC`` argument by argument:

======================== ===========================================================================
``SACConfig``            stable-baselines3 ``SAC``
======================== ===========================================================================
``hidden_sizes``         ``policy_kwargs.net_arch`` (ReLU MLPs, separate actor and twin critics)
``lr``                   ``learning_rate`` (actor, critics **and** temperature: SB3 has one rate)
``batch_per_task``       ``batch_size``
``buffer_capacity``      ``buffer_size`` (unless a per-task capacity is given)
``warmup_steps``         ``learning_starts`` (uniform random actions first, then one update per step)
``updates_per_step``     ``gradient_steps`` with ``train_freq=1``
``gamma``, ``tau``       ``gamma``, ``tau``
``init_temperature``     ``ent_coef="auto_<value>"`` with ``target_entropy="auto"`` (−|A|)
======================== ===========================================================================

:func:`reference_differences` names what a config asks for that SB3 cannot do (a separate
temperature learning rate, gradient clipping), so a comparison states them instead of hiding them.
Each Meta-World task is the same env our agent trains on: sub-env 0 of
``envs.make_mt_envs("MT1", tasks=[task])`` without the one-hot (:func:`make_task_env`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.config import SACConfig
from envs.protocols import Protocol
from envs.vector import MultiTaskVecEnv

__all__ = ["SB3EvalAgent", "import_sb3", "make_sb3_sac", "make_task_env", "make_task_eval_env", "reference_differences"]


def import_sb3() -> Any:
    """The ``stable_baselines3`` module, or a one-line error naming the extra that brings it."""
    try:
        import stable_baselines3
    except ImportError as err:
        raise ImportError(f"the stable-baselines3 reference needs `pip install -e '.[stl]'` ({err})") from err
    return stable_baselines3


def make_task_eval_env(task: str, protocol: str | Protocol, seed: int) -> MultiTaskVecEnv:
    """``MT1(task)`` as a one-task vector env without the one-hot (SB3 sees 39-d observations).

    Built with the same ``make_vec`` seed as our agent's ``MT1`` env, so both see the same goals in
    the same order (the one-hot does not touch the goal RNG)."""
    from envs.metaworld import make_mt_envs

    return make_mt_envs("MT1", protocol=protocol, seed=seed, vector_strategy="sync", use_one_hot=False, tasks=[task])


def make_task_env(task: str, protocol: str | Protocol, seed: int) -> Any:
    """One Meta-World task as a plain ``gymnasium.Env`` for SB3 (observations ``(39,)``): sub-env 0
    of :func:`make_task_eval_env`, with the wrappers, episode length, reward and goals of our runs."""
    vec = make_task_eval_env(task, protocol, seed).vec_env
    return vec.envs[0]  # type: ignore[attr-defined]


def reference_differences(sac: SACConfig) -> list[str]:
    """What ``sac`` asks for that stable-baselines3's SAC does not do (empty: an exact reference)."""
    out = []
    if sac.alpha_lr != sac.lr:
        out.append(f"temperature lr {sac.alpha_lr} != network lr {sac.lr}: SB3 uses {sac.lr} for both")
    if sac.grad_clip is not None:
        out.append(f"grad_clip={sac.grad_clip}: SB3's SAC does not clip gradients")
    return out


def make_sb3_sac(
    env: Any, sac: SACConfig, seed: int, device: str = "cpu", buffer_size: int | None = None, verbose: int = 0
) -> Any:
    """``stable_baselines3.SAC("MlpPolicy", env, ...)`` with the settings of ``sac`` (table above).

    Args:
        env: a gymnasium env (or SB3 VecEnv) with Box spaces.
        sac: network, optimiser and schedule settings.
        seed: SB3's seed (torch, numpy, action-space sampling).
        device: torch device name.
        buffer_size: replay capacity; None = ``sac.buffer_capacity``.
    """
    sb3 = import_sb3()
    return sb3.SAC(
        "MlpPolicy",
        env,
        learning_rate=sac.lr,
        buffer_size=sac.buffer_capacity if buffer_size is None else buffer_size,
        learning_starts=sac.warmup_steps,
        batch_size=sac.batch_per_task,
        tau=sac.tau,
        gamma=sac.gamma,
        train_freq=1,
        gradient_steps=sac.updates_per_step,
        ent_coef=f"auto_{sac.init_temperature}",
        target_entropy="auto",  # −|A|, as our agent
        policy_kwargs={"net_arch": list(sac.hidden_sizes)},  # ReLU, SB3's SAC default activation
        seed=seed,
        device=device,
        verbose=verbose,
    )


class SB3EvalAgent:
    """``metaworld.evaluation.Agent`` for one SB3 model: ``eval_action(obs (1, 39)) -> (1, 4)``,
    the deterministic action ``tanh(μ)`` rescaled to the action bounds."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def eval_action(self, observations: np.ndarray) -> np.ndarray:
        action, _ = self.model.predict(np.asarray(observations, dtype=np.float32), deterministic=True)
        return np.asarray(action, dtype=np.float64)

    def reset(self, env_mask: np.ndarray) -> None:
        return None
