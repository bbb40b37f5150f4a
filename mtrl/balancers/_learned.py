"""Learned per-task weights with their own Adam: the state shared by UW, IMTL-L (and IMTL), FAMO and GradNorm.

Each of these balancers learns one tensor ``θ (T,)`` (UW's log-variances ``s``, IMTL-L's log-scales
``s``, FAMO's logits ``ξ``, GradNorm's weights ``w``) with a private Adam that the model's optimizer
never sees. :class:`LearnedWeights` holds ``θ`` and that Adam, so that every such balancer creates,
steps, saves, restores and forgets them the same way; the balancer keeps only its own rule (how
``θ`` enters the objective and where its gradient comes from).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["LearnedWeights"]


class LearnedWeights:
    """A learnable ``θ (T,)`` stepped by its own Adam (``lr``, L2 ``weight_decay``), created on first use.

    The convention every learned-weight balancer follows:

    * **Before the first use, and after** :meth:`reset`: ``value is None``, :meth:`parameters` is ``[]``
      and :meth:`state_dict` is ``{}`` (nothing learned yet, like a stateless balancer); the balancer's
      own diagnostics (``last_weights``, ``scale()``, ``task_probs()``) are None likewise.
    * **Creation**: :meth:`ensure` creates ``θ`` filled with the balancer's initial value, in the dtype and
      on the device the balancer picks from its first input (each balancer states its dtype rule).
      Later calls move ``θ`` and its Adam moments when that dtype or device changes.
    * **Steps**: :meth:`step` applies one Adam step from ``θ.grad`` (written by the engine, or passed by
      the balancer), then clears the gradient; without a gradient it does nothing.
    * **State**: :meth:`state_dict` is ``{key: θ, "optimizer": Adam state}`` (copies: later steps do not
      change a saved state), plus the balancer's own entries. :meth:`load_state_dict` restores it
      (``θ`` keeps the saved dtype and device until the next :meth:`ensure`) and takes ``{}``, or the
      same keys with ``θ = None`` (what IMTL-L saved before its first use), as "not created yet".
    """

    def __init__(self, owner: str, key: str, num_tasks: int, lr: float, weight_decay: float = 0.0) -> None:
        self.owner = owner  # the balancer's name, for error messages
        self.key = key  # the name of θ in the balancer's state dict
        self.num_tasks = num_tasks
        self.lr = lr
        self.weight_decay = weight_decay
        self.value: Tensor | None = None
        self.optimizer: torch.optim.Adam | None = None

    def _install(self, value: Tensor, optimizer_state: Mapping[str, Any] | None) -> Tensor:
        self.value = value.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.value], lr=self.lr, weight_decay=self.weight_decay)
        if optimizer_state is not None:
            # a deep copy: Adam would otherwise share (and mutate) the moment tensors of ``optimizer_state``
            self.optimizer.load_state_dict(copy.deepcopy(dict(optimizer_state)))
        return self.value

    def ensure(self, init: float, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``θ``: created as ``full((T,), init)`` on first use, else moved (with its Adam moments) to ``dtype``
        and ``device`` when it is not there already."""
        if self.value is None or self.optimizer is None:
            return self._install(torch.full((self.num_tasks,), init, dtype=dtype, device=device), None)
        if self.value.dtype != dtype or self.value.device != device:
            return self._install(self.value.to(device=device, dtype=dtype), self.optimizer.state_dict())
        return self.value

    def parameters(self) -> list[Tensor]:
        """``[θ]``, or ``[]`` before the first use."""
        return [] if self.value is None else [self.value]

    def step(self, grad: Tensor | None = None) -> None:
        """One Adam step on ``θ`` from ``grad`` (if given) or the ``.grad`` already written; then clear it."""
        if self.value is None or self.optimizer is None:
            return
        if grad is not None:
            self.value.grad = grad
        if self.value.grad is None:
            return
        self.optimizer.step()
        self.value.grad = None

    def state_dict(self, **extra: Any) -> dict[str, Any]:
        """``{}`` before the first use, else ``{key: θ, "optimizer": Adam state, **extra}`` (copies)."""
        if self.value is None or self.optimizer is None:
            return {}
        return {self.key: self.value.detach().clone(), "optimizer": copy.deepcopy(self.optimizer.state_dict()), **extra}

    def load_state_dict(self, state: Mapping[str, Any], extra: tuple[str, ...] = ()) -> bool:
        """Restore :meth:`state_dict` (``extra``: the balancer's own keys, which it restores itself).

        Returns False (after :meth:`reset`) for a state saved before the first use; raises ``ValueError``
        for unknown or missing keys or a ``θ`` that is not a ``(T,)`` tensor.
        """
        self.reset()
        if not state:
            return False
        expected = sorted({self.key, "optimizer", *extra})
        if sorted(state) != expected:
            raise ValueError(
                f"{self.owner} state must have the keys {expected} (or be empty before the first use), "
                f"got {sorted(state)}"
            )
        value = state[self.key]
        if value is None:
            return False
        if not isinstance(value, Tensor) or value.shape != (self.num_tasks,):
            raise ValueError(
                f"{self.owner} state {self.key!r} must be a tensor of shape ({self.num_tasks},), got {value!r}"
            )
        self._install(value, state["optimizer"])
        return True

    def reset(self) -> None:
        """Forget ``θ`` and its Adam: the next :meth:`ensure` starts afresh."""
        self.value = None
        self.optimizer = None
