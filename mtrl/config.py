"""Typed configuration: frozen dataclasses, YAML presets and dotted command-line overrides.

Every config is a (possibly nested) frozen dataclass whose fields carry a documented default.
:func:`load_config` reads a YAML preset, applies ``key=value`` / ``section.key=value`` overrides and
fails at start-up on an unknown key or a badly typed value, naming the key and the valid choices.
``typing.Literal`` fields restrict the value to the listed choices.

A config class may define a resolution step, :class:`Resolvable`'s ``resolve()``: everything a run
derives from its settings, the machine and the registries (e.g. ``agents.config.TrainConfig``: the
balancers, the task list, the device, the protocol's evaluation defaults and details). It runs once,
in :func:`load_config`, so the config that :func:`load_config` returns is the fully resolved one and
nothing downstream looks those values up again.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import yaml

from mtrl.atomic import write_text

if TYPE_CHECKING:  # typing.Self is 3.11+; the project supports 3.10 (annotations are strings at run time)
    from typing import Self

__all__ = [
    "MISSING",
    "ConfigError",
    "Resolvable",
    "config_differences",
    "config_to_dict",
    "flatten_config",
    "load_config",
    "parse_overrides",
    "save_config",
    "update_config",
    "with_defaults",
    "yaml_problem",
]

C = TypeVar("C")


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key and what is valid."""


