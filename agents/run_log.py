"""The writers of one run directory that survive a resume: TensorBoard with ``purge_step``, JSON lines truncated.

A resumed run continues from its checkpoint at step ``s``; whatever the interrupted process logged
after ``s`` is stale (the resumed run logs those steps again). So:

* :class:`RunTensorBoardWriter` opens its ``SummaryWriter`` with ``purge_step``: the event file starts
  with a ``SessionLog.START`` at that step, and TensorBoard's reader drops every earlier-read event
  at a step ``>= purge_step`` (``EventAccumulator._CheckForRestartAndMaybePurge``). The trainer uses
  ``purge_step = s + 1`` (what was logged at ``s`` itself preceded the checkpoint and is kept) and
  ``0`` for a fresh run (stale events of an earlier attempt in the same directory disappear).
* :func:`truncate_jsonl` drops the ``metrics.jsonl`` rows logged after ``s`` (and the old ``hparams``
  rows, re-written at every start).
* The hparams summary (experiment + session start) is written at start-up into the run's own event
  file (``SummaryWriter.add_hparams`` would open another writer, i.e. another event file, per call),
  with the metric tags the trainer logs as ordinary scalars at every evaluation. TensorBoard keeps
  one summary per tag and run, so a resumed run still shows one session with the latest config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunTensorBoardWriter", "truncate_jsonl"]


class RunTensorBoardWriter:
    """TensorBoard writer of a run directory (the ``mtrl.logger.Writer`` protocol) with ``purge_step``.

    Args:
        logdir: the run directory (event files go straight into it).
        purge_step: see the module docstring; None = no purge marker.
    """

    def __init__(self, logdir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self._writer = SummaryWriter(log_dir=str(self.logdir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, float(value), global_step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._writer.add_text(tag, text, global_step=step)

    def image(self, tag: str, image_HWC: np.ndarray, step: int) -> None:
        self._writer.add_image(tag, image_HWC, global_step=step, dataformats="HWC")

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Write the hparams experiment and session-start summaries; ``metrics`` names the metric
        tags (their values are ignored: TensorBoard reads the scalars logged under those tags)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        experiment, session_start, _ = hparams_summaries(dict(hparams), dict(metrics))
        file_writer = self._writer._get_file_writer()
        file_writer.add_summary(experiment)
        file_writer.add_summary(session_start)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def truncate_jsonl(path: str | Path, max_step: int | None) -> None:
    """Keep the rows of ``path`` with ``step <= max_step`` (rows without a step, i.e. hparams, are
    dropped: the trainer writes them again). ``max_step=None`` deletes the file. Atomic rewrite."""
    p = Path(path)
    if not p.exists():
        return
    if max_step is None:
        p.unlink()
        return
    kept = []
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= max_step:
            kept.append(line)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    tmp.replace(p)
