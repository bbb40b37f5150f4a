"""Multi-task network blocks: a shared MLP trunk and batched per-task heads.

Rows are always grouped by task: a batch is a tensor ``(T, n, features)`` where slice ``t`` holds
task ``t``'s ``n`` rows (stratified replay batches, or one row per task when acting in a vectorised
multi-task env). Per-task heads are one batched weight ``(T, in, out)`` applied with a single
``torch.baddbmm``: no Python loop over heads, and the cost grows with ``T`` only through that matmul.

``MultiTaskMLP.shared_parameters()`` / ``task_parameters()`` tell the gradient engine which
parameters are shared and which are task-specific; the trunk's ``nn.Linear`` (and ``nn.LayerNorm``)
layers are what the engine's task-partitioned strategy hooks.

A trunk is a plain ``Linear → act`` stack (:func:`mlp`), or, with LayerNorm or skip connections,
:class:`VanillaMLP`, the torso of Meta-World+'s vanilla MLP (see there); :func:`trunk` picks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LAYER_NORM_EPS", "BatchedLinear", "MultiTaskMLP", "VanillaMLP", "mlp", "trunk"]

#: ``ε`` of :class:`VanillaMLP`'s LayerNorms: flax ``nn.LayerNorm``'s default (torch's is 1e-5).
LAYER_NORM_EPS = 1e-6


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


class VanillaMLP(nn.Module):
    """An MLP torso with optional LayerNorm and skip connections, as Meta-World+'s vanilla MLP defines them.

    Mirrors ``MLP.__call__`` of ``metaworld_algorithms/nn/base.py`` (rainx0r/metaworld-algorithms,
    commit 30c9991) without its output layer (the caller's heads), for hidden widths ``h_0 … h_{L-1}``::

        for i in range(L):
            if layer_norm and i > 0:  x ← LN_i(x)            # the input itself is not normalised
            y ← act(W_i x + b_i)
            x ← x + y   if skip and width(x) == h_i   else   y  # x: the (normalised) layer input
        if layer_norm:  x ← LN_out(x)                         # before the output layer

    So with both options the skip adds the *normalised* input, and the first layer gets a skip only
    when the input width equals ``h_0``. The reference has one width for every layer; here the widths
    may differ, and "widths match" is checked per layer. LayerNorms have a learned scale (init 1) and
    bias (init 0) and ``ε = 1e-6`` (flax's default, :data:`LAYER_NORM_EPS`). Each LayerNorm acts on
    one row at a time, so rows of different tasks never mix (what the engine's ``task_partitioned``
    strategy needs; it hooks the LayerNorms as well as the linear layers).

    Shapes: ``(..., in_features) -> (..., hidden[-1])``.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        activation: type[nn.Module] = nn.ReLU,
        *,
        layer_norm: bool = False,
        skip: bool = False,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("VanillaMLP needs at least one hidden layer")
        widths = [in_features, *hidden]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        #: ``norms[i-1]`` normalises the input of layer ``i >= 1``; ``norms[-1]`` the output (when ``layer_norm``)
        self.norms = nn.ModuleList(nn.LayerNorm(h, eps=LAYER_NORM_EPS) for h in hidden) if layer_norm else None
        #: per layer: whether its (normalised) input is added to its activated output
        self.skips = tuple(skip and a == b for a, b in itertools.pairwise(widths))
        self.activation = activation()

    def forward(self, x: Tensor) -> Tensor:
        for i, linear in enumerate(self.linears):
            if self.norms is not None and i > 0:
                x = self.norms[i - 1](x)
            y = self.activation(linear(x))
            x = x + y if self.skips[i] else y
        if self.norms is not None:
            x = self.norms[-1](x)
        return x

    def extra_repr(self) -> str:
        return f"layer_norm={self.norms is not None}, skips={list(self.skips)}"


def trunk(
    in_features: int,
    hidden: Sequence[int],
    activation: type[nn.Module] = nn.ReLU,
    *,
    layer_norm: bool = False,
    skip: bool = False,
) -> nn.Module:
    """The shared trunk: :func:`mlp` (``Linear → act`` only, as before these options existed: same
    modules, parameter names and initialisation draws) unless ``layer_norm`` or ``skip`` asks for
    :class:`VanillaMLP`."""
    if layer_norm or skip:
        return VanillaMLP(in_features, hidden, activation, layer_norm=layer_norm, skip=skip)
    return mlp(in_features, hidden, activation)


class MultiTaskMLP(nn.Module):
    """Shared MLP trunk followed by batched per-task output heads.

    ``forward(x (T, n, in)) -> (T, n, out)``. With ``hidden=(400, 400, 400)`` this is the 3×400 ReLU
    network of the multi-task SAC references, with the output layer made task-specific (multi-head).
    ``layer_norm`` / ``skip``: the trunk is a :class:`VanillaMLP` with those options (the last
    LayerNorm, before the heads, is part of the trunk: :meth:`features` is what the heads read).
    """

    def __init__(
        self,
        num_tasks: int,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        layer_norm: bool = False,
        skip: bool = False,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MultiTaskMLP needs at least one hidden layer (the shared trunk)")
        self.num_tasks = num_tasks
        self.trunk = trunk(in_features, hidden, layer_norm=layer_norm, skip=skip)
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
