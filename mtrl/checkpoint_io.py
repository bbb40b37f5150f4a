"""Trusted loading of checkpoints and state files: ``torch.load(weights_only=True)`` with one allowlist.

A checkpoint is only data: tensors, numbers, strings and the containers holding them. Unpickling it with
``weights_only=False`` would run whatever a ``__reduce__`` inside the file names, so a run directory copied from
elsewhere (or a checkpoint replaced on a shared disk) could execute code on ``resume=true`` or
``scripts/evaluate.py``. Every checkpoint and state file of the project is therefore read by :func:`load_torch`,
which rebuilds only the types torch's weights-only unpickler allows plus :func:`safe_globals` (numpy arrays and
scalars, ``collections.deque`` and gymnasium's ``Box``, which env states and checkpoints of earlier releases
hold). Anything else is refused with a one-line :class:`UntrustedCheckpointError` naming the file and the global
it asked for; a truncated or corrupt file gives a one-line :class:`CheckpointError`.

Pickles nested inside the data are not unpickled either: Meta-World's task data in an env state is checked
against the tasks rebuilt from the run's seed by its sha256 (:mod:`envs.checkpoint`), and the single-task
reference's stable-baselines3 files are read without cloudpickle (:mod:`agents.sb3`).

Every trainer's checkpoint is one envelope around the trainer's own contents, written by :func:`save_envelope`
(atomically: a save that fails, a full disk, leaves the previous checkpoint as it was and no temporary) and read
by :func:`load_envelope`::

    {"mtrl_checkpoint": 1, "kind": "rl" | "vision" | "stl", "script": "scripts/train.py", "step": 130,
     "state": {...}}

``kind`` and ``script`` name the trainer that wrote it (:class:`mtrl.runstart.TrainerKind`), so a checkpoint of
another trainer is refused in one line naming the script that wrote it (:class:`ForeignCheckpointError`). The
un-enveloped checkpoints of earlier releases (the multi-task trainer's ``step_*.pt``, the vision trainer's
``checkpoint.pt``) are read as they are.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch

from mtrl.atomic import save_torch
from mtrl.config import ConfigError

if TYPE_CHECKING:
    from mtrl.runstart import TrainerKind

__all__ = [
    "ENVELOPE_FORMAT",
    "SB3_REPLAY_GLOBALS",
    "CheckpointError",
    "ForeignCheckpointError",
    "UntrustedCheckpointError",
    "load_envelope",
    "load_pickle",
    "load_torch",
    "numpy_global_state",
    "safe_globals",
    "save_envelope",
    "set_numpy_global_state",
]


class CheckpointError(ConfigError):
    """A checkpoint or state file that cannot be loaded: truncated, corrupt, or refused as untrusted."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint or state file refused because it asks for more than plain data (a global outside the
    allowlist, pickled bytes that do not match what the run's seed rebuilds): not a damaged file but a
    tampered or foreign one, so a resume should stop rather than fall back to an older checkpoint."""


class ForeignCheckpointError(CheckpointError):
    """A checkpoint that another trainer wrote (or a newer release, in an envelope format this one does not
    know): intact but not this trainer's, so a resume stops rather than fall back to an older checkpoint."""


