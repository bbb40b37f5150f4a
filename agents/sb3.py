"""stable-baselines3's SAC set up like our multi-task SAC: the trusted single-task reference.

One place builds the reference so that every comparison uses the same settings: the single-task
row (:mod:`agents.stl`, ``scripts/train_stl.py``), the A/B learning harness (``scripts/bench_learning.py``), the update
benchmark and the update-equivalence test. :func:`make_sb3_sac` maps a :class:`~agents.config.SACConfig`
onto ``stable_baselines3.SAC`` argument by argument:

======================== ===========================================================================
``SACConfig``            stable-baselines3 ``SAC``
======================== ===========================================================================
``hidden_sizes``         ``policy_kwargs.net_arch`` (ReLU MLPs, separate actor and twin critics)
``*_hidden_sizes``       ``policy_kwargs.net_arch = {pi, qf}`` (actor, critic widths when they differ)
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

The run loop of :mod:`agents.stl` reaches into an SB3 model only through the functions at the end of
this module (:func:`step_callback`, :func:`silence_logger`, :func:`last_train_values` on public API;
:func:`restart_episode` and :func:`num_updates` on the two private attributes SB3 offers no public
access to), so a new SB3 version is checked in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import SACConfig
from envs.protocols import Protocol
from envs.vector import MultiTaskVecEnv

__all__ = [
    "SB3_CHECKED_VERSION",
    "SB3_REBUILT_ENTRIES",
    "SB3EvalAgent",
    "import_sb3",
    "last_train_values",
    "load_sb3_replay",
    "load_sb3_sac",
    "make_sb3_sac",
    "make_task_env",
    "make_task_eval_env",
    "num_updates",
    "reference_differences",
    "restart_episode",
    "silence_logger",
    "step_callback",
]


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
    clips = {name: sac.clip_of(name) for name in ("actor", "critic")}
    if any(clip is not None for clip in clips.values()):
        out.append(f"gradient clipping {clips}: SB3's SAC does not clip gradients")
    eps = {"actor": sac.actor_adam_eps, "critic": sac.critic_adam_eps, "alpha": sac.alpha_adam_eps}
    if any(value != 1e-8 for value in eps.values()):
        out.append(f"Adam eps {eps}: SB3 uses torch's default 1e-8")
    if sac.tanh_log_det != "epsilon":
        out.append(f"tanh_log_det={sac.tanh_log_det!r}: SB3 uses log(1 - tanh(u)^2 + 1e-6)")
    if sac.trunk_init != "torch" or sac.actor_head_init is not None or sac.critic_head_init is not None:
        out.append("trunk_init/actor_head_init/critic_head_init: SB3's SAC keeps torch's nn.Linear initialisation")
    if sac.layer_norm or sac.skip_connections:
        out.append("layer_norm/skip_connections: SB3's MlpPolicy has plain Linear-ReLU networks")
    return out


def _net_arch(sac: SACConfig) -> list[int] | dict[str, list[int]]:
    """SB3's ``net_arch``: one list for both networks, or ``{pi, qf}`` when their widths differ."""
    if sac.actor_widths == sac.critic_widths:
        return list(sac.actor_widths)
    return {"pi": list(sac.actor_widths), "qf": list(sac.critic_widths)}


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
        policy_kwargs={"net_arch": _net_arch(sac)},  # ReLU, SB3's SAC default activation
        seed=seed,
        device=device,
        verbose=verbose,
    )


#: The entries of a stable-baselines3 ``model.zip`` that SB3 stores cloudpickled (``":serialized:"`` in its
#: ``data`` member). :func:`load_sb3_sac` never unpickles them: it passes SB3 the values of a model built afresh
#: from the run's settings (classes, spaces, schedules), or None for the interrupted episode's observations,
#: which a resume resets anyway (:func:`restart_episode`), and the episode-statistics queues, which only SB3's
#: own console log reads (silenced here, :func:`silence_logger`; they restart empty).
SB3_REBUILT_ENTRIES = frozenset({
    "policy_class", "observation_space", "action_space", "replay_buffer_class", "train_freq", "lr_schedule",
    "_last_obs", "_last_original_obs", "_last_episode_starts", "ep_info_buffer", "ep_success_buffer",
})  # fmt: skip
_RESET_ENTRIES = ("_last_obs", "_last_original_obs", "_last_episode_starts", "ep_info_buffer", "ep_success_buffer")
#: The arrays of an SB3 ``ReplayBuffer`` that :func:`load_sb3_replay` copies (with ``pos`` and ``full``).
_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _serialized_entries(path: Path) -> set[str]:
    """The keys of ``model.zip``'s ``data`` that SB3 would unpickle (read as JSON, nothing unpickled)."""
    import json
    import zipfile

    from mtrl.checkpoint_io import CheckpointError

    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except FileNotFoundError as err:
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist") from err
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"checkpoint file {str(path)!r} is truncated or corrupt ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint file {str(path)!r} is corrupt (its data is not a JSON object)")
    return {key for key, value in data.items() if isinstance(value, dict) and ":serialized:" in value}


