"""The Δm baseline of a vision run (``baseline=...``): loaded from a named reference or files, and checked.

The Δm arithmetic and the named references live in :mod:`mtrl.vision.delta`; this module reads what the
configuration names (single-task runs' ``results.json``, YAML/JSON files of reference values), refuses
single-task runs that Δm cannot be compared with, and computes the run's Δm record.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mtrl.config import ConfigError, config_to_dict, yaml_problem
from mtrl.vision.config import VisionConfig
from mtrl.vision.delta import REFERENCE_BASELINES, Baseline, delta_m, higher_is_better_of

__all__ = ["BASELINE_DATA_KEYS", "baseline_delta_m", "check_baseline_run", "load_baseline", "results_path"]

#: data-config keys that must agree between a run and the single-task runs used as its Δm baseline.
BASELINE_DATA_KEYS: tuple[str, ...] = ("name", "size", "train_length", "val_length", "augment", "options")


def results_path(path: str) -> Path:
    """``path/results.json`` for a run directory, else ``path`` itself."""
    p = Path(path)
    return p / "results.json" if p.is_dir() else p


def load_baseline(cfg: VisionConfig) -> Baseline:
    """The Δm baseline ``cfg.baseline`` names: a named reference (``REFERENCE_BASELINES``), or a list of
    single-task ``results.json`` files / run dirs (each contributing its own task's selected metrics), or
    YAML/JSON files of reference metric values (``{"seg/miou": 0.38, ...}`` or
    ``{"name": ..., "values": {...}, "source": ...}``).

    Single-task runs must have used the same data (:data:`BASELINE_DATA_KEYS` of ``data``) and the same
    selection rule (``last_k``) as ``cfg`` (:func:`check_baseline_run`).

    Raises:
        ConfigError: a missing or unreadable (e.g. truncated) file, a file that is not a mapping of metric values,
            or a mismatched run.
    """
    if len(cfg.baseline) == 1 and cfg.baseline[0] in REFERENCE_BASELINES:
        return REFERENCE_BASELINES[cfg.baseline[0]]
    values: dict[str, float] = {}
    names, sources = [], []
    for path in cfg.baseline:
        p = results_path(path)
        if not p.is_file():
            raise ConfigError(
                f"baseline {path!r}: no file at {str(p)!r}; give single-task runs (single_task=<task>), YAML/JSON "
                f"files of reference metric values, or one of the named references {sorted(REFERENCE_BASELINES)}"
            )
        try:
            other = yaml.safe_load(p.read_text()) if p.suffix in (".yaml", ".yml") else json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
            detail = yaml_problem(err) if isinstance(err, yaml.YAMLError) else str(err)
            raise ConfigError(f"baseline {str(p)!r} cannot be read ({detail}; a truncated write?)") from None
        if not isinstance(other, dict):
            raise ConfigError(f"baseline {str(p)!r} must hold a mapping, got {type(other).__name__}")
        if "selected" in other:  # a results.json of a (single-task) run
            check_baseline_run(p, other, cfg)
            names.append(other.get("run", p.parent.name))
            sources.append("mean of the last k evaluations of each run")
            values.update({k: v for k, v in other["selected"].items() if not k.startswith("loss/")})
        else:
            ref = other.get("values", other)
            if not isinstance(ref, dict) or not ref:
                raise ConfigError(f"baseline {str(p)!r}: expected a mapping of metric keys to numbers")
            for key, value in ref.items():
                try:
                    higher_is_better_of(str(key))
                except ValueError as err:
                    raise ConfigError(f"baseline {str(p)!r}: {err}") from err
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ConfigError(f"baseline {str(p)!r}: {key!r} must be a finite number, got {value!r}")
                values[str(key)] = float(value)
            names.append(str(other.get("name", p.stem)))
            sources.append(str(other.get("source", f"reference values from {p}")))
    kind = "single-task runs " if all(s.startswith("mean of") for s in sources) else "reference "
    return Baseline(kind + ", ".join(names), values, "; ".join(dict.fromkeys(sources)))


def check_baseline_run(path: Path, other: Mapping[str, Any], cfg: VisionConfig) -> None:
    """Refuse a baseline run (its ``results.json`` record ``other``) trained on other data or selected by
    another rule than ``cfg``.

    Raises:
        ConfigError: naming every setting that differs.
    """
    theirs = other.get("config", {})
    mine = config_to_dict(cfg)
    diffs = [
        f"data.{key}: {theirs.get('data', {}).get(key)!r} (baseline) vs {mine['data'][key]!r} (this run)"
        for key in BASELINE_DATA_KEYS
        if theirs.get("data", {}).get(key) != mine["data"][key]
    ]
    if theirs.get("last_k") != mine["last_k"]:
        diffs.append(f"last_k: {theirs.get('last_k')!r} (baseline) vs {mine['last_k']!r} (this run)")
    if diffs:
        raise ConfigError(
            f"baseline run {str(path)!r} does not match this run: {'; '.join(diffs)}. Δm needs single-task "
            "references trained on the same data and selected by the same rule; rerun them with these settings"
        )


def baseline_delta_m(cfg: VisionConfig, evals: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``delta_m`` record of a run's evaluation history ``evals`` (``{"step": ..., metric: value}``)
    against :func:`load_baseline` ``(cfg)``, selected by the last ``cfg.last_k`` evaluations.

    Raises:
        ConfigError: the baseline lacks some of the run's metrics.
    """
    base = load_baseline(cfg)
    history = [{k: v for k, v in e.items() if k != "step" and not k.startswith("loss/")} for e in evals]
    missing = sorted(set(history[-1]) - set(base.values))
    if missing:
        raise ConfigError(
            f"the baseline {base.name!r} lacks metrics {missing}; give one single-task run per task "
            "(or reference values for every metric)"
        )
    return dataclasses.asdict(delta_m(history, base, k=cfg.last_k))
