"""SAC's balancer policy: which balancer, with which hyper-parameters, weighs each of the two loss groups
(critic and actor) of a :class:`~agents.train_config.TrainConfig`.

:func:`resolve_balancers` fills and checks ``critic_balancer``/``actor_balancer`` and their hyper-parameters
(rules in its docstring), :func:`balancer_notes` explains the automatic choices from a resolved config alone,
and :func:`build_balancers` builds the two instances. Part of :meth:`TrainConfig.resolve
<agents.train_config.TrainConfig.resolve>` (:mod:`agents.resolution`); :mod:`agents.config` re-exports it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from mtrl.balancers import BALANCERS, Balancer, balancer_hparams, make_balancer
from mtrl.config import ConfigError

if TYPE_CHECKING:
    from agents.train_config import TrainConfig

__all__ = ["balancer_notes", "build_balancers", "resolve_balancers", "resolve_group_balancers"]


#: Balancers that wrap a ``base`` balancer (hyper-parameters ``base``, default "ew", and ``base_hparams``).
_WRAPPERS = ("dgr", "alpha_weights")


def _base_name(name: str, hp: dict[str, Any]) -> str:
    """The balancer that actually weighs the losses (``dgr`` and ``alpha_weights`` wrap ``base``, default "ew")."""
    if name in _WRAPPERS:
        base = hp.get("base", "ew")
        return base if isinstance(base, str) else "ew"
    return name


def _group_hparams(cfg: TrainConfig, group: str, name: str) -> dict[str, Any]:
    explicit = getattr(cfg, f"{group}_balancer_hparams")
    if explicit is not None:
        return dict(explicit)
    return dict(cfg.balancer_hparams) if name == cfg.balancer else {}


def _adapt(name: str, hp: dict[str, Any], key: str, seed: int) -> dict[str, Any]:
    """Fill the SAC-specific hyper-parameters of one group's balancer (``key`` names the config key)."""
    hp = dict(hp)
    # balancers that need the engine's features= (mgda_ub, aligned_mtl_ub): SAC has no single shared
    # representation (the twin critics have two trunks; the actor's features are not what the critics see)
    if getattr(BALANCERS.get(name), "representation_required", False):
        raise ConfigError(
            f"balancer {name!r} ({key}) needs one shared representation (the engine's features=), which SAC "
            f"does not have (twin critics with two trunks); use its parameter-level version "
            f"{name.removesuffix('_ub')!r} instead"
        )
    defaults = balancer_hparams(name) if name in BALANCERS else {}
    if "seed" in defaults and "seed" not in hp:
        hp["seed"] = seed  # randomised balancers (pcgrad, rlw, graddrop; dgr's dummy heads) follow the run seed
    if "representation_level" in defaults:  # imtl (paper default: feature level), imtl_g
        if hp.get("representation_level", False) is True:
            raise ConfigError(
                f"bad value representation_level=true in {key} for {name!r}: SAC has no shared representation; "
                f"valid choice: false (parameter level, the default here)"
            )
        hp["representation_level"] = False  # noted by balancer_notes
    if name in _WRAPPERS and isinstance(hp.get("base", "ew"), str):
        base = hp.get("base", "ew")
        if base in BALANCERS and base not in _WRAPPERS:
            hp["base_hparams"] = _adapt(base, dict(hp.get("base_hparams") or {}), f"{key}.base_hparams", seed)
    return hp


def _check_buildable(name: str, hp: dict[str, Any], key: str, num_tasks: int) -> None:
    try:
        make_balancer(name, num_tasks, **hp)
    except (ValueError, TypeError) as err:
        valid = ", ".join(f"{k}={v!r}" for k, v in balancer_hparams(name).items()) or "none"
        hint = "" if "valid" in str(err) else f" (its hyper-parameters: {valid})"
        raise ConfigError(f"bad {key} {hp!r} for balancer {name!r}: {err}{hint}") from err