def load_sb3_sac(
    path: str | Path, env: Any, sac: SACConfig, seed: int, device: str = "cpu", buffer_size: int | None = None
) -> Any:
    """``stable_baselines3.SAC.load(path, env)`` without unpickling anything from ``path``.

    SB3's ``model.zip`` holds the networks and optimisers as ``.pth`` members (SB3 reads them with
    ``torch.load(weights_only=True)``) and the rest as JSON, where classes, spaces and schedules are cloudpickled.
    Every such entry is replaced (SB3's ``custom_objects``) by the value of a model built by :func:`make_sb3_sac`
    from the same settings (:data:`SB3_REBUILT_ENTRIES`); an entry outside that set is refused. ``SAC.load``
    re-seeds the model from its saved seed, so the result continues exactly like SB3's own ``SAC.load``.

    Raises:
        CheckpointError: the file is truncated or corrupt, or does not fit ``sac``; UntrustedCheckpointError
            (a subclass) when it holds an unexpected pickled entry or a ``.pth`` member that is not plain data.
    """
    import pickle

    from mtrl.checkpoint_io import CheckpointError, UntrustedCheckpointError

    path = Path(path)
    serialized = _serialized_entries(path)
    unknown = sorted(serialized - SB3_REBUILT_ENTRIES)
    if unknown:
        raise UntrustedCheckpointError(
            f"refusing to load {str(path)!r}: it holds pickled entries this loader does not rebuild ({unknown})"
        )
    fresh = make_sb3_sac(env, sac, seed=seed, device=device, buffer_size=buffer_size)
    custom = {key: None if key in _RESET_ENTRIES else getattr(fresh, key) for key in serialized}
    try:
        return import_sb3().SAC.load(path, env=env, device=device, custom_objects=custom)
    except pickle.UnpicklingError as err:
        raise UntrustedCheckpointError(
            f"refusing to load {str(path)!r}: a member is not plain data ({str(err).strip().splitlines()[-1]})"
        ) from err
    except (RuntimeError, ValueError, KeyError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"cannot load {str(path)!r} ({type(err).__name__}: {first})") from err


def load_sb3_replay(model: Any, path: str | Path) -> None:
    """Fill ``model``'s replay buffer from an SB3 ``save_replay_buffer`` file, as ``load_replay_buffer`` would,
    without running anything the file names: it is read by :func:`mtrl.checkpoint_io.load_pickle` with the
    allowlist :data:`~mtrl.checkpoint_io.SB3_REPLAY_GLOBALS`, and only its arrays, ``pos`` and ``full`` are
    copied into the buffer ``model`` built.

    Raises:
        CheckpointError: the file is truncated, corrupt or refused as untrusted, or its arrays do not fit.
    """
    from mtrl.checkpoint_io import SB3_REPLAY_GLOBALS, CheckpointError, load_pickle

    loaded = load_pickle(path, SB3_REPLAY_GLOBALS)
    buffer = model.replay_buffer
    if type(loaded) is not type(buffer):
        raise CheckpointError(f"{str(path)!r} holds a {type(loaded).__name__}, not a {type(buffer).__name__}")
    for name in _REPLAY_ARRAYS:
        have, want = getattr(loaded, name, None), getattr(buffer, name)
        if not (isinstance(have, np.ndarray) and have.shape == want.shape and have.dtype == want.dtype):
            raise CheckpointError(f"replay buffer {str(path)!r}: {name} does not fit this model's buffer")
        want[...] = have
    buffer.pos, buffer.full = int(loaded.pos), bool(loaded.full)


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


# --- the run loop's access to an SB3 model ------------------------------------------------------
#: The stable-baselines3 version the private accesses below (:func:`restart_episode`,
#: :func:`num_updates`) were checked against (``BaseAlgorithm._setup_learn``, ``SAC.train``).
SB3_CHECKED_VERSION = "2.9.2"


def step_callback(on_step: Callable[[int], bool]) -> Any:
    """An SB3 ``BaseCallback`` that calls ``on_step(num_timesteps)`` after every environment step;
    ``on_step`` returning False stops ``learn`` (public API: ``stable_baselines3.common.callbacks``)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _StepCallback(BaseCallback):
        def _on_step(self) -> bool:
            return on_step(int(self.num_timesteps))

    return _StepCallback()


def silence_logger(model: Any) -> None:
    """Give ``model`` a logger that writes nothing: the run reads its values (:func:`last_train_values`)
    and ``learn(log_interval=None)`` never dumps (so never clears) them."""
    from stable_baselines3.common.logger import Logger as SB3Logger

    model.set_logger(SB3Logger(folder=None, output_formats=[]))


def last_train_values(model: Any) -> dict[str, Any]:
    """The latest values ``SAC.train`` recorded (``train/critic_loss``, ``train/actor_loss``,
    ``train/ent_coef``, ``train/ent_coef_loss``, ...); empty before the first update (public:
    ``Logger.name_to_value``)."""
    return dict(model.logger.name_to_value)


def restart_episode(model: Any) -> None:
    """Make the next ``learn`` start from ``env.reset()`` without resetting ``num_timesteps``.

    Private access, needed for resume: ``SAC.load`` restores the saved ``_last_obs`` (the observation
    of the interrupted episode), but the freshly built env has not been reset, so continuing from that
    observation would be wrong. ``BaseAlgorithm._setup_learn`` resets the env when ``_last_obs is
    None``; the only public way to get that reset, ``learn(reset_num_timesteps=True)``, also restarts
    the step count."""
    model._last_obs = None


def num_updates(model: Any) -> int:
    """Gradient updates ``model`` has done in its life (``SAC._n_updates``, saved with the model).

    Private access: SB3 publishes the count only as the logged ``train/n_updates``, which a model
    reloaded from a checkpoint has not recorded until its first update after the load."""
    return int(model._n_updates)
