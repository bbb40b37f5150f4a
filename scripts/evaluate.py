"""Evaluate a trained multi-task SAC checkpoint and print a per-task success table.

    python scripts/evaluate.py RUN_DIR_OR_CHECKPOINT [episodes=N] [out=PATH.json] [device=cpu] [config=PATH]

RUN_DIR_OR_CHECKPOINT is either a run directory of ``scripts/train.py`` (its latest checkpoint: the
one ``checkpoints/last.txt`` names, else the highest ``checkpoints/step_*.pt``) or a checkpoint
file (``.pt``). The run's ``config.yaml`` is read from the run directory, or for a checkpoint file
from its folder or the folder above (``<run>/checkpoints/step_*.pt``); ``config=PATH`` names it
explicitly. Evaluates on a freshly built env of the run's benchmark, protocol and seed (so
mtrl-legacy's fixed goals are the training goals) with the deterministic policy, ``episodes``
episodes per task (default: the run's ``eval_episodes``, else the protocol's). Prints the table and
writes it as JSON to ``out`` (default ``<run dir>/eval_<step>.json``; its missing folders are created, and a
path that cannot be written, e.g. below a file, is refused before anything is evaluated): ``checkpoint``, ``step``,
``benchmark``, ``protocol``, ``episodes``, ``success_mean``, ``success`` and ``return`` per task.

Every usage problem (missing or unreadable checkpoint, no config, bad option) prints one line
naming it and the fix, and exits with status 2. The evaluation itself is :mod:`agents.evaluate`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtrl.config import ConfigError

OPTIONS = ("episodes", "out", "device", "config")


def parse_options(items: list[str]) -> dict[str, str]:
    """``key=value`` options; unknown keys, repeated keys, bare words, a bad ``episodes`` and an ``out`` that
    cannot be written (:func:`agents.evaluate.check_out`) are usage errors (:class:`~mtrl.config.ConfigError`)."""
    from agents.evaluate import check_out

    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in OPTIONS:
            raise ConfigError(f"bad argument {item!r}; valid options: " + " ".join(f"{k}=..." for k in OPTIONS))
        if key in options:
            raise ConfigError(f"option {key!r} given twice")
        options[key] = value
    if "episodes" in options:
        text = options["episodes"]
        if not re.fullmatch(r"\d+", text.strip()) or int(text) < 1:
            raise ConfigError(f"bad value {text!r} for episodes: expected a positive integer (e.g. episodes=10)")
    if "out" in options:
        check_out(options["out"])
    return options


def main(argv: list[str]) -> int:
    """The script: :func:`run` through the scripts' shell (:func:`mtrl.cli.run_main`: a usage error, a file-system
    error or an unreadable checkpoint is one line ``error: ...`` and status 2, a second Ctrl-C no traceback)."""
    from mtrl.cli import run_main

    return run_main(lambda: run(argv), config_prefix="error")


def run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from agents.evaluate import evaluate_run, format_table, write_table

    options = parse_options(argv[1:])
    episodes = int(options["episodes"]) if "episodes" in options else None
    table = evaluate_run(argv[0], episodes, options.get("device", "cpu"), options.get("config"))
    out = write_table(table, options.get("out"))
    print(format_table(table))
    print(f"wrote {out} (checkpoint {Path(table['checkpoint']).name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
