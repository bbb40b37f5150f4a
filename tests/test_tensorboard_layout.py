"""The custom-scalars layout (TensorBoard's CUSTOM SCALARS tab), read back from the event files of real runs:
each per-task chart draws one line per task, and every line is a tag the run logged."""

from __future__ import annotations

import re
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2, metadata
from tensorboard.util import tensor_util

from agents.trainer import train_from_args
from mtrl.config import update_config
from mtrl.logger import RL_CHARTS, STL_CHARTS, custom_scalars_layout
from mtrl.vision.config import VisionConfig
from mtrl.vision.trainer import VisionTrainer

ROOT = Path(__file__).resolve().parent.parent
TOY_TASKS = [f"reach-{t}" for t in range(4)]


def read_layout(run_dir: Path) -> tuple[dict[str, dict[str, list[str]]], set[str]]:
    """The run's custom-scalars layout as ``{category: {chart title: [line regexes]}}`` (every layout event
    holds the same one) and the scalar tags it logged."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    events = acc.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layouts = []
    for event in events:
        proto = layout_pb2.Layout()
        proto.ParseFromString(tensor_util.make_ndarray(event.tensor_proto).item())
        assert all(chart.WhichOneof("content") == "multiline" for c in proto.category for chart in c.chart)
        layouts.append(
            {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in proto.category}
        )
    assert layouts and all(layout == layouts[0] for layout in layouts), layouts
    return layouts[0], set(acc.Tags()["scalars"])


def lines(regexes: list[str], tags: set[str]) -> list[list[str]]:
    """For each line regex of a chart, the logged tags it draws (TensorBoard matches from the tag's start)."""
    return [sorted(tag for tag in tags if re.match(regex, tag)) for regex in regexes]


def test_layout_of_a_per_task_chart_matches_each_task_and_nothing_else() -> None:
    layout = custom_scalars_layout(RL_CHARTS, ["reach-1", "reach-10"])
    regexes = layout["per task: evaluation"]["success"][1]
    tags = {"eval/success/reach-1", "eval/success/reach-10", "eval/success_mean", "eval/return/reach-1"}
    assert lines(regexes, tags) == [["eval/success/reach-1"], ["eval/success/reach-10"]]
    assert list(layout) == [
        "per task: evaluation", "per task: training episodes", "per task: balancer", "per task: training"
    ]  # fmt: skip
    assert "per task: balancer" not in custom_scalars_layout(STL_CHARTS, ["reach-1"])


def test_a_toy_rl_run_writes_one_chart_per_metric_with_a_line_per_task(tmp_path: Path) -> None:
    train_from_args(
        str(ROOT / "configs" / "toy_sac.yaml"),
        [f"logdir={tmp_path}", "run_name=tb", "total_steps=60", "sac.warmup_steps=20", "log_every=20",
         "eval_every=60", "eval_episodes=1", "checkpoint_every=0", "sac.hidden_sizes=[16, 16]",
         "sac.batch_per_task=8", "critic_balancer=mgda", "progress=false"],
    )  # fmt: skip
    layout, tags = read_layout(tmp_path / "tb")
    assert set(layout) == {"per task: evaluation", "per task: training episodes", "per task: balancer",
                           "per task: training"}  # fmt: skip
    expected = {
        ("per task: training episodes", "success (stochastic policy)"): "rollout/success/{}",  # episodes end at 40
        ("per task: training episodes", "return (stochastic policy)"): "rollout/return/{}",
        ("per task: evaluation", "success"): "eval/success/{}",
        ("per task: evaluation", "return"): "eval/return/{}",
        ("per task: balancer", "critic weight"): "balancer/critic/weight/{}",
        ("per task: balancer", "actor weight"): "balancer/actor/weight/{}",
        ("per task: training", "alpha (entropy temperature)"): "train/alpha/{}",
    }
    for (category, title), tag in expected.items():
        assert lines(layout[category][title], tags) == [[tag.format(task)] for task in TOY_TASKS], (title, tags)
    for category in layout.values():  # every chart draws a line per task from what the run logged
        for title, regexes in category.items():
            assert [len(found) for found in lines(regexes, tags)] == [1] * 4, title


def test_a_synthetic_vision_run_writes_its_per_task_charts(tmp_path: Path) -> None:
    cfg = update_config(
        VisionConfig(),
        {
            "data": {"name": "synthetic", "size": [32, 40], "batch_size": 4, "eval_batch_size": 8,
                     "train_length": 8, "val_length": 4},
            "model": {"name": "small", "width": 4},
            "optim": {"steps": 2}, "eval_every": 2, "last_k": 1, "log_every": 1, "image_samples": 0,
            "logdir": str(tmp_path), "run_name": "tb", "progress": False, "balancer": {"name": "mgda"},
        },
    )  # fmt: skip
    with VisionTrainer(cfg) as trainer:
        trainer.run()
        task_names = trainer.task_names
    layout, tags = read_layout(tmp_path / "tb")
    evaluation = layout["per task: evaluation"]
    assert lines(evaluation["loss"], tags) == [[f"eval/loss/{t}"] for t in task_names]
    assert lines(layout["per task: balancer"]["encoder weight"], tags) == [
        [f"balancer/encoder/weight/{t}"] for t in task_names
    ]
    assert lines(layout["per task: training"]["loss"], tags) == [[f"train/loss/{t}"] for t in task_names]
    for task in task_names:  # one chart of each task's evaluation metrics, with every one of them
        (found,) = lines(evaluation[f"{task} metrics"], tags)
        assert found == sorted(tag for tag in tags if tag.startswith(f"eval/{task}/")) and found, task
    assert "eval/seg/miou" in lines(evaluation["seg metrics"], tags)[0]
