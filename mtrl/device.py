"""Device selection shared by the RL and vision trainers (devices are never hard-coded)."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"bad device {name!r}; valid: 'auto', 'cpu', 'cuda', 'cuda:<i>', 'mps'") from err
