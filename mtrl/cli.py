"""The shell of the training and evaluation scripts: how the library's exceptions end a script.

Every script's ``main`` runs its work through :func:`run_main`, so each way a run can end has one exit status and,
where it is an error, one line on stderr that names what to do (no traceback):

* finished: 0, with the script's own report;
* stopped by Ctrl-C or SIGTERM after checkpointing (:class:`~mtrl.interrupt.RunInterrupted`): 130 or 143, with
  the step, what was saved and the command that resumes the run;
* another live process holds the run directory (:class:`~mtrl.rundir.RunDirBusy`): 75, naming the holder;
* an unreadable checkpoint (:class:`~mtrl.checkpoint_io.CheckpointError`): 2, naming the file;
* bad configuration, or a run directory the run-directory rule refuses (:class:`~mtrl.config.ConfigError`): 2;
* the file system refused a read or write (read-only, full disk, a path through a file, no permission): 2,
  naming the path and the fix (:func:`describe_os_error`);
* a second Ctrl-C or SIGTERM (abort without a checkpoint): 130.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mtrl.checkpoint_io import CheckpointError
from mtrl.config import ConfigError
from mtrl.interrupt import RunInterrupted
from mtrl.rundir import EXIT_BUSY, RunDirBusy
from mtrl.runstart import TrainerKind, resume_command

__all__ = ["EXIT_ERROR", "config_script_main", "describe_os_error", "print_run_end", "raise_if_interrupted", "run_main"]

#: Exit status of a usage, configuration or file-system error (the run can only go on once it is fixed).
EXIT_ERROR = 2

_HINTS = {
    errno.EACCES: "this user may not write there: fix the permissions or choose another logdir",
    errno.EPERM: "this user may not write there: fix the permissions or choose another logdir",
    errno.EROFS: "the file system is read-only: choose another logdir",
    errno.ENOSPC: "the disk is full: free space and run again (the last complete checkpoint is intact)",
    errno.EDQUOT: "the disk quota is used up: free space and run again (the last complete checkpoint is intact)",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another logdir",
    errno.EEXIST: "a file is in the way of a folder: choose another logdir",
    errno.ENOENT: "it does not exist",
    errno.EISDIR: "it is a folder, not a file",
}


def describe_os_error(err: OSError) -> str:
    """One line for a file-system error: the system's message, its errno name, the path(s) and a fix."""
    name = errno.errorcode.get(err.errno or 0, "")
    what = " ".join((err.strerror or str(err) or type(err).__name__).split())
    paths = " -> ".join(repr(str(p)) for p in (err.filename, err.filename2) if p is not None)
    hint = _HINTS.get(err.errno or 0)
    return "".join([what, f" ({name})" if name else "", f": {paths}" if paths else "", f"; {hint}" if hint else ""])


def raise_if_interrupted(
    kind: TrainerKind,
    argv: Sequence[str],
    run_dir: Path,
    stop_signal: int | None,
    finished: bool,
    step: int | str,
    saved: Path | str | None,
) -> None:
    """Raise :class:`~mtrl.interrupt.RunInterrupted` for a run that a signal (``stop_signal``) stopped before its
    end: it names the ``step``, what was ``saved`` and the command that resumes it (the script's ``argv`` with
    the run name and the resume flag, :func:`mtrl.runstart.resume_command`)."""
    if stop_signal is not None and not finished:
        raise RunInterrupted(stop_signal, step, str(saved), resume_command(kind, argv, run_dir))


def run_main(body: Callable[[], int], config_prefix: str = "config error") -> int:
    """Run a script's ``body`` and turn how it ended into an exit status and at most a few lines (see the table
    above); ``config_prefix`` leads a configuration error's line."""
    try:
        return body()
    except RunInterrupted as stop:
        for line in stop.lines:
            print(line, file=sys.stderr)
        return stop.exit_status
    except RunDirBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BUSY
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except ConfigError as err:
        print(f"{config_prefix}: {err}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as err:
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("aborted by a second interrupt: nothing saved since the last checkpoint", file=sys.stderr)
        return 130


def config_script_main(usage: str | None, argv: Sequence[str], body: Callable[[], int]) -> int:
    """The ``main`` of a ``CONFIG key=value ...`` training script: no argument prints ``usage`` (the script's
    docstring) and returns 2, ``-h``/``--help`` prints it and returns 0; otherwise ``body`` runs through
    :func:`run_main`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0 if argv else EXIT_ERROR
    return run_main(body)


def print_run_end(report: str, run_dir: Path) -> None:
    """What a training script prints when its run ends: the end-of-run ``report`` (:mod:`mtrl.report`), then
    the TensorBoard command for the run's log directory (``run_dir``'s parent)."""
    print(report)
    print(f"TensorBoard: tensorboard --logdir {Path(run_dir).parent}")
