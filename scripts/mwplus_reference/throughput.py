"""Vector steps per second of the Meta-World+ reference's own MT10 training loop, after warm start.

Run with a JAX environment that also has metaworld 3.x (not the project's; see README.md in this folder)::

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python scripts/mwplus_reference/throughput.py --reference /path/to/metaworld-algorithms --updates 300

It copies the reference's package to a temporary folder with the Python 3.11 rewrite of :mod:`compat`,
configures MTMHSAC exactly as ``examples/multi_task/mtmhsac_mt10.py`` does (3×400 multi-head networks,
clipping 1.0, batch 1280, 1M buffer, 4,000 warm-start vector steps, seed 1) and calls the reference's
``OffPolicyAlgorithm.train`` loop (``rl/algorithms/base.py``) itself: random actions for the warm start,
then per vector step ``sample_action``, ``envs.step``, ``replay_buffer.add``, ``replay_buffer.sample`` and
``update``. Two things differ from ``Run.start`` (``run.py``), which refuses to run without a GPU or TPU:
no checkpointing or wandb (``track=False``), and the vector env is built with the reference's own
arguments (``envs/metaworld.py`` ``MetaworldConfig.spawn``) but ``vector_strategy="sync"`` instead of
``"async"``, the strategy our preset uses, so both loops step the ten envs the same way.

The timing only observes the loop: ``MTSAC.update`` is wrapped to record ``time.perf_counter()`` at each
call (it then calls the reference's method unchanged). Consecutive calls are one full loop iteration apart
(the next ``sample_action`` waits for the previous update's results), so after ``--skip`` untimed updates
(the first includes JIT compilation) the rate is ``(calls − 1) / (last − first)`` vector steps per second.
Prints one JSON line with the rate, the versions and the thread settings.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import make_compat_copy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="local checkout of rainx0r/metaworld-algorithms")
    p.add_argument("--updates", type=int, default=300, help="timed updates (= vector steps after warm start)")
    p.add_argument("--skip", type=int, default=20, help="untimed updates first (JIT compilation)")
    p.add_argument("--warmstart", type=int, default=4000, help="warm-start vector steps (the reference's 4000)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        make_compat_copy(args.reference, Path(tmp))
        sys.path.insert(0, tmp)
        result = _run(args.updates, args.skip, args.warmstart)
    print(json.dumps(result))
    return 0


def _run(updates: int, skip: int, warmstart: int) -> dict[str, Any]:
    import gymnasium as gym
    import jax
    import metaworld_algorithms.envs.metaworld as mw_envs
    from metaworld_algorithms.config.networks import ContinuousActionPolicyConfig, QValueFunctionConfig
    from metaworld_algorithms.config.nn import MultiHeadConfig
    from metaworld_algorithms.config.optim import OptimizerConfig
    from metaworld_algorithms.config.rl import OffPolicyTrainingConfig
    from metaworld_algorithms.envs import MetaworldConfig
    from metaworld_algorithms.rl.algorithms import MTSACConfig
    from metaworld_algorithms.rl.algorithms.mtsac import MTSAC

    # examples/multi_task/mtmhsac_mt10.py, with total_steps cut to the warm start and the timed updates
    env = MetaworldConfig(env_id="MT10", terminate_on_success=False)
    algorithm_config = MTSACConfig(
        num_tasks=10,
        gamma=0.99,
        actor_config=ContinuousActionPolicyConfig(
            network_config=MultiHeadConfig(num_tasks=10, optimizer=OptimizerConfig(max_grad_norm=1.0))
        ),
        critic_config=QValueFunctionConfig(
            network_config=MultiHeadConfig(num_tasks=10, optimizer=OptimizerConfig(max_grad_norm=1.0))
        ),
        num_critics=2,
    )
    steps = warmstart + 1 + skip + updates  # the first update comes at global step warmstart + 1
    training = OffPolicyTrainingConfig(
        total_steps=10 * steps, buffer_size=int(1e6), batch_size=1280, warmstart_steps=warmstart
    )
    make_vec = gym.make_vec

    def make_sync(env_id: str, **kwargs: Any) -> Any:  # MetaworldConfig.spawn's arguments, sync stepping
        return make_vec(env_id, **{**kwargs, "vector_strategy": "sync"})

    mw_envs.gym.make_vec = make_sync  # type: ignore[attr-defined]
    seed = 1
    envs = env.spawn(seed=seed)
    calls: list[float] = []
    update = MTSAC.update

    def timed_update(self: Any, data: Any) -> Any:
        calls.append(time.perf_counter())
        return update(self, data)

    MTSAC.update = timed_update  # type: ignore[method-assign]
    algorithm = MTSAC.initialize(algorithm_config, env, seed=seed)
    start = time.perf_counter()
    algorithm.train(config=training, envs=envs, env_config=env, seed=seed, track=False)
    total = time.perf_counter() - start
    envs.close()
    timed = calls[skip:]
    versions = {name: importlib.metadata.version(name) for name in ("jax", "jaxlib", "flax", "optax", "distrax",
                                                                      "metaworld", "numpy")}  # fmt: skip
    return {
        "loop": "reference (rl/algorithms/base.py OffPolicyAlgorithm.train)",
        "vector_steps_per_s": (len(timed) - 1) / (timed[-1] - timed[0]),
        "timed_updates": len(timed) - 1,
        "updates": len(calls),
        "wall_s": total,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "versions": versions,
    }


if __name__ == "__main__":
    raise SystemExit(main())
