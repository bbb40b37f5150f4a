"""Every random state a run draws from, captured once and restored exactly (checkpoints of all trainers).

:func:`capture_rng` takes python's ``random``, numpy's global generator (``np.random``), torch's CPU generator,
the CUDA generators when CUDA is available, and the run's own generators that the caller names (numpy
``Generator`` objects and ``torch.Generator`` objects, e.g. the multi-task trainer's action and batch samplers).
:func:`restore_rng` puts them back, so that a run resumed from a checkpoint draws what it would have drawn
uninterrupted. The captured state is plain data (lists, ints, tuples, ``uint8`` tensors), so it loads under
:func:`mtrl.checkpoint_io.load_torch`'s allowlist.

The captured dict::

    {"python": random.getstate(), "numpy": numpy_global_state(), "torch": ByteTensor,
     "cuda": [ByteTensor per device] or None,
     "numpy_generators": {name: bit_generator.state}, "torch_generators": {name: ByteTensor}}

:func:`restore_rng` also reads the two layouts of earlier releases: the multi-task trainer's
(``numpy_global``, ``cuda`` only when CUDA was available, each named generator a top-level key) and the vision
trainer's (``numpy``, ``cuda`` always present).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mtrl.checkpoint_io import numpy_global_state, set_numpy_global_state

__all__ = ["capture_rng", "restore_rng"]


def capture_rng(
    numpy_generators: Mapping[str, np.random.Generator] | None = None,
    torch_generators: Mapping[str, torch.Generator] | None = None,
) -> dict[str, Any]:
    """The global RNG states and those of the named generators, as plain data (:func:`restore_rng` reverses it).

    Args:
        numpy_generators: the run's own numpy generators by name (their bit generator's state is kept).
        torch_generators: the run's own torch generators by name (any device; the state is a CPU tensor).
    """
    return {
        "python": random.getstate(),
        "numpy": numpy_global_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy_generators": {name: gen.bit_generator.state for name, gen in (numpy_generators or {}).items()},
        "torch_generators": {name: gen.get_state() for name, gen in (torch_generators or {}).items()},
    }


def restore_rng(
    state: Mapping[str, Any],
    numpy_generators: Mapping[str, np.random.Generator] | None = None,
    torch_generators: Mapping[str, torch.Generator] | None = None,
) -> None:
    """Set the global RNGs and the named generators (in place) to a :func:`capture_rng` state, or to the RNG
    state of a checkpoint of an earlier release (see the module doc). Tensors read onto another device (a
    checkpoint loaded with ``map_location="cuda"``) are brought back to the CPU, where torch wants them. CUDA
    states are restored only where CUDA is available (a GPU run resumed on a CPU draws on the CPU only).

    Raises:
        ValueError: ``state`` holds no state for one of the named generators (names the generator and those
            it holds).
    """
    random.setstate(state["python"])
    set_numpy_global_state(state["numpy"] if "numpy" in state else state["numpy_global"])
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    for name, gen in (numpy_generators or {}).items():
        gen.bit_generator.state = _generator_state(state, "numpy_generators", name)
    for name, tgen in (torch_generators or {}).items():
        tgen.set_state(_generator_state(state, "torch_generators", name).cpu())


def _generator_state(state: Mapping[str, Any], group: str, name: str) -> Any:
    """The saved state of generator ``name``: under ``group``, or a top-level key in earlier releases' layout."""
    saved = state[group] if group in state else state
    if name not in saved:
        held = sorted(saved) if group in state else []
        raise ValueError(f"the saved RNG state has no generator {name!r} (it holds {held or 'none'})")
    return saved[name]
