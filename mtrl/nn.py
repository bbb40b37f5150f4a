"""Multi-task network blocks: a shared MLP trunk and batched per-task heads.

Rows are always grouped by task: a batch is a tensor ``(T, n, features)`` where slice ``t`` holds
task ``t``'s ``n`` rows (stratified replay batches, or one row per task when acting in a vectorised
multi-task env). Per-task heads are one batched weight ``(T, in, out)`` applied with a single
``torch.baddbmm``: no Python loop over heads, and the cost grows with ``T`` only through that matmul.

``MultiTaskMLP.shared_parameters()`` / ``task_parameters()`` tell the gradient engine which
parameters are shared and which are task-specific; the trunk's ``nn.Linear`` layers are what the
engine's task-partitioned strategy hooks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["BatchedLinear", "MultiTaskMLP", "mlp"]


class BatchedLinear(nn.Module):
    """``T`` independent linear maps applied to task-grouped rows: ``y_t = x_t W_t + b_t``.

    Shapes: ``weight (T, in, out)``, ``bias (T, 1, out)``, input ``(T, n, in)``, output ``(T, n, out)``.
    Initialised like ``nn.Linear`` (uniform in ``±1/√in``) independently per task.
    """

    def __init__(self, num_tasks: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(num_tasks, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_tasks, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
            self.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x_TNI: Tensor) -> Tensor:
        if x_TNI.dim() != 3 or x_TNI.shape[0] != self.num_tasks or x_TNI.shape[2] != self.in_features:
            raise ValueError(
                f"BatchedLinear expects input (T, n, in) = ({self.num_tasks}, n, {self.in_features}) "
                f"with rows grouped by task; got {tuple(x_TNI.shape)}"
            )
        return torch.baddbmm(self.bias, x_TNI, self.weight)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, in_features={self.in_features}, out_features={self.out_features}"


def mlp(in_features: int, hidden: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """``Linear → act`` for each hidden width (the output of the last hidden layer is activated)."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), activation()]
        width = h
    return nn.Sequential(*layers)


class MultiTaskMLP(nn.Module):
    """Shared MLP trunk followed by batched per-task output heads.

    ``forward(x (T, n, in)) -> (T, n, out)``. With ``hidden=(400, 400, 400)`` this is the 3×400 ReLU
    network of the multi-task SAC references, with the output layer made task-specific (multi-head).
    """

    def __init__(self, num_tasks: int, in_features: int, hidden: Sequence[int], out_features: int) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MultiTaskMLP needs at least one hidden layer (the shared trunk)")
        self.num_tasks = num_tasks
        self.trunk = mlp(in_features, hidden)
        self.heads = BatchedLinear(num_tasks, hidden[-1], out_features)

    def features(self, x_TNI: Tensor) -> Tensor:
        """Shared representation ``z (T, n, hidden[-1])``."""
        return self.trunk(x_TNI)

    def forward(self, x_TNI: Tensor) -> Tensor:
        return self.heads(self.trunk(x_TNI))

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def task_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def head_modules(self) -> list[nn.Module]:
        """The per-task output layer (one :class:`BatchedLinear` for all tasks): :meth:`task_parameters`."""
        return [self.heads]
