"""Meta-World task sets: which tasks a benchmark name means, checked before any env is built.

A run names a benchmark and, for two of them, its tasks (``env.benchmark`` / ``env.tasks``):

========== ================================================ ==========================================
benchmark  tasks                                            gymnasium id it is built through
========== ================================================ ==========================================
``MT1``    exactly one v3 task, e.g. ``[reach-v3]``          ``Meta-World/MT1``
``MT10``   the 10 tasks of Meta-World's MT10 (fixed order)   ``Meta-World/MT10``
``MT25``   the 25 tasks of Meta-World's MT25 (fixed order)   ``Meta-World/MT25``
``MT50``   all 50 v3 tasks (fixed order)                     ``Meta-World/MT50``
``custom`` any list of distinct v3 task names               ``Meta-World/custom-mt-envs``
========== ================================================ ==========================================

The env order is the task order, which is also the one-hot order (task ``t`` = sub-env ``t`` =
one-hot index ``t``). :func:`resolve_tasks` turns a benchmark and an optional task list into that
order, or raises a one-line :class:`ValueError` that names the fix (an unknown task name lists the
close matches). Only ``metaworld.env_dict`` is imported (no MuJoCo env is created).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "FIXED_BENCHMARKS",
    "METAWORLD_BENCHMARKS",
    "MetaWorldBenchmark",
    "all_v3_tasks",
    "check_task_name",
    "resolve_tasks",
]

MetaWorldBenchmark = Literal["MT1", "MT10", "MT25", "MT50", "custom"]
#: Every Meta-World benchmark name a run may use.
METAWORLD_BENCHMARKS: tuple[str, ...] = ("MT1", "MT10", "MT25", "MT50", "custom")
#: Benchmarks whose task list is fixed by Meta-World (``env.tasks`` may only repeat it).
FIXED_BENCHMARKS: tuple[str, ...] = ("MT10", "MT25", "MT50")


def all_v3_tasks() -> tuple[str, ...]:
    """The 50 Meta-World v3 task names, in MT50 order."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(ALL_V3_ENVIRONMENTS)


def _fixed_tasks(benchmark: str) -> tuple[str, ...]:
    from metaworld import env_dict

    return tuple(getattr(env_dict, f"{benchmark}_V3"))


def check_task_name(
    name: object, valid: Sequence[str] | None = None, key: str = "env.tasks", where: str = "Meta-World v3"
) -> str:
    """``name`` if it is one of ``valid`` (default: the 50 v3 tasks), else a one-line ``ValueError``
    that lists the close matches (``where`` names the set in the message, e.g. ``"MT10"``)."""
    choices = tuple(valid) if valid is not None else all_v3_tasks()
    if not isinstance(name, str) or name not in choices:
        close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
        hint = f"close matches: {', '.join(close)}" if close else f"names look like {', '.join(choices[:2])}"
        raise ValueError(f"unknown task {name!r} in {key}: not one of the {len(choices)} {where} tasks; {hint}")
    return name


def resolve_tasks(benchmark: str, tasks: Sequence[str] | None = None) -> tuple[str, ...]:
    """The tasks of ``benchmark`` in env (= one-hot) order.

    Args:
        benchmark: one of :data:`METAWORLD_BENCHMARKS`.
        tasks: ``MT1``: exactly one name; ``custom``: one or more distinct names; ``MT10``/``MT25``/
            ``MT50``: empty/None, or the benchmark's own list in its order (what a saved config holds).

    Raises:
        ValueError: unknown benchmark or task (with close matches), a wrong count, duplicates, or a
            task list given for a fixed benchmark.
    """
    if benchmark not in METAWORLD_BENCHMARKS:
        close = difflib.get_close_matches(str(benchmark), METAWORLD_BENCHMARKS, n=2, cutoff=0.5)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown benchmark {benchmark!r}{hint}; valid choices: {', '.join(METAWORLD_BENCHMARKS)}"
        )
    given = tuple(tasks or ())
    valid = all_v3_tasks()
    if benchmark in FIXED_BENCHMARKS:
        fixed = _fixed_tasks(benchmark)
        if given and given != fixed:
            raise ValueError(
                f"env.tasks cannot change {benchmark}'s fixed task list; use env.benchmark=custom "
                f"'env.tasks=[...]' for another set (or MT1 for one task)"
            )
        return fixed
    for name in given:
        check_task_name(name, valid)
    if benchmark == "MT1" and len(given) != 1:
        raise ValueError(f"env.benchmark=MT1 needs exactly one task, e.g. 'env.tasks=[reach-v3]'; got {list(given)}")
    if benchmark == "custom" and not given:
        raise ValueError("env.benchmark=custom needs its tasks, e.g. 'env.tasks=[reach-v3,push-v3]'")
    duplicates = sorted({t for t in given if given.count(t) > 1})
    if duplicates:
        raise ValueError(f"env.tasks lists {duplicates} more than once; each task is one sub-env, name it once")
    return given