@functools.cache
def safe_globals() -> list[Any]:
    """The allowlist, built on first use: what a checkpoint may name besides torch's weights-only defaults.

    * numpy's array and scalar rebuilders, ``numpy.ndarray``, ``numpy.dtype`` and its per-type classes (the
      rebuilders also under numpy 1's module names, for files written with numpy 1): arrays in env states and
      observations, and numpy's global RNG state tuple in checkpoints of earlier releases. They allocate an
      array or scalar and fill it with bytes, nothing else; an object array's elements are unpickled under the
      same allowlist.
    * ``collections.deque``, read as a plain ``list`` (:func:`_deque_items`): the episode-statistics queues of
      gymnasium's ``RecordEpisodeStatistics`` in a Meta-World episode state (:mod:`envs.episode_state`, which
      turns them back into queues of the live env's length). torch's weights-only reader fills only lists
      (``APPENDS``), so a queue holding finished episodes could not be read as a ``deque`` at all.
    * ``gymnasium.spaces.Box``: two attributes of a Meta-World env (``sawyer_observation_space``, a cached
      property whose bounds clip every observation, and ``_random_reset_space``) in a Meta-World episode state;
      its ``__setstate__`` only sets attributes.

    Nothing here imports a module by a name read from the file or calls anything but these constructors.
    """
    from gymnasium.spaces import Box

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    numpy_1_names = [(_reconstruct, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar")]
    # a pickled dtype is rebuilt as np.dtype(code) and then given its state, which needs its concrete class
    dtype_classes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDGUS"]
    deque_as_list = (_deque_items, "collections.deque")
    return [_reconstruct, scalar, *numpy_1_names, np.ndarray, np.dtype, *dtype_classes, deque_as_list, Box]


def _deque_items(iterable: Any = (), maxlen: int | None = None) -> list[Any]:
    """What a pickled ``collections.deque`` becomes when a checkpoint is read: a list of its items (pickle
    appends them after the call). ``maxlen`` is dropped: the restoring code knows the queue's length."""
    return list(iterable)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :func:`safe_globals` allowed (never ``weights_only=False``).

    Raises:
        CheckpointError: one line naming ``path`` and saying whether the file is missing, truncated or corrupt,
            or refused as untrusted (it names a global outside the allowlist, which is never imported or called).
    """
    path = Path(path)
    damage = (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError)
    with _read_errors(path, damage, ", and never with weights_only=False"):
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)


#: The envelope format :func:`save_envelope` writes (``"mtrl_checkpoint"``); :func:`load_envelope` refuses a
#: higher one.
ENVELOPE_FORMAT = 1

#: The scripts that wrote the un-enveloped checkpoints of earlier releases, by trainer (``TrainerKind.name``).
_LEGACY_WRITERS = {"rl": "scripts/train.py", "vision": "scripts/train_vision.py"}


def save_envelope(
    path: str | Path, kind: TrainerKind, state: Mapping[str, Any], step: int, previous: str | Path | None = None
) -> Path:
    """Write ``state`` (the trainer's own checkpoint contents) in the envelope of ``kind`` to ``path``, atomically
    (:func:`mtrl.atomic.save_torch`: a temporary renamed over ``path``; a save that fails leaves ``path`` as it
    was and no temporary; ``previous``: the file at ``path`` is renamed to it first). Returns ``path``.

    Example (the single-task reference's state file)::

        from mtrl.checkpoint_io import load_envelope, save_envelope
        from mtrl.runstart import STL

        save_envelope(run_dir / "checkpoints" / "state.pt", STL, {"steps": {"reach-v3": 500}}, step=500)
        state = load_envelope(run_dir / "checkpoints" / "state.pt", STL)  # {"steps": {"reach-v3": 500}}

    Raises:
        OSError: the write failed (e.g. ``ENOSPC``), naming ``path``.
    """
    envelope = {
        "mtrl_checkpoint": ENVELOPE_FORMAT,
        "kind": kind.name,
        "script": kind.script,
        "step": int(step),
        "state": dict(state),
    }
    return save_torch(envelope, path, previous)


def load_envelope(path: str | Path, kind: TrainerKind, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The trainer's contents (``state``) of a :func:`save_envelope` checkpoint of ``kind``, read as plain data
    onto ``map_location`` (:func:`load_torch`). An un-enveloped checkpoint of an earlier release of the same
    trainer (multi-task or vision) is returned as it is.

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, or holds no checkpoint (one line naming it).
        UntrustedCheckpointError: the file asks for more than plain data.
        ForeignCheckpointError: another trainer wrote the file (one line naming the file and that trainer's
            script), or a newer release in an envelope format this one does not know.
    """
    path = Path(path)
    data = load_torch(path, map_location=map_location)
    where = repr(str(path))
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint file {where} holds a {type(data).__name__}, not a checkpoint dict")
    if "mtrl_checkpoint" not in data:
        return _legacy_state(data, where, kind)
    version = data["mtrl_checkpoint"]
    if not isinstance(version, int) or version > ENVELOPE_FORMAT:
        raise ForeignCheckpointError(
            f"checkpoint file {where} has envelope format {version!r}, newer than this release reads "
            f"({ENVELOPE_FORMAT}): load it with the release that wrote it"
        )
    if data.get("kind") != kind.name:
        _refuse(where, str(data.get("script")), str(data.get("kind")), kind)
    state = data.get("state")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint file {where} is corrupt (its envelope holds no state dict)")
    return state


def _legacy_state(data: dict[str, Any], where: str, kind: TrainerKind) -> dict[str, Any]:
    """An un-enveloped checkpoint of an earlier release: ``data`` itself if ``kind`` wrote such files and it does
    not hold the parts of the other trainer's (the multi-task ``agent``, the vision ``model``)."""
    writer = "vision" if "model" in data or "train_time_s" in data else "rl" if "agent" in data else None
    if kind.name not in _LEGACY_WRITERS:
        script = _LEGACY_WRITERS.get(writer or "", "an earlier release")
        _refuse(where, script, writer or "no envelope", kind)
    if writer is not None and writer != kind.name:
        _refuse(where, _LEGACY_WRITERS[writer], writer, kind)
    return data


def _refuse(where: str, script: str, writer: str, kind: TrainerKind) -> NoReturn:
    raise ForeignCheckpointError(
        f"checkpoint file {where} was written by {script} ({writer}), not by {kind.script}: "
        f"continue or evaluate it with {script}, or pass a checkpoint of {kind.script}"
    )


@contextlib.contextmanager
def _read_errors(path: Path, damage: tuple[type[Exception], ...], hint: str = "") -> Iterator[None]:
    """The one-line errors of reading ``path`` (both loaders): missing; refused as untrusted (an unpickling error
    about a global, ``hint`` appended to the advice); corrupt (any other unpickling error); truncated or corrupt
    (the reader's ``damage`` exceptions)."""
    try:
        yield
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist") from e
    except pickle.UnpicklingError as e:
        message = str(e)
        if "global" in message.lower():
            raise UntrustedCheckpointError(
                f"refusing to load {str(path)!r}: it is not plain checkpoint data ({_first_global(message)}); "
                f"only load checkpoints you wrote or trust{hint}"
            ) from e
        raise CheckpointError(f"checkpoint file {str(path)!r} is corrupt ({_one_line(message)})") from e
    except damage as e:
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


def numpy_global_state() -> dict[str, Any]:
    """numpy's global RNG state (``np.random``) as plain data: ``np.random.get_state(legacy=False)`` with the
    Mersenne-Twister key as a list of ints (what checkpoints store: no numpy types to allow on loading)."""
    state = np.random.get_state(legacy=False)
    inner = state["state"]
    return {**state, "state": {"key": [int(k) for k in inner["key"]], "pos": int(inner["pos"])}}


def set_numpy_global_state(state: Any) -> None:
    """Inverse of :func:`numpy_global_state`; also takes the legacy tuple of ``np.random.get_state()`` that
    checkpoints of earlier releases hold."""
    if isinstance(state, dict):
        inner = state["state"]
        state = {**state, "state": {"key": np.asarray(inner["key"], dtype=np.uint32), "pos": int(inner["pos"])}}
    np.random.set_state(state)


#: The globals a stable-baselines3 replay buffer pickle (``ReplayBuffer`` of SB3 2.x, ``save_replay_buffer``)
#: names, for :func:`load_pickle`: the buffer class (rebuilt by setting its attributes), its spaces (gymnasium
#: ``Box`` with numpy's generator, bit generator and seed sequence rebuilders), numpy arrays and dtypes, and
#: ``torch.device``. Each builds a plain object from data; none runs code named by the file.
SB3_REPLAY_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("stable_baselines3.common.buffers", "ReplayBuffer"),
    ("gymnasium.spaces.box", "Box"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pcg64", "PCG64"),
    ("numpy.random.bit_generator", "SeedSequence"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("torch", "device"),
})  # fmt: skip


class _AllowlistUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only the globals of ``allowed`` (any other raises before it is imported)."""

    def __init__(self, file: Any, allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise pickle.UnpicklingError(f"unsupported global {module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("unsupported persistent id")


def load_pickle(path: str | Path, allowed: frozenset[tuple[str, str]]) -> Any:
    """Unpickle ``path`` resolving only the ``(module, name)`` globals of ``allowed`` (e.g.
    :data:`SB3_REPLAY_GLOBALS`), for state files of other libraries that are pickles (no torch container).

    Raises:
        CheckpointError: as :func:`load_torch` (untrusted: a global outside ``allowed``).
    """
    path = Path(path)
    with _read_errors(path, (EOFError, OSError, ValueError, KeyError, AttributeError, TypeError, IndexError)):
        with path.open("rb") as file:
            return _AllowlistUnpickler(file, allowed).load()
