"""The one run loader of :mod:`mtrl.analysis`: run directories as :class:`RunRecord` s.

A run directory (written by ``scripts/train.py``, ``scripts/train_stl.py`` or ``scripts/train_vision.py``)
holds ``config.yaml`` (the resolved config; its ``balancer`` and ``seed`` keys group the runs),
``results.json`` (final numbers) and ``metrics.jsonl`` (the logged scalars over time).

:func:`find_runs` reads every run under a root into a :class:`RunRecord` (directory, group, seed, the
``results.json`` and ``config.yaml`` as read, and the numeric results flattened to ``a/b`` keys); the
statistics (:mod:`mtrl.analysis.core`) and the sweep report (:mod:`mtrl.analysis.sweep`) both read their runs
through it. Runs that cannot be used are left out with a note naming each and why: a crashed run (no
``results.json``), a torn or foreign file, an unfinished run (``"complete": false``), and whatever a caller's
``reject`` rule refuses. :func:`run_history` reads one RL run's evaluations over training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtrl.config import yaml_problem

__all__ = [
    "RunRecord",
    "find_runs",
    "flatten",
    "group_name",
    "history_of",
    "run_files",
    "run_history",
    "unfinished_note",
]


@dataclass(frozen=True)
class RunRecord:
    """One finished (or interrupted) run.

    Attributes:
        path: the run directory.
        group: its group (:func:`group_name` of its config).
        seed: its config's ``seed``.
        results: its ``results.json`` as read (nested), or for a record built by hand any mapping of results.
        config: its ``config.yaml`` as read (empty for a record built by hand).
        values: the numeric leaves of ``results`` as ``{"a/b": value}`` (:func:`flatten`): what the
            statistics read.
    """

    path: Path
    group: str
    seed: int
    results: Mapping[str, Any]
    config: Mapping[str, Any] = field(default_factory=dict)
    values: dict[str, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", flatten(self.results))


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping as ``{"a/b": value}``."""
    flat: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def group_name(cfg: Mapping[str, Any], group_keys: Sequence[str]) -> str:
    """The group of a run: the values of ``group_keys`` (dotted paths) in its config, ``key=value`` joined by
    commas when there are several keys (a ``{name, hparams}`` mapping counts by its name)."""
    parts = []
    for key in group_keys:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and "name" in node:  # the vision config nests {name, hparams}
            node = node["name"]
        if node is not None:
            parts.append(str(node) if len(group_keys) == 1 else f"{key}={node}")
    return ",".join(parts) or "run"


def run_files(root: str | Path, skipped: list[str] | None = None) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """``(run directory, config, results)`` of every directory under ``root`` holding ``config.yaml``, in path
    order.

    A run directory without ``results.json`` (the run crashed, or is still running) is left out; one whose
    ``config.yaml`` or ``results.json`` cannot be read (a truncated write, not YAML/JSON, not a mapping) is left
    out with a note naming the file and why when ``skipped`` is a list (crashed runs get a note too), and raises
    ``ValueError`` naming it otherwise."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"run root {str(root)!r} does not exist; pass the folder holding the run directories")
    runs = []
    for cfg_path in sorted(root.rglob("config.yaml")):
        res_path = cfg_path.parent / "results.json"
        if not res_path.is_file():
            if skipped is not None:
                skipped.append(
                    f"{cfg_path.parent}: no results.json (crashed, or still running); resume it to include it"
                )
            continue
        try:
            cfg, results = _read_mapping(cfg_path), _read_mapping(res_path)
        except ValueError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
            continue
        runs.append((cfg_path.parent, cfg, results))
    return runs


def _read_mapping(path: Path) -> dict[str, Any]:
    """The mapping a run's ``config.yaml`` or ``results.json`` holds; ``ValueError`` naming the file otherwise."""
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        detail = yaml_problem(err) if isinstance(err, yaml.YAMLError) else str(err)
        raise ValueError(f"{path}: unreadable ({detail}; a truncated write?); run or resume it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds {type(data).__name__}, not a mapping; run or resume it again")
    return data


def unfinished_note(path: Path, results: Mapping[str, Any]) -> str | None:
    """The note that skips a run whose ``results.json`` says ``"complete": false`` (interrupted, not
    finished), or None for a finished run."""
    if results.get("complete") is False:
        return f'{path}: unfinished ("complete": false); resume it to include it'
    return None


def find_runs(
    root: str | Path,
    group_keys: Sequence[str] = ("balancer",),
    skipped: list[str] | None = None,
    reject: Callable[[RunRecord], str | None] | None = None,
) -> list[RunRecord]:
    """Every directory under ``root`` holding ``config.yaml`` and ``results.json``, in path order, grouped by
    the config keys ``group_keys`` (:func:`group_name`).

    With a ``skipped`` list, runs whose ``results.json`` says ``"complete": false`` (interrupted, not
    finished), runs without ``results.json`` (crashed) and runs whose files cannot be read are left out and a
    note naming each and why is appended to it (:func:`run_files`); without one, unfinished runs are kept and
    an unreadable file raises ``ValueError`` naming it. A run for which ``reject`` returns a note is left out
    too (the note appended to ``skipped`` when given): how a caller refuses runs it cannot use."""
    records = []
    for path, cfg, results in run_files(root, skipped):
        note = unfinished_note(path, results) if skipped is not None else None
        record = RunRecord(path, group_name(cfg, group_keys), int(cfg.get("seed", 0)), results, cfg)
        if note is None and reject is not None:
            note = reject(record)
        if note is not None:
            if skipped is not None:
                skipped.append(note)
            continue
        records.append(record)
    return records


def run_history(run_dir: str | Path, finished_only: bool = True) -> dict[str, dict[int, dict[str, float]]] | None:
    """Per task, ``{step: {"success": s, "return": r}}`` of every evaluation of one RL run, from its
    ``results.json`` (``scripts/train.py``'s ``evals`` or ``scripts/train_stl.py``'s per-task
    ``history``); None if there is no results file, or, with ``finished_only``, the run is not complete."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    results = _read_mapping(path)  # ValueError naming the file when it cannot be read
    if finished_only and results.get("complete") is False:
        return None
    return history_of(results, path)


def history_of(results: Mapping[str, Any], path: Path) -> dict[str, dict[int, dict[str, float]]]:
    """:func:`run_history` of a ``results.json`` already read (``path`` names it in errors)."""
    if "history" in results:  # train_stl.py: one history per task
        return {
            task: {int(h["step"]): {"success": float(h["success"]), "return": float(h["return"])} for h in hist}
            for task, hist in results["history"].items()
        }
    out: dict[str, dict[int, dict[str, float]]] = {}
    for e in results.get("evals", []):
        if "return" not in e:
            raise ValueError(f"{path} has no per-task returns (written before they were recorded); run it again")
        for task, success in e["success"].items():
            out.setdefault(task, {})[int(e["step"])] = {"success": float(success), "return": float(e["return"][task])}
    return out
