"""Forward hooks on a trunk's ``nn.Linear`` (and ``nn.LayerNorm``) layers for the task-partitioned strategy.

When every row of the batch belongs to one task (rows ``t*n:(t+1)*n`` are task ``t``: stratified
replay batches, task-grouped ``(T, n, ·)`` tensors) and no layer mixes rows, the gradient of task
``t``'s term ``S_t`` w.r.t. a linear layer ``y = x Wᵀ + b`` is, with ``δ = ∂(Σ_s S_s)/∂y``::

    ∂S_t/∂W = δ_tᵀ X_t   (out, in)        ∂S_t/∂b = Σ_rows δ_t   (out,)

over that task's rows only, because the other tasks' terms do not depend on those rows. So one
ordinary backward to the layer outputs gives every task's gradient at once. A LayerNorm over the last
dimension, ``y = x̂ ⊙ γ + β`` with ``x̂`` the row normalised on its own, is the same kind of layer::

    ∂S_t/∂γ = Σ_rows δ_t ⊙ X̂_t   (features,)   ∂S_t/∂β = Σ_rows δ_t   (features,)

(``X̂`` recomputed from the recorded input). This module records the ``(X, y)`` pairs;
:mod:`mtrl.engine.strategies` turns them into ``J``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LinearCall", "LinearCapture"]


#: ``torch.autograd.graph.get_gradient_edge`` (torch >= 2.2): differentiate w.r.t. a layer output
#: without keeping the output tensor alive.
_get_gradient_edge = getattr(torch.autograd.graph, "get_gradient_edge", None)


@dataclass(frozen=True)
class LinearCall:
    """One recorded call of a hooked layer: detached input ``x (..., in)`` and where its output ``y (..., out)``
    enters the graph.

    ``output`` is the autograd edge of ``y`` (a ``GradientEdge``, see :func:`_edge_target`; on torch
    < 2.2 or for an unusual view, the tensor itself): ``torch.autograd.grad(·, call.output)`` gives
    ``∂/∂y`` of the value the layer produced (rows as in ``y``), also when an in-place activation
    later overwrote ``y``. Holding the edge instead of ``y`` lets autograd free ``y`` after the forward
    as usual: holding the three ``(T·n, 400)`` trunk outputs made the backward ~10% slower (its
    buffers could not reuse their memory).
    """

    layer: nn.Linear | nn.LayerNorm
    inputs: Tensor
    output: Any  # GradientEdge, or the output Tensor on torch < 2.2
    input_version: int  # ``inputs._version`` at record time: a later in-place edit of x would corrupt ``J``
    output_version: int | None  # ``y._version`` at record time when ``output`` is the tensor (torch < 2.2)


def _edge_target(output: Tensor) -> Tensor | None:
    """The tensor whose gradient edge stands for ``output``, or None to keep ``output`` itself.

    An output that is no view: itself (its edge survives in-place edits of ``output``). ``F.linear``
    on a ``(T, n, in)`` input returns a view of the ``(T·n, out)`` product; an in-place edit of such a
    view re-routes the graph around the view's node (its edge would then receive nothing), but the
    product's own node keeps receiving ``∂/∂(product)``: the base, when it holds exactly the view's
    elements in the same order. Other views: None.
    """
    if not output._is_view():
        return output
    base = output._base
    if base is not None and base.requires_grad and base.numel() == output.numel():
        if base.is_contiguous() and output.is_contiguous():
            return base
    return None


def _hooked(module: nn.Module) -> bool:
    """An ``nn.Linear``, or an ``nn.LayerNorm`` over the last dimension with a learned scale."""
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.LayerNorm) and module.weight is not None and len(module.normalized_shape) == 1


class LinearCapture:
    """Record inputs and outputs of every ``nn.Linear`` (and affine ``nn.LayerNorm`` over the last
    dimension) inside ``module`` during one forward.

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
    task); no in-place edit of a hooked layer's input after the call (detected and refused). An
    in-place activation on a layer output (``nn.ReLU(inplace=True)``) is fine on torch >= 2.2 (the
    gradient is taken at the layer's own output edge) and detected and refused on older torch. A violated row
    assumption is not detectable from the hooks and silently gives a wrong ``J``: check a new model
    once against ``strategy="reference"``.
    """

    def __init__(self, module: nn.Module, num_tasks: int) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive int, got {num_tasks!r}")
        self.layers: list[nn.Linear | nn.LayerNorm] = [
            m for m in module.modules() if isinstance(m, (nn.Linear, nn.LayerNorm)) and _hooked(m)
        ]
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
        assert isinstance(layer, (nn.Linear, nn.LayerNorm))
        inputs = args[0].detach()  # shares the version counter of args[0]
        target = _edge_target(output)
        if _get_gradient_edge is not None and target is not None:
            self.calls.append(LinearCall(layer, inputs, _get_gradient_edge(target), inputs._version, None))
        else:
            self.calls.append(LinearCall(layer, inputs, output, inputs._version, output._version))

    def clear(self) -> None:
        """Drop the recorded tensors (and with them the references to the autograd graph)."""
        self.calls = []

    def __len__(self) -> int:
        return len(self.calls)

    def __repr__(self) -> str:
        return f"LinearCapture(layers={len(self.layers)}, num_tasks={self.num_tasks}, recorded_calls={len(self.calls)})"
