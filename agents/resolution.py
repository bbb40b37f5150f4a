"""Resolution of a :class:`~agents.train_config.TrainConfig`: what the trainer saves as ``config.yaml``.

:func:`resolve_train_config` (what :meth:`TrainConfig.resolve <agents.train_config.TrainConfig.resolve>` and
so :func:`mtrl.config.load_config` call) fills the balancers (:mod:`agents.balancer_policy`), the task list,
the device this machine uses, the evaluation episodes and cadence and ``protocol_details``; it is the only
place a run looks up its protocol (:func:`envs.protocols.get_protocol`) or its device
(:func:`mtrl.device.resolve_device_name`). The resolved config then carries everything later code needs.
:mod:`agents.config` re-exports it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from agents.balancer_policy import balancer_notes, resolve_group_balancers
from envs.protocols import TOY_PROTOCOL, Protocol, get_protocol
from mtrl.config import ConfigError
from mtrl.device import resolve_device_name

if TYPE_CHECKING:
    from agents.train_config import TrainConfig

__all__ = ["protocol_details", "resolve_config", "resolve_train_config"]


def _protocol_spec(cfg: TrainConfig) -> Protocol:
    """The named protocol of ``cfg.env`` (toy: with ``env.toy_episode_steps``): the run's one protocol lookup."""
    if cfg.env.benchmark == "toy":
        return dataclasses.replace(TOY_PROTOCOL, max_episode_steps=cfg.env.toy_episode_steps)
    return get_protocol(cfg.env.protocol)


def protocol_details(cfg: TrainConfig) -> dict[str, Any]:
    """What ``env.protocol`` fixes for this run (the ``protocol_details`` stamped into config and hparams;
    :meth:`envs.protocols.Protocol.details` with the run's evaluation episodes and cadence)."""
    return _protocol_spec(cfg).details(cfg.eval_episodes, cfg.eval_every)


def resolve_config(cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """Everything the trainer saves as config.yaml: balancers (:func:`resolve_balancers`), the task
    list (``env.tasks``, in env order), the device this machine will use, the evaluation episodes and
    cadence, and ``protocol_details``; with the :func:`balancer_notes` of the result. Raises
    :class:`ConfigError` on any bad value; touches no file and builds no env.
    :meth:`TrainConfig.resolve` (what :func:`mtrl.config.load_config` calls) is the same without notes."""
    resolved = resolve_train_config(cfg)
    return resolved, balancer_notes(resolved)


def resolve_train_config(cfg: TrainConfig) -> TrainConfig:
    """:meth:`TrainConfig.resolve <agents.train_config.TrainConfig.resolve>`: the one place a run looks up its
    protocol and its device (:func:`resolve_config` without the notes)."""
    cfg = resolve_group_balancers(cfg)
    if cfg.env.benchmark != "toy":  # the task list is stamped into config.yaml and the hparams
        cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, tasks=cfg.env.task_names))
    device = resolve_device_name(cfg.device)
    spec = _protocol_spec(cfg)
    eval_episodes = cfg.eval_episodes or spec.eval_episodes_per_task
    eval_every = spec.eval_every if cfg.eval_every is None else cfg.eval_every
    details = spec.details(eval_episodes, eval_every)
    given = cfg.protocol_details
    if given and given != details:
        differing = sorted(k for k in set(details) | set(given) if given.get(k) != details.get(k))
        raise ConfigError(
            f"protocol_details {differing} differ from what env.protocol={cfg.env.protocol!r} implies; "
            f"protocol_details is written when the config is resolved: leave it empty"
        )
    return dataclasses.replace(
        cfg, device=device, eval_episodes=eval_episodes, eval_every=eval_every, protocol_details=details
    )
