"""Loss closures: recompute the per-task losses with substituted parameter values (sgsu, dgr).

A :class:`LossClosure` is ``loss_fn(shared_values, task_values) -> losses (T,)``: it re-evaluates the
per-task losses on the *same* batch with ``shared_values`` standing in for the engine's
``shared_params`` and ``task_values`` for its ``task_params`` (same order and shapes; ``None`` keeps
the current values). The values may carry autograd history (virtual steps, dummy heads), so the
closure must be differentiable in them: build it with ``torch.func.functional_call``, which is
what :func:`make_loss_fn` does. ``dgr`` with heads that hold buffers (BatchNorm running statistics)
also passes ``buffers=[(buffer, value), ...]``: the dummy heads' own buffers stand in for the real
heads' (so a dummy forward never updates the real running statistics); closures built by
:func:`make_loss_fn` accept it, and ``dgr`` passes it only when there are such buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["LossClosure", "make_loss_fn"]


class LossClosure(Protocol):
    """``loss_fn(shared_values, task_values, buffers=None) -> losses (T,)`` (module docstring)."""

    def __call__(
        self,
        shared_values: Sequence[Tensor] | None,
        task_values: Sequence[Tensor] | None,
        /,
        buffers: Sequence[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor: ...


def _names(module: nn.Module, params: Sequence[Tensor], what: str) -> list[str]:
    by_id = {id(p): name for name, p in module.named_parameters(remove_duplicate=False)}
    missing = [tuple(p.shape) for p in params if id(p) not in by_id]
    if missing:
        raise ValueError(f"make_loss_fn: {what} with shapes {missing} are not parameters of {type(module).__name__}")
    return [by_id[id(p)] for p in params]


def _substitute(names: list[str], params: Sequence[Tensor], values: Sequence[Tensor], what: str) -> dict[str, Tensor]:
    if len(values) != len(names):
        raise ValueError(f"loss_fn got {len(values)} {what} values for {len(names)} {what} parameters")
    for value, p, name in zip(values, params, names, strict=True):
        if value.shape != p.shape:
            raise ValueError(
                f"loss_fn: {what} value for {name!r} has shape {tuple(value.shape)}, expected {tuple(p.shape)}"
            )
    return dict(zip(names, values, strict=True))


def _buffer_values(module: nn.Module, buffers: Sequence[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    by_id = {id(b): name for name, b in module.named_buffers(remove_duplicate=False)}
    out: dict[str, Tensor] = {}
    for buffer, value in buffers:
        if id(buffer) not in by_id:
            raise ValueError(f"loss_fn: a buffer of shape {tuple(buffer.shape)} is not in {type(module).__name__}")
        if value.shape != buffer.shape:
            raise ValueError(
                f"loss_fn: value for buffer {by_id[id(buffer)]!r} has shape {tuple(value.shape)}, "
                f"expected {tuple(buffer.shape)}"
            )
        out[by_id[id(buffer)]] = value
    return out


def make_loss_fn(
    module: nn.Module,
    params_shared: Sequence[Tensor],
    params_task: Sequence[Tensor],
    compute: Callable[[Callable[..., Any]], Tensor],
) -> LossClosure:
    """Build a :class:`LossClosure` for ``module`` from a function of its forward.

    ``compute(forward)`` must return the per-task losses ``(T,)`` of the current batch, calling
    ``forward(*args, **kwargs)`` wherever it would call ``module(*args, **kwargs)``; the closure
    passes a ``forward`` that runs ``torch.func.functional_call(module, substituted, args, kwargs)``
    with the given values for ``params_shared`` / ``params_task`` and, for ``buffers=[(buffer, value)]``,
    for those buffers of ``module`` (everything else keeps its current value).

    >>> loss_fn = make_loss_fn(net, net.shared_parameters(), net.task_parameters(),
    ...                        lambda forward: ((forward(x_TNI) - y_TNO) ** 2).mean(dim=(1, 2)))
    """
    shared_names = _names(module, params_shared, "params_shared")
    task_names = _names(module, params_task, "params_task")

    def loss_fn(
        shared_values: Sequence[Tensor] | None,
        task_values: Sequence[Tensor] | None,
        /,
        buffers: Sequence[tuple[Tensor, Tensor]] | None = None,
    ) -> Tensor:
        substituted: dict[str, Tensor] = {}
        if shared_values is not None:
            substituted.update(_substitute(shared_names, params_shared, shared_values, "shared"))
        if task_values is not None:
            substituted.update(_substitute(task_names, params_task, task_values, "task"))
        if buffers:
            substituted.update(_buffer_values(module, buffers))

        def forward(*args: Any, **kwargs: Any) -> Any:
            return functional_call(module, substituted, args, kwargs)

        return compute(forward)

    return loss_fn
