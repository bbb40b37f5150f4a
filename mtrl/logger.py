"""A tiny logger with pluggable writers; TensorBoard is the monitoring interface.

Metric keys are namespaced (``train/critic_loss``, ``balancer/critic/weight/<task>``,
``eval/success/<task>``, ``perf/sps``). :func:`report_scalars` turns an engine report into those keys.

A run directory's logs survive a resume from a checkpoint at step ``s``; whatever the interrupted
process logged after ``s`` is stale (the resumed run logs those steps again), so the trainers:

* open :class:`TensorBoardWriter` with ``purge_step``: the event file starts with a
  ``SessionLog.START`` at that step, and TensorBoard's reader drops every earlier-read event at a
  step ``>= purge_step`` (``EventAccumulator._CheckForRestartAndMaybePurge``). Resumed runs use
  ``s + 1`` (what was logged at ``s`` itself preceded the checkpoint and is kept), fresh runs ``0``
  (stale events of an earlier attempt in the same directory disappear);
* cut ``metrics.jsonl`` back with :func:`truncate_jsonl`.

TensorBoard's default view groups scalars by tag prefix, so an MT10 run shows one card per task and metric.
:func:`custom_scalars_layout` builds the layout of its CUSTOM SCALARS tab (:data:`RL_CHARTS`,
:data:`STL_CHARTS`, :data:`VISION_CHARTS`): one chart per metric with a line per task (evaluation success
and return, the balancer's weights, α, the losses), which ``mtrl.resume.open_logs`` writes once into every
run's event file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = [
    "RL_CHARTS",
    "STL_CHARTS",
    "VISION_CHARTS",
    "JsonlWriter",
    "Layout",
    "Logger",
    "PerTaskChart",
    "TensorBoardWriter",
    "Writer",
    "custom_scalars_layout",
    "flatten_hparams",
    "truncate_jsonl",
]

#: A custom-scalars layout as ``SummaryWriter.add_custom_scalars`` takes it: category → chart title →
#: ``["Multiline", [tag regex, ...]]`` (TensorBoard draws one line per logged tag a regex matches).
Layout = dict[str, dict[str, list[Any]]]


class Writer(Protocol):
    def scalars(self, values: Mapping[str, float], step: int) -> None: ...
    def text(self, tag: str, text: str, step: int) -> None: ...
    def image(self, tag: str, image_HWC: np.ndarray, step: int) -> None: ...
    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None: ...
    def layout(self, layout: Layout) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PerTaskChart:
    """One chart of the custom-scalars tab with a line per task.

    ``tag`` is the scalar tag of one task's line, with ``{task}`` standing for the task name
    (``"eval/success/{task}"``). With ``each_task=True`` the chart is drawn once per task instead, titled
    ``title`` with ``{task}`` filled in, with a line for every tag that starts with ``tag`` (a vision task's
    evaluation metrics, whose names differ between tasks)."""

    category: str
    title: str
    tag: str
    each_task: bool = False


#: The per-task charts of the multi-task SAC runs (``agents.trainer``).
RL_CHARTS: tuple[PerTaskChart, ...] = (
    PerTaskChart("per task: evaluation", "success", "eval/success/{task}"),
    PerTaskChart("per task: evaluation", "return", "eval/return/{task}"),
    PerTaskChart("per task: training episodes", "success (stochastic policy)", "rollout/success/{task}"),
    PerTaskChart("per task: training episodes", "return (stochastic policy)", "rollout/return/{task}"),
    PerTaskChart("per task: balancer", "critic weight", "balancer/critic/weight/{task}"),
    PerTaskChart("per task: balancer", "actor weight", "balancer/actor/weight/{task}"),
    PerTaskChart("per task: balancer", "critic gradient norm", "balancer/critic/grad_norm/{task}"),
    PerTaskChart("per task: balancer", "actor gradient norm", "balancer/actor/grad_norm/{task}"),
    PerTaskChart("per task: training", "alpha (entropy temperature)", "train/alpha/{task}"),
    PerTaskChart("per task: training", "critic loss", "train/critic_loss/{task}"),
    PerTaskChart("per task: training", "actor loss", "train/actor_loss/{task}"),
)

#: The per-task charts of the single-task reference (``agents.stl``, one SAC per task): the RL charts
#: without the balancer's and the training episodes' (SB3 logs no per-episode tags here).
STL_CHARTS: tuple[PerTaskChart, ...] = tuple(c for c in RL_CHARTS if not c.tag.startswith(("balancer/", "rollout/")))

#: The per-task charts of the vision runs (``mtrl.vision.trainer``): losses and the encoder balancer's
#: weights with a line per task, and one chart of each task's evaluation metrics.
VISION_CHARTS: tuple[PerTaskChart, ...] = (
    PerTaskChart("per task: evaluation", "loss", "eval/loss/{task}"),
    PerTaskChart("per task: evaluation", "{task} metrics", "eval/{task}/", each_task=True),
    PerTaskChart("per task: balancer", "encoder weight", "balancer/encoder/weight/{task}"),
    PerTaskChart("per task: balancer", "encoder gradient norm", "balancer/encoder/grad_norm/{task}"),
    PerTaskChart("per task: training", "loss", "train/loss/{task}"),
)


def custom_scalars_layout(charts: Sequence[PerTaskChart], task_names: Sequence[str]) -> Layout:
    """The custom-scalars layout of ``charts`` for a run of ``task_names``: each chart's line regexes match
    its tasks' tags exactly (a per-task chart) or by prefix (``each_task``); categories keep their order."""
    layout: Layout = {}
    for chart in charts:
        category = layout.setdefault(chart.category, {})
        if chart.each_task:
            for task in task_names:
                category[chart.title.format(task=task)] = ["Multiline", [re.escape(chart.tag.format(task=task))]]
        else:
            category[chart.title] = ["Multiline", [f"{re.escape(chart.tag.format(task=task))}$" for task in task_names]]
    return layout


