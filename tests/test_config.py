"""The typed config loader: presets, dotted overrides, and start-up errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from mtrl.config import (
    MISSING,
    ConfigError,
    config_differences,
    config_to_dict,
    flatten_config,
    load_config,
    parse_overrides,
    save_config,
    update_config,
)


@dataclass(frozen=True)
class WithResolution:
    """A config with a resolution step (``mtrl.config.Resolvable``)."""

    device: str = "auto"
    calls: int = 0

    def resolve(self) -> WithResolution:
        return WithResolution(device="cpu" if self.device == "auto" else self.device, calls=self.calls + 1)


def test_load_config_resolves_a_resolvable_class_once() -> None:
    assert load_config(WithResolution, None, ["device=auto"]) == WithResolution(device="cpu", calls=1)
    assert load_config(WithResolution, None, ["device=auto"], resolve=False) == WithResolution()


@dataclass(frozen=True)
class Inner:
    lr: float = 3e-4
    """Learning rate."""
    hidden: tuple[int, ...] = (400, 400)
    """Hidden widths."""


@dataclass(frozen=True)
class Outer:
    seed: int = 0
    """Random seed."""
    balancer: Literal["ew", "pcgrad"] = "ew"
    """Balancer key."""
    device: str = "auto"
    """Device."""
    logdir: str | None = None
    """Run directory."""
    inner: Inner = field(default_factory=Inner)
    """Nested section."""


def test_defaults_preset_and_overrides(tmp_path: Path) -> None:
    preset = tmp_path / "p.yaml"
    preset.write_text("seed: 3\ninner:\n  lr: 0.001\n")
    cfg = load_config(Outer, preset, ["inner.hidden=[64, 32]", "balancer=pcgrad", "logdir=runs/x"])
    assert cfg == Outer(seed=3, balancer="pcgrad", logdir="runs/x", inner=Inner(lr=0.001, hidden=(64, 32)))
    assert load_config(Outer) == Outer()


def test_unknown_key_names_key_and_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"inner\.lrr.*valid keys in inner: hidden, lr"):
        load_config(Outer, None, ["inner.lrr=1"])
    with pytest.raises(ConfigError, match=r"\['sede'\].*balancer, device, inner, logdir, seed"):
        load_config(Outer, None, ["sede=1"])


def test_bad_values_name_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"'mgdaa' for 'balancer'; valid choices: 'ew', 'pcgrad'"):
        load_config(Outer, None, ["balancer=mgdaa"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(Outer, None, ["seed=abc"])
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["seed"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, "nope.yaml")


def test_roundtrip_and_update(tmp_path: Path) -> None:
    cfg = load_config(Outer, None, ["inner.lr=0.5"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == cfg
    assert update_config(cfg, {"seed": 9}).seed == 9
    assert config_to_dict(cfg)["inner"] == {"lr": 0.5, "hidden": [400, 400]}


def test_config_differences_names_every_changed_leaf_except_the_allowed() -> None:
    old = {"seed": 0, "optim": {"lr": 1e-3, "steps": 10}, "hp": {}, "gone": 1, "logdir": {"root": "a"}}
    new = {"seed": 1, "optim": {"lr": 1e-3, "steps": 20}, "hp": {"c": 0.4}, "logdir": {"root": "b"}}
    assert flatten_config(old) == {"seed": 0, "optim.lr": 1e-3, "optim.steps": 10, "gone": 1, "logdir.root": "a"}
    assert config_differences(old, new, ("optim.steps", "logdir")) == [
        ("gone", 1, MISSING),
        ("hp.c", MISSING, 0.4),
        ("seed", 0, 1),
    ]
    assert config_differences(old, old) == []
