"""Write the legacy checkpoint fixtures of ``tests/test_trusted_loading.py`` (run once, with the release whose
checkpoint format they preserve; kept to document how they were made, not run by the tests).

``python tests/data/legacy_checkpoints/generate.py`` (repository root) writes, under this folder:

* ``toy/`` — a toy-suite RL run directory (``configs/toy_sac.yaml``, tiny networks and budget) stopped by a
  stop request (the Ctrl-C path) at vector step 130 of 200, mid-episode: ``config.yaml``, ``metrics.jsonl``,
  ``checkpoints/`` (the interval checkpoint of step 100 and the stop checkpoint of step 130, ``last.txt``);
  ``toy_uninterrupted.json`` — ``results.json`` (less ``run_dir``) of the same configuration run to the end
  uninterrupted;
* ``vision/`` — a synthetic-vision run directory (FAMO, small model at width 8) stopped after step 5 of 8
  (mid-epoch): ``config.yaml``, ``metrics.jsonl``, ``checkpoint.pt``; ``vision_uninterrupted.json`` — the
  uninterrupted run's results (less the run's name and folder, and timings).

TensorBoard event files are left out (a resume starts new ones; the tests compare results and parameters).
The checkpoints in this folder were written by mtrl at commit 47549b0 (torch 2.13, numpy 2.x), which pickled
numpy's global RNG state tuple and saved Meta-World task data as pickles: the format a trusted loader must
still read without unpickling anything else.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from agents.config import TrainConfig  # noqa: E402
from agents.trainer import Trainer  # noqa: E402
from mtrl.config import load_config, update_config  # noqa: E402
from mtrl.vision.config import VisionConfig  # noqa: E402
from mtrl.vision.trainer import VisionTrainer  # noqa: E402

#: overrides of configs/toy_sac.yaml for the toy fixture (also used by the test)
TOY = ["total_steps=200", "log_every=50", "sac.warmup_steps=50", "sac.hidden_sizes=[16, 16]", "sac.batch_per_task=8",
       "sac.buffer_capacity=1000", "eval_every=100", "eval_episodes=2", "checkpoint_every=100",
       "progress=false"]  # fmt: skip
TOY_STOP = 130
#: changes of VisionConfig() for the vision fixture (also used by the test)
VISION: dict[str, Any] = {
    "data": {"name": "synthetic", "size": [32, 40], "batch_size": 4, "eval_batch_size": 8, "train_length": 16,
             "val_length": 8, "cache": True},
    "model": {"name": "small", "width": 8},
    "optim": {"lr": 3e-3, "steps": 8, "lr_decay_every": 4},
    "balancer": {"name": "famo"},
    "eval_every": 2, "last_k": 2, "log_every": 1, "image_samples": 0, "progress": False,
}  # fmt: skip
VISION_STOP = 5


def _keep(run_dir: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("events.out.tfevents.*", "lease.json", ".lease.lock"))


def toy(tmp: Path) -> None:
    def trainer(name: str) -> Trainer:
        cfg = load_config(
            TrainConfig, str(ROOT / "configs" / "toy_sac.yaml"), [f"logdir={tmp}", f"run_name={name}", *TOY]
        )
        return Trainer(cfg)

    results = trainer("full").train()
    results.pop("run_dir")
    (HERE / "toy_uninterrupted.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    stopped = trainer("toy")
    original = stopped.env_step

    def step() -> int:
        updates = original()
        if stopped.step == TOY_STOP:
            stopped.request_stop()
        return updates

    stopped.env_step = step  # type: ignore[method-assign]
    assert stopped.train()["steps"] == TOY_STOP
    _keep(tmp / "toy", HERE / "toy")


def vision(tmp: Path) -> None:
    cfg = update_config(update_config(VisionConfig(), VISION), {"logdir": str(tmp)})
    results = VisionTrainer(update_config(cfg, {"run_name": "full"})).run()
    results = {k: v for k, v in results.items() if k not in ("run", "run_dir") and "time" not in k}
    results["config"] = {k: v for k, v in results["config"].items() if k not in ("logdir", "run_name")}
    (HERE / "vision_uninterrupted.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    assert VisionTrainer(update_config(cfg, {"run_name": "vision"})).run(stop_at=VISION_STOP)["step"] == VISION_STOP
    _keep(tmp / "vision", HERE / "vision")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        toy(Path(tmp))
        vision(Path(tmp))
