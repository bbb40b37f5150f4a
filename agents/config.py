"""Typed configuration of a multi-task SAC run (loaded with :func:`mtrl.config.load_config`).

Every field documents its default and where the default comes from. Presets live in
``configs/{mt10,mt50,toy}_sac.yaml``; ``scripts/train.py CONFIG key=value ...`` overrides any field
with dotted keys (``sac.batch_per_task=64``). Unknown keys and bad values fail at start-up.

Resolution happens once: :meth:`TrainConfig.resolve` (called by :func:`mtrl.config.load_config`)
fills the balancers, the task list, the device this machine uses, the evaluation episodes and
cadence and ``protocol_details``; it is the only place a run looks up its protocol
(:func:`envs.protocols.get_protocol`) or its device (:func:`mtrl.device.resolve_device_name`). The
resolved config then carries everything later code needs: :attr:`TrainConfig.protocol` rebuilds the
run's :class:`~envs.protocols.Protocol` from ``protocol_details`` and :func:`balancer_notes` the notes
on the automatic balancer choices, both without a lookup.

This module re-exports three modules, one job each:

* :mod:`agents.train_config` — the schema (:class:`TrainConfig`, :class:`EnvConfig`, :class:`SACConfig`);
* :mod:`agents.balancer_policy` — SAC's balancer policy (:func:`resolve_balancers`, :func:`balancer_notes`,
  :func:`build_balancers`);
* :mod:`agents.resolution` — protocol and device resolution (:func:`resolve_config`, :func:`protocol_details`).
"""

from __future__ import annotations

from agents.balancer_policy import balancer_notes, build_balancers, resolve_balancers
from agents.resolution import protocol_details, resolve_config
from agents.train_config import EnvConfig, SACConfig, TrainConfig, num_tasks_of
from mtrl.device import resolve_device_name

__all__ = [
    "EnvConfig",
    "SACConfig",
    "TrainConfig",
    "balancer_notes",
    "build_balancers",
    "num_tasks_of",
    "protocol_details",
    "resolve_balancers",
    "resolve_config",
    "resolve_device_name",
]
