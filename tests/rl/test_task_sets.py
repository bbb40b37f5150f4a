"""Task sets MT1 / MT10 / MT25 / MT50 / custom: names, errors, real env builds, config stamping, seed 0.

Real Meta-World envs: MT1 and a two-task custom set build in ~2-3 s; MT25 (~20 s) is in the slow set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.config import EnvConfig, TrainConfig, num_tasks_of, resolve_config
from envs import all_v3_tasks, resolve_tasks, step_transitions
from envs.metaworld import MT10_TASKS, make_mt_envs
from mtrl.config import ConfigError, load_config
from tests.helpers import run_script

pytest.importorskip("metaworld")

ROOT = Path(__file__).resolve().parents[2]
PAIR = ["reach-v3", "drawer-close-v3"]


# --- names (no env built) -------------------------------------------------------------------------
def test_fixed_benchmarks_have_meta_worlds_lists_in_env_order() -> None:
    assert resolve_tasks("MT10") == MT10_TASKS
    mt25, mt50 = resolve_tasks("MT25"), resolve_tasks("MT50")
    assert len(mt25) == 25 and len(mt50) == 50 == len(all_v3_tasks())
    assert mt25[:10] == MT10_TASKS and set(mt25) < set(mt50)
    assert resolve_tasks("MT10", list(MT10_TASKS)) == MT10_TASKS  # a saved config repeats the list


@pytest.mark.parametrize(
    ("benchmark", "tasks", "message"),
    [
        ("MT1", [], "MT1 needs exactly one task, e.g. 'env.tasks=[reach-v3]'"),
        ("MT1", PAIR, "MT1 needs exactly one task"),
        ("MT1", ["reach-v2"], "unknown task 'reach-v2' in env.tasks: not one of the 50 Meta-World v3 tasks; "
         "close matches: reach-v3"),
        ("custom", [], "custom needs its tasks"),
        ("custom", ["reach-v3", "reach-v3"], "lists ['reach-v3'] more than once"),
        ("custom", ["reach-v3", "drawer-klose-v3"], "close matches: drawer-close-v3"),
        ("MT10", PAIR, "cannot change MT10's fixed task list; use env.benchmark=custom"),
        ("mt10", [], "unknown benchmark 'mt10' (did you mean MT10?)"),
    ],
)
def test_bad_task_sets_are_one_line_errors_that_name_the_fix(benchmark: str, tasks: list[str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        resolve_tasks(benchmark, tasks)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_resolves_and_stamps_the_task_list() -> None:
    cfg = load_config(
        TrainConfig,
        ROOT / "configs" / "mt10_sac.yaml",
        ["env.benchmark=MT1", "env.tasks=[reach-v3]", "sac.hidden_sizes=[256,256]", "total_steps=20000",
         "eval_every=5000", "eval_episodes=10"],
    )  # fmt: skip
    assert cfg.env.tasks == ("reach-v3",) and num_tasks_of(cfg) == 1 and cfg.sac.hidden_sizes == (256, 256)
    resolved, _ = resolve_config(TrainConfig())
    assert resolved.env.tasks == MT10_TASKS  # MT10: the full list is written into config.yaml
    custom = TrainConfig(env=EnvConfig(benchmark="custom", tasks=("push-v3", "reach-v3")))
    assert num_tasks_of(custom) == 2 and resolve_config(custom)[0].env.tasks == ("push-v3", "reach-v3")
    with pytest.raises(ConfigError, match="close matches: push-v3"):
        load_config(TrainConfig, None, ["env.benchmark=custom", "env.tasks=[pusj-v3]"])
    with pytest.raises(ConfigError, match="toy suite takes toy_num_tasks"):
        EnvConfig(benchmark="toy", protocol="toy", tasks=("reach-v3",))
    with pytest.raises(ConfigError, match=r"sac.use_one_hot_input is now sac.task_input \(true -> one_hot"):
        load_config(TrainConfig, None, ["sac.use_one_hot_input=false"])
    with pytest.raises(ConfigError, match=r"did you mean sac\.batch_per_task"):
        load_config(TrainConfig, None, ["sac.batch_per_tsk=64"])


# --- real envs -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("protocol", "length"), [("metaworld-v3", 500), ("mtrl-legacy", 150)])
def test_mt1_builds_through_its_gym_id_with_a_one_hot_of_size_one(protocol: str, length: int) -> None:
    envs = make_mt_envs("MT1", protocol=protocol, seed=3, tasks=["drawer-close-v3"])
    obs, _ = envs.reset()
    assert envs.task_names == ("drawer-close-v3",) and obs.shape == (1, 40) and obs[0, 39] == 1.0
    assert envs.vec_env.metadata["autoreset_mode"].name == "SAME_STEP"
    ends = [i for i in range(length + 1) if step_transitions(envs, np.zeros((1, 4))).done[0]]
    assert ends == [length - 1]  # truncated at the protocol's episode length (not Meta-World's 500)
    envs.close()


def test_custom_set_is_deterministic_at_seed_zero_and_orders_its_one_hot() -> None:
    """custom-mt-envs treats seed 0 as "no seed"; ours passes seed + 1, so seed 0 reproduces."""
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(30, 2, 4))
    runs = []
    for seed in (0, 0, 1):
        envs = make_mt_envs("custom", seed=seed, tasks=PAIR)
        obs, _ = envs.reset()
        rows = [obs] + [step_transitions(envs, a).obs for a in actions]
        runs.append(np.stack(rows))
        assert envs.task_names == tuple(PAIR)
        np.testing.assert_array_equal(obs[:, 39:], np.eye(2))
        envs.close()
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0, :, 36:39], runs[2][0, :, 36:39])  # seed 1 draws other goals


def test_train_py_accepts_the_mt1_command_line_and_stamps_tasks(tmp_path: Path) -> None:
    proc = run_script(
        "train", "configs/mt10_sac.yaml", "env.benchmark=MT1", "env.tasks=[reach-v3]", "sac.hidden_sizes=[256,256]",
        "total_steps=120", "sac.warmup_steps=100", "sac.batch_per_task=16", "eval_every=60", "eval_episodes=1",
        "progress=false", f"logdir={tmp_path}", "run_name=mt1", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load((tmp_path / "mt1" / "config.yaml").read_text())
    assert cfg["env"]["benchmark"] == "MT1" and cfg["env"]["tasks"] == ["reach-v3"]
    results = json.loads((tmp_path / "mt1" / "results.json").read_text())
    assert [e["step"] for e in results["evals"]] == [60, 120]
    assert set(results["evals"][-1]["success"]) == set(results["evals"][-1]["return"]) == {"reach-v3"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "mt1"), size_guidance={"tensors": 0})
    acc.Reload()
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["env.tasks"].string_value == "['reach-v3']"


def test_bad_task_on_the_command_line_is_one_line_before_anything_is_built(tmp_path: Path) -> None:
    proc = run_script("train", "configs/mt10_sac.yaml", "env.benchmark=MT1", "env.tasks=[reach-v2]",
                      f"logdir={tmp_path}")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "close matches: reach-v3" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_seed_zero_custom_runs_are_identical(tmp_path: Path) -> None:
    from agents.trainer import Trainer

    def run(name: str) -> dict:
        cfg = load_config(
            TrainConfig,
            ROOT / "configs" / "toy_sac.yaml",
            ["env.benchmark=custom", f"env.tasks=[{','.join(PAIR)}]", "env.protocol=metaworld-v3", "seed=0",
             "total_steps=40", "sac.warmup_steps=30", "sac.hidden_sizes=[16]", "sac.batch_per_task=8",
             "eval_every=0", "eval_episodes=1", "progress=false", f"logdir={tmp_path}", f"run_name={name}"],
        )  # fmt: skip
        return Trainer(cfg).train()

    a, b = run("a"), run("b")
    assert a["evals"] == b["evals"] and a["evals"][0]["step"] == 40


@pytest.mark.slow
def test_mt25_builds_with_its_25_tasks() -> None:
    envs = make_mt_envs("MT25", seed=0)
    obs, _ = envs.reset()
    assert envs.task_names == resolve_tasks("MT25") and obs.shape == (25, 39 + 25)
    envs.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
