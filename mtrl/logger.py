"""A tiny logger with pluggable writers; TensorBoard is the monitoring interface.

Metric keys are namespaced (``train/critic_loss``, ``balancer/critic/weight/<task>``,
``eval/success/<task>``, ``perf/sps``). :func:`report_scalars` turns an engine report into those keys.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["JsonlWriter", "Logger", "TensorBoardWriter", "Writer", "flatten_hparams"]


class Writer(Protocol):
    def scalars(self, values: Mapping[str, float], step: int) -> None: ...
    def text(self, tag: str, text: str, step: int) -> None: ...
    def image(self, tag: str, image_HWC: np.ndarray, step: int) -> None: ...
    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


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
    """Writes scalars, text, images and hparams to TensorBoard event files in ``logdir``."""

    def __init__(self, logdir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = Path(logdir)
        self._writer = SummaryWriter(log_dir=str(self.logdir))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self._writer.add_scalar(tag, float(value), global_step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._writer.add_text(tag, text, global_step=step)

    def image(self, tag: str, image_HWC: np.ndarray, step: int) -> None:
        self._writer.add_image(tag, image_HWC, global_step=step, dataformats="HWC")

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        # run_name="." keeps the hparams summary in the run's own directory.
        self._writer.add_hparams(dict(hparams), dict(metrics), run_name=".")

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

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


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

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()
