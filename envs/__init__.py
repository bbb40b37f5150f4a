"""Multi-task environments: Meta-World v3 task sets (MT1, MT10, MT25, MT50, custom) under named
protocols, and a pure-numpy toy suite.

Every builder returns a :class:`~envs.vector.MultiTaskVecEnv` (one sub-env per task, one-hot
appended, SAME_STEP autoreset with ``info["final_obs"]``, ``info["success"]``). Meta-World is
imported lazily, by :func:`envs.metaworld.make_mt_envs` only.
"""

from envs.checkpoint import continues_episodes, env_state, load_env_state, restore_env_state
from envs.evaluation import EvalResult, evaluate
from envs.metaworld import BENCHMARKS, make_mt_envs
from envs.protocols import PROTOCOLS, TOY_PROTOCOL, Protocol, get_protocol
from envs.task_sets import METAWORLD_BENCHMARKS, all_v3_tasks, resolve_tasks
from envs.toy import ToyReachVecEnv, make_toy_envs
from envs.vector import MultiTaskVecEnv, StepResult, step_transitions

__all__ = [
    "BENCHMARKS",
    "METAWORLD_BENCHMARKS",
    "PROTOCOLS",
    "TOY_PROTOCOL",
    "EvalResult",
    "MultiTaskVecEnv",
    "Protocol",
    "StepResult",
    "ToyReachVecEnv",
    "all_v3_tasks",
    "continues_episodes",
    "env_state",
    "evaluate",
    "get_protocol",
    "load_env_state",
    "make_mt_envs",
    "make_toy_envs",
    "resolve_tasks",
    "restore_env_state",
    "step_transitions",
]
