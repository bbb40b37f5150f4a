"""Timing of the SAC update and of the training loop: the knob costs and the throughput comparison.

:func:`time_update_variants`: interleaved timing of one SAC update for several configurations of the same
preset (the knob costs). :func:`loop_throughput`: vector steps per second of the real training loop after
warm-up.

Each variant is a list of ``key=value`` overrides applied to one preset (``scripts/train.py``'s syntax),
built exactly as a run builds its agent (:func:`mtrl.config.load_config`, :func:`agents.config.build_balancers`)
for Meta-World's observation and action sizes, and fed stratified batches of one replay buffer of random
transitions (an update's cost does not depend on the values). Updates are timed round-robin — every
variant does one update per round, in turn — so that a change of load on a shared machine hits all of them
alike; ``blocks`` repeats the whole sequence so the spread between blocks shows how much the load moved.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from agents.config import TrainConfig, build_balancers, num_tasks_of
from agents.sac import MultiTaskSAC
from mtrl.config import load_config
from mtrl.replay import MultiTaskReplayBuffer

__all__ = ["UpdateTiming", "loop_throughput", "time_update_variants"]

#: Meta-World v3 observation size (without the one-hot) and action size.
OBS_DIM, ACTION_DIM = 39, 4


@dataclass(frozen=True)
class UpdateTiming:
    """Seconds per update of one variant: every timed update, and the median of each block."""

    label: str
    times: tuple[float, ...]
    block_medians: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.times)

    @property
    def range_ms(self) -> tuple[float, float]:
        """Lowest and highest block median (ms)."""
        return 1e3 * min(self.block_medians), 1e3 * max(self.block_medians)


def _agent(preset: Path, overrides: Sequence[str], device: torch.device) -> tuple[MultiTaskSAC, int]:
    cfg = load_config(TrainConfig, preset, [*overrides, f"device={device}", "progress=false"])
    T = num_tasks_of(cfg)
    critic, actor = build_balancers(cfg, T)
    return MultiTaskSAC(T, OBS_DIM, ACTION_DIM, cfg.sac, critic, actor, device=device), cfg.sac.batch_per_task


def _random_buffer(T: int, rows_per_task: int, device: torch.device, seed: int = 0) -> MultiTaskReplayBuffer:
    g = torch.Generator().manual_seed(seed)
    buf = MultiTaskReplayBuffer(T, OBS_DIM, ACTION_DIM, T * rows_per_task, device)
    for _ in range(rows_per_task):
        buf.add(
            torch.randn(T, OBS_DIM, generator=g),
            torch.rand(T, ACTION_DIM, generator=g) * 2 - 1,
            torch.rand(T, generator=g),
            torch.randn(T, OBS_DIM, generator=g),
            torch.zeros(T),
        )
    return buf


def time_update_variants(
    preset: Path,
    variants: Mapping[str, Sequence[str]],
    rounds: int,
    blocks: int = 1,
    warmup: int = 2,
    device: torch.device | str = "cpu",
) -> list[UpdateTiming]:
    """Per variant (label → overrides of ``preset``), the seconds of ``blocks × rounds`` updates timed round-robin
    after ``warmup`` untimed rounds (``with_metrics=False``, as at every update that is not a logging step)."""
    device = torch.device(device)
    torch.manual_seed(0)
    built = {label: _agent(preset, overrides, device) for label, overrides in variants.items()}
    T = next(iter(built.values()))[0].num_tasks
    batch = max(n for _, n in built.values())
    buffer = _random_buffer(T, 4 * batch, device)
    gen = torch.Generator().manual_seed(0)
    per_block: dict[str, list[list[float]]] = {label: [] for label in built}
    for _ in range(warmup):
        for agent, n in built.values():
            agent.update(buffer.sample(n, gen), with_metrics=False)
    for _ in range(blocks):
        times: dict[str, list[float]] = {label: [] for label in built}
        for _ in range(rounds):
            for label, (agent, n) in built.items():
                sample = buffer.sample(n, gen)
                start = time.perf_counter()
                agent.update(sample, with_metrics=False)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[label].append(time.perf_counter() - start)
        for label, values in times.items():
            per_block[label].append(values)
    return [
        UpdateTiming(label, tuple(t for block in blocks_ for t in block), tuple(statistics.median(b) for b in blocks_))
        for label, blocks_ in per_block.items()
    ]


def loop_throughput(cfg: TrainConfig, skip: int = 20) -> dict[str, float]:
    """Vector steps per second of :class:`agents.trainer.Trainer`'s loop after warm-up, for a resolved ``cfg``.

    The trainer runs ``cfg`` unchanged (so ``cfg.total_steps`` should be ``warmup_steps + skip + the timed steps``,
    with evaluation and checkpoints at the end only); :meth:`MultiTaskSAC.update` is wrapped to record the time
    of each call and then runs unchanged. Consecutive calls are one loop iteration apart (act, env step, replay
    add, sample, update), so after ``skip`` untimed updates the rate is ``(calls − 1) / (last − first)``.
    """
    from agents.trainer import Trainer

    calls: list[float] = []
    update = MultiTaskSAC.update

    def timed_update(self: MultiTaskSAC, *args: object, **kwargs: object) -> dict[str, float]:
        calls.append(time.perf_counter())
        return update(self, *args, **kwargs)  # type: ignore[arg-type]

    MultiTaskSAC.update = timed_update  # type: ignore[method-assign]
    try:
        with Trainer(cfg) as trainer:
            trainer.train()
    finally:
        MultiTaskSAC.update = update  # type: ignore[method-assign]
    timed = calls[skip:]
    if len(timed) < 2:
        raise ValueError(f"only {len(calls)} updates ran; raise total_steps above warmup_steps + skip + 1")
    return {"vector_steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]), "timed_updates": len(timed) - 1}