@runtime_checkable
class Resolvable(Protocol):
    """A config class with a resolution step (called by :func:`load_config`)."""

    def resolve(self) -> Self:
        """The config with every derived value filled in and checked (raise :class:`ConfigError` on a
        bad one). Must be idempotent (resolving a resolved config, e.g. a saved ``config.yaml``, gives
        the same config) and cheap: no files written, no envs or models built."""
        ...


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise :class:`ConfigError` otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"bad value {value!r} for {key!r}; valid choices: {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"bad value {value!r} for {key!r}: expected {tp}")
    if origin in (tuple, list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"bad value {value!r} for {key!r}: expected a list")
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, key) for v in value)
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(f"bad value {value!r} for {key!r}: expected a mapping")
        return dict(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"bad value {value!r} for section {key!r}: expected a mapping of its fields")
        return _build(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"bad value {value!r} for {key!r}: expected true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"bad value {value!r} for {key!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"bad value {value!r} for {key!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"bad value {value!r} for {key!r}: expected a string")
        return value
    return value


def _build(cls: type[C], data: Mapping[str, Any], prefix: str = "") -> C:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        renamed: dict[str, str] = getattr(cls, "RENAMED", {})
        notes: list[str] = []
        for key in unknown:
            if key in renamed:
                notes.append(f"{prefix + key} is now {prefix}{renamed[key]}")
            else:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                if close:
                    notes.append(f"did you mean {prefix + close[0]}?")
        hint = f" ({'; '.join(notes)})" if notes else ""
        raise ConfigError(
            f"unknown config key(s) {[prefix + k for k in unknown]}{hint}; valid keys"
            f"{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(sorted(fields))}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict (tuples as lists) of a config dataclass, ready for YAML/JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)  # type: ignore[no-any-return]


class _DuplicateKey(Exception):
    """A mapping key written twice in one YAML document (plain YAML keeps the last value silently)."""

    def __init__(self, key: Any, lines: tuple[int, int]) -> None:
        super().__init__(f"key {key!r} is set twice (lines {lines[0]} and {lines[1]}): keep one")
        self.key = key


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (merge keys ``<<`` excepted)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in lines:
                raise _DuplicateKey(key, (lines[key], line))
            if isinstance(key, typing.Hashable):
                lines[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-untyped-call,no-any-return]


def _parse_yaml(text: str) -> Any:
    """One YAML document; raises ``yaml.YAMLError`` (bad syntax) or :class:`_DuplicateKey`."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: plain data only


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line: what PyYAML found wrong and where (``line L, column C`` of the text it parsed)."""
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(problem)


def _read_config_file(path: Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; :class:`ConfigError` naming the file when it is missing,
    unreadable, not valid YAML, empty, not a mapping, or sets a key twice."""
    name = str(path)
    if not path.is_file():
        raise ConfigError(f"config file {name!r} does not exist; presets live in configs/ (e.g. configs/mt10_sac.yaml)")
    try:
        loaded = _parse_yaml(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {name!r} ({err}); pass a YAML preset") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {name!r} is not valid YAML: {yaml_problem(err)}") from None
    except _DuplicateKey as err:
        raise ConfigError(f"config file {name!r}: {err}") from None
    if loaded is None:
        raise ConfigError(
            f"config file {name!r} is empty: name a preset of configs/ (e.g. configs/mt10_sac.yaml), or write {{}} "
            "in it to run with every default"
        )
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {name!r} must hold a mapping of keys to values")
    return loaded


def _overlap(a: str, b: str) -> bool:
    """Whether dotted keys ``a`` and ``b`` set the same value: equal, or one a section holding the other."""
    return a == b or a.startswith(f"{b}.") or b.startswith(f"{a}.")


def with_defaults(defaults: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """``overrides`` after those of ``defaults`` whose key they do not set: the command line of a script that
    passes its own defaults (``device=cpu``) with a user's overrides (``device=cuda``) to a training script,
    where a key given twice is refused (:func:`parse_overrides`)."""
    given = [item.split("=", 1)[0].strip() for item in overrides]
    kept = [d for d in defaults if not any(_overlap(d.split("=", 1)[0].strip(), key) for key in given)]
    return [*kept, *overrides]


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into a nested dict; values are parsed as YAML scalars/lists.

    Raises :class:`ConfigError` for an item without ``=``, a value that is not valid YAML, and a key given
    twice (``seed=1 seed=2``) or both whole and in part (``sac={lr: 1} sac.lr=2``): the last one would
    silently win."""
    nested: dict[str, Any] = {}
    given: dict[str, str] = {}  # dotted key -> the override that set it
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"bad override {item!r}: expected key=value (e.g. seed=1 or sac.batch_per_task=64)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"bad override {item!r}: empty key")
        for other, earlier in given.items():
            if _overlap(other, key):
                what = f"{key!r} twice" if other == key else f"both {other!r} and {key!r}"
                raise ConfigError(f"overrides {earlier!r} and {item!r} set {what}: keep one")
        given[key] = item
        try:
            value = _parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(
                f"bad override {item!r}: the value is not valid YAML ({yaml_problem(err)}); e.g. "
                "sac.hidden_sizes=[64,64] (quote the whole item in the shell)"
            ) from None
        except _DuplicateKey as err:
            raise ConfigError(f"bad override {item!r}: key {err.key!r} is set twice: keep one") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def update_config(cfg: C, changes: Mapping[str, Any]) -> C:
    """A copy of ``cfg`` with nested ``changes`` applied and validated."""
    return _build(type(cfg), _merge(config_to_dict(cfg), changes))


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = (), *, resolve: bool = True
) -> C:
    """Load preset ``path`` (YAML, may be None for the defaults) into ``cls``, apply overrides and, when
    ``cls`` is :class:`Resolvable`, resolve it: the result is the fully resolved config.

    ``resolve=False`` returns the validated config as written, unresolved (to read a preset's sections
    without running it, as ``agents.stl_config`` does)."""
    data: dict[str, Any] = {}
    if path is not None:
        data = _read_config_file(Path(path))
    data = _merge(data, parse_overrides(overrides))
    cfg = _build(cls, data)
    if resolve and isinstance(cfg, Resolvable):
        return cfg.resolve()
    return cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: a kill mid-write leaves the previous file)."""
    write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


#: How :func:`config_differences` shows a key that one of the two configs does not have.
MISSING = "<missing>"


def flatten_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The leaves of a nested config as ``{"a.b": value}``; an empty mapping contributes no key (so
    ``{}`` → ``{"lr": 1}`` reads as the key ``…lr`` appearing)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], may_change: Sequence[str] | frozenset[str] = ()
) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf where two nested configs differ, sorted by
    key; a key only one side has differs (the other side reads :data:`MISSING`). Keys equal to an entry
    of ``may_change`` or below it (``"optim.steps"``, or ``"logdir"`` and its sub-keys) are skipped.
    What resume checks compare: the saved config.yaml against the config of the resuming run."""
    a, b = flatten_config(old), flatten_config(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == m or key.startswith(f"{m}.") for m in may_change):
            continue
        if key not in a or key not in b or a[key] != b[key]:
            out.append((key, a.get(key, MISSING), b.get(key, MISSING)))
    return out
