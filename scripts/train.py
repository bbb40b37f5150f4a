"""Train multi-task SAC from a preset with dotted overrides.

    python scripts/train.py configs/mt10_sac.yaml seed=1 balancer=imtl_g total_steps=100000 device=cpu
    python scripts/train.py configs/toy_sac.yaml balancer=aligned_mtl logdir=runs/toy
    python scripts/train.py configs/mt10_sac.yaml run_name=<dir under logdir> resume=true

Writes ``<logdir>/<run_name>/`` (config.yaml, TensorBoard events, metrics.jsonl, checkpoints/,
results.json). Ctrl-C or SIGTERM saves a checkpoint and the results (also with env.vector_strategy=async: the
env workers ignore SIGINT), says at which step the run stopped and how to resume it, and exits with status 130
(SIGINT) or 143 (SIGTERM). Configuration errors (unknown keys, bad values, bad balancer hyper-parameters, an
unavailable device, a resume whose config differs from the saved one) and refused run directories (a fresh start
over a checkpoint or results.json, a resume with nothing to resume, a directory of another trainer) print one
line and exit with status 2 before anything is written; so does a run directory that cannot be written (status
2, naming the path). A run directory that another live process is training prints one line naming it and exits
with status 75 (one writer per run directory; ``MTRL_LEASE_WAIT=<seconds>`` waits for it instead).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.config import TrainConfig
from agents.trainer import Trainer, final_report
from mtrl.cli import config_script_main, print_run_end, raise_if_interrupted
from mtrl.config import load_config
from mtrl.runstart import RL


def main(argv: list[str]) -> int:
    return config_script_main(__doc__, argv, lambda: train(argv))


def train(argv: list[str]) -> int:
    """Load, check, train; the exit statuses of errors and interruptions are :func:`mtrl.cli.run_main`'s."""
    cfg = load_config(TrainConfig, argv[0], argv[1:])  # fully resolved (balancers, device, protocol), once
    trainer = Trainer(cfg)  # every start-up check raises before anything is written
    results = trainer.train()
    raise_if_interrupted(
        RL, argv, trainer.run_dir, trainer.stop_signal, results["complete"], trainer.step, trainer.saved_at
    )
    print_run_end(final_report(results), trainer.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