def flatten_hparams(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config dict into TensorBoard-friendly hparams (lists become strings)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_hparams(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class TensorBoardWriter:
    """Writes scalars, text, images and hparams to one TensorBoard event file in ``logdir``.

    Args:
        logdir: the run directory (the event file goes straight into it).
        purge_step: drop earlier events at steps ``>= purge_step`` when read (see the module
            docstring); None = no purge marker.
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
        """Write the hparams experiment and session-start summaries into this writer's event file.

        ``metrics`` names the metric tags; their values are ignored (TensorBoard's hparams table reads
        the scalars logged under those tags, so log them with :meth:`scalars`). Unlike
        ``SummaryWriter.add_hparams``, this opens no second event file, so a run can write its hparams
        at start-up and a resumed run still shows one session (one summary per tag and run).
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        experiment, session_start, _ = hparams_summaries(dict(hparams), dict(metrics))
        file_writer = self._writer._get_file_writer()
        file_writer.add_summary(experiment)
        file_writer.add_summary(session_start)

    def layout(self, layout: Layout) -> None:
        """Write the custom-scalars ``layout`` (see :func:`custom_scalars_layout`) into the event file."""
        self._writer.add_custom_scalars(layout)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class JsonlWriter:
    """Appends scalars as JSON lines to ``path`` (a grep-able record next to the event files)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = self.path.open("a")

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        self._fh.write(json.dumps(row) + "\n")

    def text(self, tag: str, text: str, step: int) -> None:
        self._fh.write(json.dumps({"step": step, "text": {tag: text}}) + "\n")

    def image(self, tag: str, image_HWC: np.ndarray, step: int) -> None:
        return None

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        self._fh.write(json.dumps({"hparams": dict(hparams)}, default=str) + "\n")

    def layout(self, layout: Layout) -> None:
        return None  # a TensorBoard view; the JSON lines hold the scalars only

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def truncate_jsonl(path: str | Path, max_step: int | None) -> None:
    """Keep the rows of ``path`` with ``step <= max_step`` (rows without a step, i.e. hparams, are
    dropped: the trainers write them again). ``max_step=None`` deletes the file. Atomic rewrite."""
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


class Logger:
    """Fans scalars, text and images out to its writers; drops non-finite values with a count."""

    def __init__(self, writers: Sequence[Writer]) -> None:
        self.writers = list(writers)
        self.dropped_non_finite = 0

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        clean = {}
        for k, v in values.items():
            fv = float(v)
            if math.isfinite(fv):
                clean[k] = fv
            else:
                self.dropped_non_finite += 1
        for w in self.writers:
            w.scalars(clean, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        for w in self.writers:
            w.text(tag, text, step)

    def image(self, tag: str, image_HWC: np.ndarray, step: int) -> None:
        for w in self.writers:
            w.image(tag, image_HWC, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        for w in self.writers:
            w.hparams(hparams, metrics)

    def layout(self, layout: Layout) -> None:
        """Hand the custom-scalars ``layout`` to every writer (TensorBoard's writes it; the others skip it)."""
        for w in self.writers:
            w.layout(layout)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()
