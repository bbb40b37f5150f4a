"""Train a dense multi-task vision model from a preset with dotted overrides.

    python scripts/train_vision.py configs/vision/synthetic.yaml balancer.name=aligned_mtl seed=1
    python scripts/train_vision.py configs/vision/synthetic.yaml single_task=seg      # a Δm reference
    python scripts/train_vision.py configs/vision/synthetic.yaml balancer.name=nash_mtl \
        baseline='[runs/vision/synthetic_seg_s0, runs/vision/synthetic_depth_s0, runs/vision/synthetic_normal_s0]'
    python scripts/train_vision.py configs/vision/nyuv2.yaml data.root=/data/nyuv2 balancer.name=famo
    python scripts/train_vision.py configs/vision/synthetic.yaml run_name=<dir under logdir> resume=true

Writes ``<logdir>/<run_name>/`` (config.yaml, TensorBoard events, metrics.jsonl, checkpoint.pt and the one before
it, checkpoint.prev.pt, results.json). Ctrl-C or SIGTERM saves a checkpoint, says at which step the run stopped and
how to resume it, and exits with status 130 (SIGINT) or 143 (SIGTERM). Configuration errors and refused run
directories (a fresh start over a checkpoint or results.json, a resume with nothing to resume, a directory of
another trainer) print one line and exit with status 2 before anything is written; a run directory another live
process holds exits with status 75.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtrl.cli import config_script_main, print_run_end, raise_if_interrupted
from mtrl.config import load_config
from mtrl.runstart import VISION
from mtrl.vision.config import VisionConfig
from mtrl.vision.report import final_report
from mtrl.vision.trainer import VisionTrainer


def main(argv: list[str]) -> int:
    return config_script_main(__doc__, argv, lambda: train(argv))


def train(argv: list[str]) -> int:
    """Load, check, train; the exit statuses of errors and interruptions are :func:`mtrl.cli.run_main`'s."""
    # Every configuration problem is a ConfigError (VisionConfig.resolve at load, then the data set, the model and
    # the balancer in the trainer): mtrl.cli.run_main prints it as one line (exit 2; a busy run directory 75).
    trainer = VisionTrainer(load_config(VisionConfig, argv[0], argv[1:]))
    print(f"{trainer.run_dir}: {trainer.amp.note}", file=sys.stderr)
    results = trainer.run()
    finished = results.get("finished", True) is not False
    raise_if_interrupted(VISION, argv, trainer.run_dir, trainer.stop_signal, finished, trainer.step,
                         trainer.checkpoint_path)  # fmt: skip
    print_run_end(final_report(results), trainer.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
