"""Forward hooks on a trunk's ``nn.Linear`` layers for the task-partitioned strategy.

When every row of the batch belongs to one task (rows ``t*n:(t+1)*n`` are task ``t``: stratified
replay batches, task-grouped ``(T, n, ·)`` tensors) and no layer mixes rows, the gradient of task
``t``'s term ``S_t`` w.r.t. a linear layer ``y = x Wᵀ + b`` is, with ``δ = ∂(Σ_s S_s)/∂y``::

    ∂S_t/∂W = δ_tᵀ X_t   (out, in)        ∂S_t/∂b = Σ_rows δ_t   (out,)

over that task's rows only, because the other tasks' terms do not depend on those rows. So one
ordinary backward to the layer outputs gives every task's gradient at once. This module records the
``(X, y)`` pairs; :mod:`mtrl.engine.strategies` turns them into ``J``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LinearCall", "LinearCapture"]


@dataclass(frozen=True)
class LinearCall:
    """One recorded call of a hooked layer: detached input ``x (..., in)`` and graph output ``y (..., out)``."""

    layer: nn.Linear
    inputs: Tensor
    output: Tensor
    version: int  # ``output._version`` at record time, to detect later in-place edits


class LinearCapture:
    """Record inputs and outputs of every ``nn.Linear`` inside ``module`` during one forward.

    >>> capture = LinearCapture(net.trunk, num_tasks=T)
    >>> with capture.record():
    ...     out = net(x_TNI)                    # rows grouped by task
    >>> engine.backward(losses_T, net.shared_parameters(), net.task_parameters(), capture=capture)

    Hooks exist only inside :meth:`record` and record only while grad is enabled (acting under
    ``torch.no_grad()`` records nothing). A layer called several times inside one record (e.g. the
    two critics of SAC sharing a trunk, or a trunk applied to observations and next observations)
    contributes the sum of its calls. Entering :meth:`record` forgets the previous recording; the
    engine calls :meth:`clear` after its backward so the saved tensors are freed.

    Requirements (checked where possible): each call's rows split into ``T`` equal task-major
    groups; no row-mixing layer (BatchNorm, attention across the batch); task ``t``'s term ``S_t``
    depends only on task ``t``'s rows (per-task means of per-row losses; a ``scalarize`` acting per
    task); no in-place operation on a layer output (``nn.ReLU(inplace=True)`` right after a hooked
    Linear is detected and refused). A violated row assumption is not detectable from the hooks and
    silently gives a wrong ``J``: check a new model once against ``strategy="reference"``.
    """

    def __init__(self, module: nn.Module, num_tasks: int) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
        self.layers: list[nn.Linear] = [m for m in module.modules() if isinstance(m, nn.Linear)]
        if not self.layers:
            raise ValueError(f"LinearCapture found no nn.Linear layer inside {type(module).__name__}")
        self.num_tasks = num_tasks
        self.calls: list[LinearCall] = []

    @contextmanager
    def record(self) -> Iterator[LinearCapture]:
        """Context manager: hook the layers for the forward run inside it."""
        self.clear()
        handles = [layer.register_forward_hook(self._hook) for layer in self.layers]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, layer: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if not torch.is_grad_enabled() or not isinstance(output, Tensor) or not output.requires_grad:
            return
        assert isinstance(layer, nn.Linear)
        self.calls.append(LinearCall(layer, args[0].detach(), output, output._version))

    def clear(self) -> None:
        """Drop the recorded tensors (and with them the references to the autograd graph)."""
        self.calls = []

    def __len__(self) -> int:
        return len(self.calls)

    def __repr__(self) -> str:
        return f"LinearCapture(layers={len(self.layers)}, num_tasks={self.num_tasks}, recorded_calls={len(self.calls)})"
