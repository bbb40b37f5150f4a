"""The main job's preset (``configs/mt10_main.yaml``, run by ``scripts/run_main.sh``): the CPU preset with only the
keys the README's measurement chose changed, so the main job and the CPU preset cannot drift apart silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.config import TrainConfig
from mtrl.config import config_to_dict, load_config
from tests.helpers import flat_sections

ROOT = Path(__file__).resolve().parents[2]
#: The keys in which the main job differs from the CPU preset, and their values (README, "The main job").
CHANGED = {
    "sac.batch_per_task": 32,
    "sac.warmup_steps": 1000,
    "total_steps": 8000,
    "eval_every": 4000,
    "eval_episodes": 20,
    "checkpoint_every": 4000,
}


def _flat_config(name: str) -> dict[str, Any]:
    tree = config_to_dict(load_config(TrainConfig, ROOT / "configs" / name, ["device=cpu"]))
    tree.pop("protocol_details")  # derived from the keys above (evaluation size and cadence)
    return flat_sections(tree)


def test_main_preset_is_the_cpu_preset_with_the_measured_keys_changed() -> None:
    main, cpu = _flat_config("mt10_main.yaml"), _flat_config("mt10_sac_cpu.yaml")
    assert {k for k in main if main[k] != cpu[k]} == set(CHANGED)
    assert {k: main[k] for k in CHANGED} == CHANGED
    assert main["env.benchmark"] == "MT10" and main["eval_episodes"] >= 20  # one success counts 0.05


def test_run_main_trains_the_main_preset() -> None:
    script = (ROOT / "scripts" / "run_main.sh").read_text()
    assert "configs/mt10_main.yaml" in script and "mt10_sac_cpu.yaml logdir" not in script
