"""Train multi-task SAC from a preset with dotted overrides.

    python scripts/train.py configs/mt10_sac.yaml seed=1 balancer=imtl_g total_steps=100000 device=cpu
    python scripts/train.py configs/toy_sac.yaml balancer=aligned_mtl logdir=runs/toy
    python scripts/train.py configs/mt10_sac.yaml run_name=<dir under logdir> resume=true

Writes ``<logdir>/<run_name>/`` (config.yaml, TensorBoard events, metrics.jsonl, checkpoints/,
results.json). Ctrl-C saves a checkpoint and the results before exiting (also with
env.vector_strategy=async: the env workers ignore SIGINT). Configuration errors (unknown keys, bad
values, bad balancer hyper-parameters, an unavailable device, a resume whose config differs from the
saved one) print one line and exit with status 2 before anything is created. A run directory that another
live process is training prints one line naming it and exits with status 75 (one writer per run directory;
``MTRL_LEASE_WAIT=<seconds>`` waits for it instead).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.config import TrainConfig
from agents.trainer import Trainer, final_report
from mtrl.config import ConfigError, load_config
from mtrl.rundir import EXIT_BUSY, RunDirBusy


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    try:
        cfg = load_config(TrainConfig, argv[0], argv[1:])  # fully resolved (balancers, device, protocol), once
        trainer = Trainer(cfg)  # every start-up check raises ConfigError before any directory or env exists
    except RunDirBusy as err:  # another process holds the run directory
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BUSY
    except ConfigError as err:  # one line, no traceback
        print(f"config error: {err}", file=sys.stderr)
        return 2
    try:
        results = trainer.train()
    except RunDirBusy as err:  # the lease was taken over mid-run: this process stopped without writing
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BUSY
    print(final_report(results))
    print(f"TensorBoard: tensorboard --logdir {Path(results['run_dir']).parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
