"""Trusted loading of checkpoints and state files: ``torch.load(weights_only=True)`` with one allowlist.

A checkpoint is only data: tensors, numbers, strings and the containers holding them. Unpickling it with
``weights_only=False`` would run whatever a ``__reduce__`` inside the file names, so a run directory copied from
elsewhere (or a checkpoint replaced on a shared disk) could execute code on ``resume=true`` or
``scripts/evaluate.py``. Every checkpoint and state file of the project is therefore read by :func:`load_torch`,
which only rebuilds the types torch's weights-only unpickler allows plus :data:`SAFE_GLOBALS` (the numpy array
and scalar types that checkpoints of earlier releases hold, e.g. numpy's global RNG state tuple). Anything else
is refused with a one-line :class:`CheckpointError` naming the file and the global it asked for.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtrl.config import ConfigError

__all__ = ["SAFE_GLOBALS", "CheckpointError", "load_torch"]


class CheckpointError(ConfigError):
    """A checkpoint or state file that cannot be loaded: truncated, corrupt, or refused as untrusted."""


def _numpy_globals() -> list[Any]:
    """The numpy callables and classes that rebuild arrays, dtypes and scalars in a pickle (no code beyond that)."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    dtype_classes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGUS"]
    scalar_types = [np.dtype(code).type for code in "?bBhHiIlLqQefdgFDG"]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes, *scalar_types]


#: Globals a checkpoint may name besides torch's weights-only defaults: numpy arrays, dtypes and scalars (the
#: global RNG state of ``np.random.get_state()`` is a tuple holding a ``uint32`` array).
SAFE_GLOBALS: list[Any] = _numpy_globals()


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`SAFE_GLOBALS` allowed.

    Raises:
        CheckpointError: one line naming ``path`` and saying whether the file is missing, truncated or corrupt,
            or refused as untrusted (it names a global outside the allowlist, which is never imported or called).
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist") from e
    except pickle.UnpicklingError as e:
        message = str(e)
        if "global" in message.lower():
            raise CheckpointError(
                f"refusing to load {str(path)!r}: it is not plain checkpoint data ({_first_global(message)}); "
                "only load checkpoints you wrote or trust, and never with weights_only=False"
            ) from e
        raise CheckpointError(f"checkpoint file {str(path)!r} is corrupt ({_one_line(message)})") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(
            f"checkpoint file {str(path)!r} is truncated or corrupt ({type(e).__name__}: {_one_line(str(e))})"
        ) from e


def _one_line(message: str, limit: int = 200) -> str:
    line = " ".join(message.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first_global(message: str) -> str:
    """The 'Unsupported global: GLOBAL x.y ...' clause of torch's weights-only error, else its first line."""
    for line in message.splitlines():
        if "GLOBAL" in line or "global" in line:
            return _one_line(line.strip())
    return _one_line(message)
