"""DWA: dynamic weight average from the rate of change of window-averaged losses."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from mtrl.balancers.base import LossWeighting

__all__ = ["DWA"]

_STATE_KEYS = ("window_sum", "window_count", "prev_mean", "prev_prev_mean")


class DWA(LossWeighting):
    """Weight each loss by the softmax of its recent relative descent rate: ``S_t = w_t L_t``.

    Update rule: ``w_t(k) = T · softmax_t(r_t(k) / temp)``, ``r_t(k) = L̄_t(k−1) / L̄_t(k−2)``, where
    ``L̄_t(j)`` is the mean loss of task ``t`` over the ``j``-th completed window of ``window`` calls
    and ``k`` is the current (incomplete) window. ``w = 1`` until two windows are complete. ``w`` is
    constant inside a window and detached: every parameter receives ``∇ Σ_t w_t L_t``.

    Paper: Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019,
    arXiv 1803.10704, the Dynamic Weight Average equation (``K = T``, temperature
    ``temp = 2``; equation number not verified here, the full text was not available).

    Note: the paper and LibMTL average losses per *epoch*; RL has no epochs, so the window is a
    number of steps. The default ``window = 100`` is about one LibMTL NYUv2 epoch (795 training
    images at batch size 8); tune it to the loss noise of the run. The losses of a call are added
    to the current window *after* its weights are computed. The ratio needs positive window means,
    so DWA is declared positive-losses-only (LibMTL does not check).

    Stateful: the running window sum and count and the last two window means are in
    :meth:`state_dict`. Shapes: ``losses (T,)`` → ``S (T,)``; ``last_weights (T,)`` sum to ``T``.
    """

    name = "dwa"
    positive_losses = True
    stateful = True
    #: Loss scaling ``L → S·L`` with ``S`` changing between steps changes the loss ratios.
    loss_scale_problem: ClassVar[str | None] = (
        "its softmax of loss ratios changes when the loss scale changes between windows"
    )

    def __init__(self, num_tasks: int, temp: float = 2.0, window: int = 100) -> None:
        super().__init__(num_tasks)
        if not temp > 0:
            raise ValueError(f"temp must be > 0, got {temp!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int (steps per averaging window), got {window!r}")
        self.temp = float(temp)
        self.window = window
        self.last_weights: Tensor | None = None
        self.reset()

    def reset(self) -> None:
        self.window_sum: Tensor | None = None  # (T,) float64 sum of the losses of the current window
        self.window_count = 0
        self.prev_mean: Tensor | None = None  # L̄(k−1) (T,)
        self.prev_prev_mean: Tensor | None = None  # L̄(k−2) (T,)
        self.last_weights = None

    def current_weights(self, like: Tensor) -> Tensor:
        """``w (T,)`` for the current window, in the dtype and on the device of ``like``."""
        if self.prev_mean is None or self.prev_prev_mean is None:
            return torch.ones(self.num_tasks, dtype=like.dtype, device=like.device)
        ratio = self.prev_mean.to(like.device) / self.prev_prev_mean.to(like.device)
        return (self.num_tasks * torch.softmax(ratio / self.temp, dim=0)).to(like.dtype)

    def scalarize(self, losses: Tensor) -> Tensor:
        """``S_t = w_t L_t`` for ``losses (T,)`` → ``S (T,)``; then record the losses in the window."""
        self.check(losses)
        w = self.current_weights(losses)
        self.last_weights = w
        self._record(losses.detach().to(torch.float64))
        return w * losses

    def _record(self, losses64: Tensor) -> None:
        self.window_sum = (
            losses64.clone() if self.window_sum is None else self.window_sum + losses64.to(self.window_sum.device)
        )
        self.window_count += 1
        if self.window_count == self.window:
            self.prev_prev_mean = self.prev_mean
            self.prev_mean = self.window_sum / self.window
            self.window_sum = None
            self.window_count = 0

    def state_dict(self) -> dict[str, Any]:
        def copy(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.detach().clone()

        return {
            "window_sum": copy(self.window_sum),
            "window_count": self.window_count,
            "prev_mean": copy(self.prev_mean),
            "prev_prev_mean": copy(self.prev_prev_mean),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(_STATE_KEYS):
            raise ValueError(f"DWA state must have keys {list(_STATE_KEYS)}, got {sorted(state)}")
        count = state["window_count"]
        if not isinstance(count, int) or not 0 <= count < self.window:
            raise ValueError(f"DWA state 'window_count' must be an int in [0, {self.window}), got {count!r}")
        self.reset()
        self.window_count = count
        for key in ("window_sum", "prev_mean", "prev_prev_mean"):
            value = state[key]
            if value is not None and (not isinstance(value, Tensor) or value.shape != (self.num_tasks,)):
                raise ValueError(f"DWA state {key!r} must be None or a ({self.num_tasks},) tensor, got {value!r}")
            setattr(self, key, None if value is None else value.detach().clone().to(torch.float64))

    def extra_repr(self) -> str:
        return f"temp={self.temp}, window={self.window}"
