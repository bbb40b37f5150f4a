"""Start-up resolution of a multi-task SAC run: balancer hparams per group, seeds of randomised
balancers, refused balancers, devices, evaluation episodes and protocol details — all failing with a
ConfigError that names the key before any directory or env is created."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from agents.config import (
    EnvConfig,
    SACConfig,
    TrainConfig,
    balancer_notes,
    build_balancers,
    resolve_balancers,
    resolve_config,
)
from agents.trainer import Trainer
from mtrl.config import ConfigError, load_config
from tests.helpers import run_script

ROOT = Path(__file__).resolve().parents[2]
TOY = str(ROOT / "configs" / "toy_sac.yaml")


def _cfg(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, TOY, list(overrides))


def test_balancer_hparams_do_not_leak_into_an_overridden_group() -> None:
    cfg, _ = resolve_balancers(_cfg("balancer=cagrad", "balancer_hparams.c=0.9", "actor_balancer=ew"))
    assert (cfg.critic_balancer, cfg.critic_balancer_hparams) == ("cagrad", {"c": 0.9})
    assert (cfg.actor_balancer, cfg.actor_balancer_hparams) == ("ew", {})
    critic, actor = build_balancers(cfg, 4)
    assert critic.c == 0.9 and actor.name == "ew"  # type: ignore[attr-defined]
    cfg, _ = resolve_balancers(_cfg("critic_balancer=pcgrad", "balancer=cagrad", "balancer_hparams.c=0.3"))
    assert cfg.actor_balancer_hparams == {"c": 0.3} and "c" not in (cfg.critic_balancer_hparams or {})


def test_per_group_hparams() -> None:
    cfg, _ = resolve_balancers(
        _cfg(
            "balancer=cagrad", "critic_balancer_hparams.c=0.2", "actor_balancer_hparams.c=0.7", "balancer_hparams.c=0.5"
        )
    )
    critic, actor = build_balancers(cfg, 4)
    assert (critic.c, actor.c) == (0.2, 0.7)  # type: ignore[attr-defined]
    again, _ = resolve_balancers(cfg)  # resolution is idempotent (resume and evaluate re-read config.yaml)
    assert again == cfg


def test_bad_balancer_hparams_fail_before_the_run_directory(tmp_path: Path) -> None:
    for bad, key in [
        (["balancer=cagrad", "balancer_hparams.nope=1"], "critic_balancer_hparams"),
        (["balancer=pcgrad", "actor_balancer_hparams.seed=oops"], "actor_balancer_hparams"),
        (["balancer=dgr", "balancer_hparams.lam=-1"], "critic_balancer_hparams"),
    ]:
        with pytest.raises(ConfigError, match=key):
            Trainer(_cfg(f"logdir={tmp_path / 'runs'}", "run_name=x", *bad))
    assert not (tmp_path / "runs").exists()


def test_randomised_balancers_follow_the_run_seed() -> None:
    def perms(seed: int) -> tuple[list[int], list[int]]:
        cfg, _ = resolve_balancers(_cfg("balancer=pcgrad", f"seed={seed}"))
        critic, actor = build_balancers(cfg, 4)
        return (
            torch.randperm(8, generator=critic.generator).tolist(),  # type: ignore[attr-defined]
            torch.randperm(8, generator=actor.generator).tolist(),  # type: ignore[attr-defined]
        )

    cfg, _ = resolve_balancers(_cfg("balancer=rlw", "seed=3"))
    assert (cfg.critic_balancer_hparams, cfg.actor_balancer_hparams) == ({"seed": 6}, {"seed": 7})
    (c0, a0), (c1, a1), (c0_again, _) = perms(0), perms(1), perms(0)
    assert c0 != a0 and c0 != c1 and a0 != a1  # groups and run seeds draw different streams
    assert c0 == c0_again  # and a run seed reproduces its stream
    explicit, _ = resolve_balancers(_cfg("balancer=graddrop", "seed=3", "critic_balancer_hparams.seed=11"))
    assert explicit.critic_balancer_hparams == {"seed": 11} and explicit.actor_balancer_hparams == {"seed": 7}
    dgr, _ = resolve_balancers(_cfg("balancer=dgr", "balancer_hparams.base=pcgrad", "seed=2"))
    assert dgr.critic_balancer_hparams == {"base": "pcgrad", "seed": 4, "base_hparams": {"seed": 4}}


def test_representation_level_balancers_are_refused_and_imtl_runs_parameter_level() -> None:
    for name in ("mgda_ub", "aligned_mtl_ub"):
        with pytest.raises(ConfigError, match=f"{name}.*{name.removesuffix('_ub')}"):
            resolve_balancers(_cfg(f"balancer={name}"))
    with pytest.raises(ConfigError, match="mgda_ub"):
        resolve_balancers(_cfg("balancer=dgr", "balancer_hparams.base=mgda_ub"))
    cfg, notes = resolve_balancers(_cfg("balancer=imtl"))
    assert cfg.critic_balancer_hparams == {"representation_level": False} and cfg.actor_balancer == "ew"
    assert any("parameter level" in n for n in notes) and any("positive losses" in n for n in notes)
    with pytest.raises(ConfigError, match="representation_level"):
        resolve_balancers(_cfg("balancer=imtl", "balancer_hparams.representation_level=true"))
    with pytest.raises(ConfigError, match=r"sac\.engine_strategy"):
        _cfg("sac.engine_strategy=representation")
    cfg, notes = resolve_balancers(_cfg("balancer=dgr", "balancer_hparams.base=uw"))
    assert (cfg.critic_balancer, cfg.actor_balancer) == ("dgr", "ew") and "positive losses" in notes[0]


def test_device_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'device'.*'cpu'"):
        _cfg("device=foo")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the unavailable-device path cannot be exercised")
    with pytest.raises(ConfigError, match=r"'cuda'.*not available.*'cpu'"):
        Trainer(_cfg(f"logdir={tmp_path / 'runs'}", "device=cuda"))
    assert not (tmp_path / "runs").exists()
    proc = run_script("train", TOY, "device=cuda:1", f"logdir={tmp_path / 'runs'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr and "'device'" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("metaworld-v3", (50, 20000, 500, "resampled at every reset", "v2", None, "final_and_last_mean", "final")),
        ("mtrl-legacy", (1, 10000, 150, "fixed per task for the whole run", "v1", "exponential", "best", "best")),
    ],
)
def test_resolved_config_stamps_the_protocol(protocol: str, expected: tuple) -> None:
    cfg, _ = resolve_config(TrainConfig(env=EnvConfig(benchmark="MT10", protocol=protocol)))  # type: ignore[arg-type]
    d = cfg.protocol_details
    got = (
        cfg.eval_episodes,
        cfg.eval_every,
        d["max_episode_steps"],
        d["goals"],
        d["reward_function_version"],
        d["reward_normalization"],
        d["report"],
        d["reported_statistic"],
    )
    assert got == expected and (d["eval_episodes_per_task"], d["eval_every"]) == (cfg.eval_episodes, cfg.eval_every)
    assert cfg.device in ("cpu", "cuda")  # "auto" is never saved
    again, _ = resolve_config(cfg)
    assert again == cfg
    with pytest.raises(ConfigError, match="protocol_details"):
        resolve_config(TrainConfig(protocol_details={**d, "max_episode_steps": 7}))


def test_eval_overrides_are_stamped() -> None:
    cfg, _ = resolve_config(TrainConfig(eval_episodes=5, eval_every=0))
    assert cfg.eval_episodes == 5 and cfg.protocol_details["eval_episodes_per_task"] == 5
    assert cfg.eval_every == 0 and cfg.protocol_details["eval_every"] == 0


def _spy(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> list[tuple]:
    """Record every call of ``module.name``, through every loaded module that imported the function."""
    original = getattr(module, name)
    calls: list[tuple] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    for mod in list(sys.modules.values()):
        if getattr(mod, "__dict__", {}).get(name) is original:
            monkeypatch.setattr(mod, name, spy)
    return calls


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # the toy suite
        ["env.benchmark=MT1", "env.tasks=[reach-v3]", "env.protocol=mtrl-legacy"],  # Meta-World: make_mt_envs
    ],
    ids=["toy", "MT1"],
)
def test_the_config_is_resolved_once_in_load_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, overrides: list[str]
) -> None:
    """Resolution happens in load_config; building a Trainer, training with evaluations and checkpoints,
    and resuming the run look up neither the protocol nor the device again."""
    import envs.protocols
    import mtrl.device

    lookups = _spy(monkeypatch, envs.protocols, "get_protocol")
    devices = _spy(monkeypatch, mtrl.device, "resolve_device_name")
    common = [
        *overrides, f"logdir={tmp_path}", "run_name=once", "sac.hidden_sizes=[16]", "sac.batch_per_task=8",
        "sac.warmup_steps=10", "eval_every=10", "eval_episodes=1", "checkpoint_every=10", "progress=false",
    ]  # fmt: skip
    cfg = load_config(TrainConfig, TOY, [*common, "total_steps=20"])
    assert cfg.is_resolved and len(devices) == 1 and len(lookups) == (0 if cfg.env.benchmark == "toy" else 1)
    lookups.clear(), devices.clear()
    results = Trainer(cfg).train()
    assert results["complete"] and [e["step"] for e in results["evals"]] == [10, 20]
    assert (lookups, devices) == ([], [])

    resumed_cfg = load_config(TrainConfig, TOY, [*common, "total_steps=30", "resume=true"])
    lookups.clear(), devices.clear()
    resumed = Trainer(resumed_cfg).train()
    assert [e["step"] for e in resumed["evals"]] == [10, 20, 30] and resumed["protocol"] == cfg.env.protocol
    assert (lookups, devices) == ([], [])


def test_a_config_built_in_python_is_resolved_by_the_trainer(tmp_path: Path) -> None:
    """``Trainer(TrainConfig(...))`` (no load_config) resolves the config itself, with the same notes as
    :func:`resolve_config`; resolving a resolved config changes nothing and keeps its notes."""
    direct = TrainConfig(
        env=EnvConfig(benchmark="toy", protocol="toy"), sac=SACConfig(hidden_sizes=(16,)), balancer="imtl",
        device="cpu", logdir=str(tmp_path), run_name="direct", progress=False,
    )  # fmt: skip
    assert not direct.is_resolved
    with pytest.raises(ValueError, match="resolved config"):
        _ = direct.protocol
    resolved, notes = resolve_config(direct)
    trainer = Trainer(direct)
    try:
        assert trainer.cfg == resolved and trainer.cfg.is_resolved and trainer.notes == notes
    finally:
        trainer.lease.release()
        trainer.logger.close()
    assert any("parameter level" in n for n in notes) and any("positive losses" in n for n in notes)
    assert resolved.resolve() == resolved and balancer_notes(resolved.resolve()) == notes
    assert resolved.protocol.details(resolved.eval_episodes, resolved.eval_every) == resolved.protocol_details
