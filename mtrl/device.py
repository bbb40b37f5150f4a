"""Device selection shared by the RL and vision trainers (devices are never hard-coded)."""

from __future__ import annotations

import re

import torch

from mtrl.config import ConfigError

__all__ = ["check_device_name", "resolve_device", "resolve_device_name", "synchronize"]

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_VALID_DEVICES = "'auto', 'cpu', 'cuda', 'cuda:<index>', 'mps'"


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"bad device {name!r}; valid: 'auto', 'cpu', 'cuda', 'cuda:<i>', 'mps'") from err


def check_device_name(name: str) -> None:
    """Raise :class:`~mtrl.config.ConfigError` naming the key ``device`` for a malformed device name."""
    if not _DEVICE_RE.match(name):
        raise ConfigError(f"bad value {name!r} for 'device'; valid choices: {_VALID_DEVICES}")


def resolve_device_name(name: str) -> str:
    """The device ``name`` resolves to on this machine (``"auto"`` → ``"cuda"`` or ``"cpu"``).

    Raises :class:`ConfigError` naming the key ``device`` and the devices valid here for a
    malformed name or a device this machine does not have. Called when a config is resolved
    (``agents.config.TrainConfig.resolve``); the resolved name then goes straight to ``torch.device``.
    """
    available = ["'auto'", "'cpu'"]
    if torch.cuda.is_available():
        available += ["'cuda'"] + [f"'cuda:{i}'" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if has_mps:
        available.append("'mps'")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device_name(name)
    device = torch.device(name)
    missing = (
        (device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()))
        or (device.type == "mps" and not has_mps)
    )
    if missing:
        raise ConfigError(
            f"bad value {name!r} for 'device': not available on this machine; valid here: {', '.join(available)}"
        )
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA kernels run asynchronously; CPU work does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
