"""What a resumed run may change, and the run's logs opened fresh or cut back to its checkpoint.

* :func:`check_resume` — refuses a resume whose configuration differs from the run's ``config.yaml``
  outside the keys the config class allows (its ``RESUME_MAY_CHANGE``).
* :func:`open_logs` — the TensorBoard and ``metrics.jsonl`` writers: a fresh run starts clean, a
  resumed run drops what was logged after its checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mtrl.config import ConfigError, config_differences
from mtrl.logger import JsonlWriter, Layout, Logger, TensorBoardWriter, truncate_jsonl

__all__ = ["check_resume", "open_logs"]


def check_resume(
    saved: Mapping[str, Any], new: Mapping[str, Any], may_change: frozenset[str], flag: str, source: Path | None = None
) -> None:
    """Raise :class:`~mtrl.config.ConfigError` (one line) if the configuration ``new`` of a resume differs
    from the run's saved configuration ``saved`` at any dotted key outside ``may_change``.

    ``flag`` is how the user asked to resume (``"resume=true"``, ``"--resume"``) and ``source`` the saved
    ``config.yaml``, both named in the message."""
    changed = config_differences(saved, new, may_change)
    if changed:
        details = "; ".join(f"{key}: the run has {old!r}, now {now!r}" for key, old, now in changed)
        where = f" {source}" if source is not None else ""
        raise ConfigError(
            f"{flag} with a configuration that differs from the run's config.yaml{where} ({details}); only "
            f"{', '.join(sorted(may_change))} may change on resume (start a new run directory otherwise)"
        )


def open_logs(run_dir: Path, resumed_at: int | None, cut: bool = True, layout: Layout | None = None) -> Logger:
    """The run's TensorBoard + ``metrics.jsonl`` logger, with the custom-scalars ``layout`` written into the
    event file (:func:`mtrl.logger.custom_scalars_layout`: a chart per metric with a line per task).

    A fresh run (``resumed_at`` None) starts clean: ``metrics.jsonl`` is emptied and TensorBoard's purge
    step 0 hides an earlier attempt's events. A run resumed from its checkpoint at step ``s`` drops what
    was logged after ``s`` (``metrics.jsonl`` truncated, purge step ``s + 1``) so no step appears twice;
    with ``cut=False`` (runs whose parts stop at different steps, like one SAC per task) it appends."""
    metrics = run_dir / "metrics.jsonl"
    if resumed_at is None:
        truncate_jsonl(metrics, None)
        purge: int | None = 0
    elif cut:
        truncate_jsonl(metrics, resumed_at)
        purge = resumed_at + 1
    else:
        purge = None
    logger = Logger([TensorBoardWriter(run_dir, purge_step=purge), JsonlWriter(metrics)])
    if layout is not None:
        logger.layout(layout)
    return logger
