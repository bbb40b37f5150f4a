"""Vector steps per second of our MT10 training loop after warm-up, on the Meta-World+ reference preset.

    OMP_NUM_THREADS=1 python scripts/bench_throughput.py --updates 300          # the README's number (CPU)
    python scripts/bench_throughput.py --updates 2000 device=cuda               # on a GPU (not measured here)

Runs ``scripts/train.py``'s trainer on ``--preset`` (default ``configs/mt10_mwplus.yaml``: 4,000 warm-up vector
steps, batch 1280, 3×400, sync vector env) for ``warmup_steps + --skip + --updates + 1`` vector steps, with
evaluation (one episode per task) and the checkpoint only at the end, in a temporary run directory, and
reports the rate of its update calls after ``--skip`` of them (:func:`agents.update_timing.loop_throughput`).
Its counterpart for the reference's own loop is ``scripts/mwplus_reference/throughput.py`` (a JAX
environment). Further ``key=value`` arguments override the preset.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_throughput.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", type=Path, default=ROOT / "configs" / "mt10_mwplus.yaml")
    p.add_argument("--updates", type=int, default=300, help="timed updates (= vector steps after warm-up)")
    p.add_argument("--skip", type=int, default=20, help="untimed updates first")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the preset")
    args = p.parse_args(argv)
    from agents.config import TrainConfig
    from agents.update_timing import loop_throughput
    from mtrl.config import load_config

    with tempfile.TemporaryDirectory() as logdir:
        preset = load_config(TrainConfig, args.preset, args.overrides, resolve=False)
        steps = preset.sac.warmup_steps + args.skip + args.updates + 1
        fixed = [f"total_steps={steps}", "eval_every=0", "eval_episodes=1", "checkpoint_every=0",
                 "checkpoint_replay=false", "progress=false", f"logdir={logdir}", "run_name=throughput"]  # fmt: skip
        cfg = load_config(TrainConfig, args.preset, [*fixed, *args.overrides])
        result = loop_throughput(cfg, args.skip)
    result |= {"loop": "ours (agents/trainer.py)", "device": cfg.device, "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__}  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
