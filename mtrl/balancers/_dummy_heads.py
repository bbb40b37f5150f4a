"""DGR's dummy heads: fresh default-initialised copies of the task heads, placed like the real ones.

:class:`mtrl.balancers.dgr.DGR` evaluates the head-gradient norm on such copies (the paper's "dummy
gradient"); this module builds them, so that ``dgr.py`` holds the method itself.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["default_initialised_copy", "fresh_values", "head_tensors", "placed"]


def head_tensors(heads: Sequence[nn.Module]) -> tuple[list[Tensor], list[Tensor]]:
    """``(parameters, buffers)`` of ``heads``, flat, in ``heads`` order."""
    if isinstance(heads, nn.Module) or not all(isinstance(h, nn.Module) for h in heads):
        raise TypeError("dgr: heads must be a sequence of nn.Module (the task-head modules), e.g. [model.heads]")
    return [p for h in heads for p in h.parameters()], [b for h in heads for b in h.buffers()]


def default_initialised_copy(module: nn.Module) -> nn.Module:
    """A CPU deep copy of ``module`` with PyTorch's default initialisation, drawn from the global CPU
    generator: every submodule that owns parameters or buffers is reset by its ``reset_parameters()``.

    Raises ``ValueError`` for a submodule that owns parameters or buffers but has no ``reset_parameters``
    (its default initialisation is unknown)."""
    fresh = copy.deepcopy(module).cpu()
    for sub in fresh.modules():
        owns = any(True for _ in sub.parameters(recurse=False)) or any(True for _ in sub.buffers(recurse=False))
        if not owns:
            continue
        reset = getattr(sub, "reset_parameters", None)
        if not callable(reset):
            raise ValueError(
                f"dgr: head submodule {type(sub).__name__} owns parameters or buffers but has no reset_parameters(), "
                "so its default initialisation is unknown; give it one (or make it part of the shared parameters)"
            )
        with torch.no_grad():
            reset()
    return fresh


def fresh_values(heads: Sequence[nn.Module], gen: torch.Generator) -> list[Tensor]:
    """One dummy set on the CPU: the parameters then the buffers of default-initialised copies of ``heads``,
    drawn from ``gen`` (through the global CPU generator, whose state is restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.set_state(gen.get_state())
        copies = [default_initialised_copy(h) for h in heads]
        gen.set_state(torch.default_generator.get_state())
    params = [p.detach() for c in copies for p in c.parameters()]
    buffers = [b.detach() for c in copies for b in c.buffers()]
    return params + buffers


def placed(value: Tensor, real: Tensor, grad: bool) -> Tensor:
    """``value`` on ``real``'s device, dtype and memory layout (a copy only when they differ); parameters
    require grad."""
    if value.device != real.device or value.dtype != real.dtype or value.stride() != real.stride():
        value = torch.empty_like(real).copy_(value)
    return value.requires_grad_(True) if grad and not value.requires_grad else value
