"""Today's presets give the same results as before the Meta-World+ fields were added (issue 17).

``tests/data/toy_preset_unchanged.json`` was written by this module (``python -m
tests.rl.test_preset_unchanged``) BEFORE ``agents/config.py`` gained the initialiser, Adam-eps, clipping,
reduction, log-det and Q-input-order fields: it holds the toy preset's ``results.json`` (less ``run_dir``)
after a short seeded run and a sha256 of every final parameter. Every new field's default must leave
both unchanged, bit for bit. (The hash is of float32 CPU arithmetic with one thread, as the test suite
runs; a CPU whose float kernels round differently would change it, the results.json comparison tells
whether the behaviour changed.)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from agents.config import TrainConfig
from agents.trainer import Trainer
from mtrl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "toy_preset_unchanged.json"
#: The run: the toy preset at seed 0, 300 vector steps (200 warm-up, then 100 updates), one final evaluation.
OVERRIDES = ["seed=0", "total_steps=300", "checkpoint_every=0", "progress=false"]


def parameter_hash(trainer: Trainer) -> str:
    """sha256 over actor, critic, target critic (state_dict order) and the log-temperatures, as raw bytes."""
    agent = trainer.agent
    digest = hashlib.sha256()
    for prefix, net in (("actor", agent.actor), ("critic", agent.critic), ("critic_target", agent.critic_target)):
        for name, tensor in net.state_dict().items():
            digest.update(f"{prefix}.{name}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(b"log_alpha")
    digest.update(agent.log_alpha_T.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def run_toy_preset(logdir: Path) -> dict[str, Any]:
    """``{"results": results.json less run_dir, "param_sha256": ...}`` of the fixed toy run."""
    cfg = load_config(TrainConfig, str(ROOT / "configs" / "toy_sac.yaml"), [f"logdir={logdir}", *OVERRIDES])
    trainer = Trainer(cfg)
    results = trainer.train()
    saved = json.loads((Path(results["run_dir"]) / "results.json").read_text())
    saved.pop("run_dir")
    return {"overrides": OVERRIDES, "results": saved, "param_sha256": parameter_hash(trainer)}


def test_toy_preset_unchanged(tmp_path: Path) -> None:
    expected = json.loads(FIXTURE.read_text())
    got = run_toy_preset(tmp_path)
    assert got["overrides"] == expected["overrides"]
    assert got["results"] == expected["results"]
    assert got["param_sha256"] == expected["param_sha256"]


if __name__ == "__main__":  # regenerate the fixture (only when today's behaviour is meant to change)
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        FIXTURE.write_text(json.dumps(run_toy_preset(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}", file=sys.stderr)