def resolve_balancers(cfg: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """Fill ``critic_balancer``/``actor_balancer`` and their hparams explicitly, and validate them.

    Returns the config with its balancers resolved and :func:`balancer_notes` of it. Rules, in order:

    * ``balancer_hparams`` go only to the groups whose balancer comes from ``balancer``; a group
      with its own ``<group>_balancer_hparams`` uses those.
    * A balancer with ``positive_losses`` (uw, imtl_l, imtl, famo, task_tensioner, dwa, gradnorm;
      also as dgr's base) cannot take the actor loss ``α log π − Q`` (any sign), so the actor uses
      "ew" — as FAMO's own SAC port does (it balances the critic only).
    * Representation-level balancers (mgda_ub, aligned_mtl_ub) are refused; imtl runs at parameter
      level (``representation_level=false``, noted).
    * Randomised balancers get a seed from the run seed: ``2·seed`` (critic), ``2·seed + 1`` (actor).
    * Every balancer is built once for ``T`` tasks, so bad hyper-parameters fail here (ConfigError)
      before any directory or env exists.
    """
    resolved = resolve_group_balancers(cfg)
    return resolved, balancer_notes(resolved)


def resolve_group_balancers(cfg: TrainConfig) -> TrainConfig:
    """The balancer part of :meth:`TrainConfig.resolve` (rules: :func:`resolve_balancers`)."""
    T = len(cfg.env.task_names)  # num_tasks_of
    critic = cfg.critic_balancer or cfg.balancer
    actor = cfg.actor_balancer or cfg.balancer
    critic_hp = _group_hparams(cfg, "critic", critic)
    actor_hp = _group_hparams(cfg, "actor", actor)
    if BALANCERS[_base_name(actor, actor_hp)].positive_losses:
        if cfg.actor_balancer is not None:
            raise ConfigError(
                f"actor_balancer={actor!r} needs strictly positive losses, but SAC actor losses can be negative; "
                f"choose another actor_balancer (e.g. 'ew') or leave it unset"
            )
        actor, actor_hp = "ew", {}  # noted by balancer_notes
    critic_hp = _adapt(critic, critic_hp, "critic_balancer_hparams", 2 * cfg.seed)
    actor_hp = _adapt(actor, actor_hp, "actor_balancer_hparams", 2 * cfg.seed + 1)
    _check_buildable(critic, critic_hp, "critic_balancer_hparams", T)
    _check_buildable(actor, actor_hp, "actor_balancer_hparams", T)
    return dataclasses.replace(
        cfg,
        critic_balancer=critic,
        actor_balancer=actor,
        critic_balancer_hparams=critic_hp,
        actor_balancer_hparams=actor_hp,
    )


def balancer_notes(cfg: TrainConfig) -> list[str]:
    """Human-readable notes on the automatic balancer choices of a resolved config (the trainer logs
    them in the ``run/notes`` text): ``balancer_hparams`` that no group uses, an actor that uses "ew"
    because ``balancer`` needs positive losses, a balancer that runs at parameter level in SAC.

    Recomputed from the resolved config alone (no lookup, so a resolved config loaded again gives the
    same notes); where a user set explicitly what the automatic choice would have been (e.g.
    ``actor_balancer=ew`` with ``balancer=uw``), the note describes that choice all the same."""
    if cfg.critic_balancer is None or cfg.actor_balancer is None:
        raise ValueError("balancer_notes needs a config resolved by resolve_balancers / TrainConfig.resolve")
    notes: list[str] = []
    # the actor's "ew" replaces balancer when balancer (or dgr's base) needs positive losses
    replaced = (
        cfg.actor_balancer == "ew"
        and cfg.balancer != "ew"
        and BALANCERS[_base_name(cfg.balancer, cfg.balancer_hparams)].positive_losses
    )
    actor = cfg.balancer if replaced else cfg.actor_balancer
    if cfg.balancer_hparams and cfg.balancer not in (cfg.critic_balancer, actor):
        notes.append(f"balancer_hparams {cfg.balancer_hparams} unused: both groups override balancer={cfg.balancer!r}")
    if replaced:
        notes.append(
            f"balancer {actor!r} needs positive losses: it balances the critic; the actor uses 'ew' "
            f"(actor losses α·logπ − Q can be negative)."
        )
    notes += _level_notes(cfg.critic_balancer, cfg.critic_balancer_hparams or {}, "critic_balancer_hparams")
    notes += _level_notes(cfg.actor_balancer, cfg.actor_balancer_hparams or {}, "actor_balancer_hparams")
    return notes


def _level_notes(name: str, hp: dict[str, Any], key: str) -> list[str]:
    """A note for a balancer (or dgr's base) whose paper default is feature level but runs at parameter level."""
    notes = []
    if balancer_hparams(name).get("representation_level") is True:  # imtl; resolved to false by _adapt
        notes.append(
            f"{key}: {name!r} runs at parameter level in SAC (weights from the gradients w.r.t. the shared "
            f"trunk parameters, not the paper's shared features; SAC has no single shared representation)."
        )
    base = hp.get("base", "ew")
    if name in _WRAPPERS and isinstance(base, str) and base in BALANCERS and base not in _WRAPPERS:
        notes += _level_notes(base, dict(hp.get("base_hparams") or {}), f"{key}.base_hparams")
    return notes


def build_balancers(cfg: TrainConfig, num_tasks: int) -> tuple[Balancer, Balancer]:
    """``(critic, actor)`` balancer instances of a config resolved by :func:`resolve_balancers`."""
    if cfg.critic_balancer is None or cfg.actor_balancer is None:
        raise ValueError("build_balancers needs a config resolved by resolve_balancers / resolve_config")
    return (
        make_balancer(cfg.critic_balancer, num_tasks, **(cfg.critic_balancer_hparams or {})),
        make_balancer(cfg.actor_balancer, num_tasks, **(cfg.actor_balancer_hparams or {})),
    )
