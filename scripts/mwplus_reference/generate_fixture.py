"""Write the Meta-World+ update fixture: the reference MTSAC update of rainx0r/metaworld-algorithms at T = 10.

Run with a JAX environment (not the project's; see README.md in this folder), from anywhere::

    python scripts/mwplus_reference/generate_fixture.py --reference /path/to/metaworld-algorithms

It copies the reference's package to a temporary folder, applies the Python 3.11 compatibility rewrite
of :mod:`compat` (documented there), builds the reference's MTMHSAC agent exactly as
``examples/multi_task/mtmhsac_mt10.py`` configures it except for the width (narrow, so the fixture stays
small), casts every parameter and optimiser state to float64 (JAX on CPU, x64 enabled), and runs
``--updates`` calls of ``MTSAC.update`` on one stratified batch drawn by the reference's own
``MultiTaskReplayBuffer``. distrax's standard-normal draw is fed from a recorded array, so the test can
give our agent the same reparametrisation noise. It writes

* ``tests/data/mwplus_mt10_update.npz``: the initial parameters, the batch, the noise, the losses,
  temperatures and pre-clip gradient norms after every update, and the final parameters, target
  parameters, Adam moments and temperatures, all float64, keyed by the reference's parameter paths;
* ``tests/data/mwplus_mt10_update.json``: versions (python, jax, jaxlib, flax, optax, distrax, numpy),
  the reference commit, the rewrite applied, the hyper-parameters and the shapes;
* ``tests/data/mwplus_pcgrad.npz``: the reference's PCGrad (``optim/pcgrad.py``) on one random Jacobian.

``tests/rl/test_mwplus_equivalence.py`` compares our update against these files only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compat import make_compat_copy

ROOT = Path(__file__).resolve().parents[2]
#: The commit of rainx0r/metaworld-algorithms the fixture was generated from.
REFERENCE_COMMIT = "30c9991f5e1e6e119d3f98266add3828390a038e"
NAME = "mwplus_mt10_update"
#: The reference's PCGrad on one Jacobian (same metadata file as the update).
PCGRAD_NAME = "mwplus_pcgrad"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="local checkout of rainx0r/metaworld-algorithms")
    p.add_argument(
        "--exported-commit",
        action="store_true",
        help=f"--reference is a `git archive {REFERENCE_COMMIT[:7]}` export without .git (its commit is not checked)",
    )
    p.add_argument("--out-dir", type=Path, default=ROOT / "tests" / "data")
    p.add_argument("--num-tasks", type=int, default=10)
    p.add_argument("--width", type=int, default=32, help="hidden width (the reference's is 400)")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--per-task", type=int, default=8, help="rows per task in the batch (the reference's: 128)")
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--seed", type=int, default=1, help="MTSAC.initialize seed (the example's default: 1)")
    p.add_argument("--reward-scale", type=float, default=10.0, help="rewards ~ U(0, scale): Meta-World's v2 range")
    p.add_argument(
        "--obs-scale",
        type=float,
        default=0.3,
        help="observations ~ U(-scale, scale); 0.3 keeps the actor's gradient norm below 1 while the critic's is above",
    )
    return p.parse_args(argv)


def reference_commit(reference: Path, exported: bool) -> str:
    """The checkout's HEAD commit; raises SystemExit when it is not :data:`REFERENCE_COMMIT`.

    ``exported``: the folder is a ``git archive`` export of that commit (no ``.git``), stated by the user."""
    if exported:
        return f"{REFERENCE_COMMIT} (git archive export, stated with --exported-commit)"
    out = subprocess.run(["git", "-C", str(reference), "rev-parse", "HEAD"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(
            f"error: {reference} is not a git checkout; clone it and `git checkout {REFERENCE_COMMIT}`, or pass "
            f"--exported-commit for a `git archive {REFERENCE_COMMIT}` export"
        )
    commit = out.stdout.strip()
    if commit != REFERENCE_COMMIT:
        raise SystemExit(f"error: {reference} is at {commit}; run `git -C {reference} checkout {REFERENCE_COMMIT}`")
    return commit


def flatten(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    """``{"prefix/a/b/kernel": array}`` for the leaves of a nested dict (flax parameters, Adam moments)."""
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict) or hasattr(tree, "items"):
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}/{key}"))
    else:
        out[prefix] = np.asarray(tree)
    return out


class NoiseFeed:
    """Replaces distrax's standard-normal draw: every draw is recorded (``draws``), so our side can replay it.

    The values come from a seeded numpy generator, not from JAX's key, which the reference still splits as
    usual (its key stream is untouched)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.draws: list[np.ndarray] = []

    def __call__(self, dist: Any, key: Any, n: int) -> Any:
        import jax.numpy as jnp

        shape = (n, *dist.batch_shape)
        eps = self.rng.standard_normal(shape)
        self.draws.append(eps)
        return jnp.asarray(eps, dtype=jnp.float64)


def build_reference(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The reference's MTSAC (float64), its replay buffer class and the hyper-parameters used."""
    import gymnasium as gym
    import jax
    import jax.numpy as jnp
    from metaworld_algorithms.config.envs import EnvConfig
    from metaworld_algorithms.config.networks import ContinuousActionPolicyConfig, QValueFunctionConfig
    from metaworld_algorithms.config.nn import MultiHeadConfig
    from metaworld_algorithms.config.optim import OptimizerConfig
    from metaworld_algorithms.rl.algorithms.mtsac import MTSAC, MTSACConfig

    T, obs_dim, action_dim = args.num_tasks, 39, 4

    @dataclasses.dataclass(frozen=True)
    class SpacesOnly(EnvConfig):
        """Meta-World's spaces (39-d observation + one-hot, 4-d action); the update never steps an env."""

        @cached_property
        def action_space(self) -> gym.Space:
            return gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

        @cached_property
        def observation_space(self) -> gym.Space:
            low = np.concatenate([np.full(obs_dim, -1.0), np.zeros(T)])
            high = np.concatenate([np.full(obs_dim, 1.0), np.ones(T)])
            return gym.spaces.Box(low, high, dtype=np.float64)

        def spawn(self, seed: int = 1) -> Any:
            raise NotImplementedError

        def spawn_rendered(self, seed: int = 1) -> Any:
            raise NotImplementedError

        def evaluate(self, envs: Any, agent: Any) -> Any:
            raise NotImplementedError

    # examples/multi_task/mtmhsac_mt10.py, with the width (and depth) as arguments
    def net() -> MultiHeadConfig:
        return MultiHeadConfig(
            num_tasks=T, width=args.width, depth=args.depth, optimizer=OptimizerConfig(max_grad_norm=1.0)
        )

    config = MTSACConfig(
        num_tasks=T,
        gamma=0.99,
        actor_config=ContinuousActionPolicyConfig(network_config=net()),
        critic_config=QValueFunctionConfig(network_config=net()),
        num_critics=2,
    )
    agent = MTSAC.initialize(config, SpacesOnly(env_id="MT10"), seed=args.seed)

    def f64(tree: Any) -> Any:
        return jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    actor = agent.actor.replace(params=f64(agent.actor.params), opt_state=f64(agent.actor.opt_state))
    critic = agent.critic.replace(
        params=f64(agent.critic.params),
        target_params=f64(agent.critic.target_params),
        opt_state=f64(agent.critic.opt_state),
    )
    alpha = agent.alpha.replace(params=f64(agent.alpha.params), opt_state=f64(agent.alpha.opt_state))
    agent = agent.replace(actor=actor, critic=critic, alpha=alpha)
    hparams = {
        "num_tasks": T,
        "obs_dim": obs_dim,
        "action_dim": action_dim,
        "width": args.width,
        "depth": args.depth,
        "per_task": args.per_task,
        "updates": args.updates,
        "seed": args.seed,
        "gamma": config.gamma,
        "tau": config.tau,
        "initial_temperature": config.initial_temperature,
        "lr": net().optimizer.lr,
        "alpha_lr": config.temperature_optimizer_config.lr,
        "adam_eps": 1e-5,
        "max_grad_norm": 1.0,
        "target_entropy": float(agent.target_entropy),
        "reward_scale": args.reward_scale,
        "obs_scale": args.obs_scale,
    }
    return agent, jax, hparams


def draw_batch(args: argparse.Namespace, seed: int) -> Any:
    """One stratified batch from the reference's ``MultiTaskReplayBuffer`` filled with random transitions."""
    import gymnasium as gym
    from metaworld_algorithms.rl.buffers import MultiTaskReplayBuffer

    T, obs_dim, action_dim, steps = args.num_tasks, 39, 4, 64
    rng = np.random.default_rng(seed)
    obs_space = gym.spaces.Box(-1.0, 1.0, (obs_dim + T,), np.float64)
    act_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
    buffer = MultiTaskReplayBuffer(T * steps, T, obs_space, act_space, seed=seed)
    one_hot = np.eye(T)
    for _ in range(steps):
        obs = np.concatenate([rng.uniform(-args.obs_scale, args.obs_scale, (T, obs_dim)), one_hot], axis=1)
        next_obs = np.concatenate([rng.uniform(-args.obs_scale, args.obs_scale, (T, obs_dim)), one_hot], axis=1)
        action = rng.uniform(-1, 1, (T, action_dim))
        reward = rng.uniform(0, args.reward_scale, T)
        done = (rng.uniform(size=T) < 0.1).astype(np.float64)
        buffer.add(obs, next_obs, action, reward, done)
    batch = buffer.sample(T * args.per_task)
    # the buffer stores float32; the update runs in float64 on those (exactly representable) values
    return type(batch)(*(np.asarray(x, dtype=np.float64) for x in batch))


def run(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    agent, jax, hparams = build_reference(args)
    import distrax._src.distributions.normal as distrax_normal

    batch = draw_batch(args, seed=args.seed)
    arrays: dict[str, np.ndarray] = {}
    arrays.update(flatten(agent.actor.params, "init/actor"))
    arrays.update(flatten(agent.critic.params, "init/critic"))
    arrays["init/log_alpha"] = np.asarray(agent.alpha.params["params"]["log_alpha"])
    for field in batch._fields:
        arrays[f"batch/{field}"] = getattr(batch, field)

    feed = NoiseFeed(seed=args.seed + 1)
    original = distrax_normal.Normal._sample_from_std_normal
    distrax_normal.Normal._sample_from_std_normal = lambda self, key, n: feed(self, key, n)  # type: ignore[method-assign]
    logs: list[dict[str, float]] = []
    log_alphas: list[np.ndarray] = []
    grad_norms: dict[str, list[float]] = {"critic": [], "actor": []}
    try:
        for _ in range(args.updates):
            with jax.disable_jit():  # the patched draw must run at every call, not once at tracing
                agent, log = agent.update(batch)
            logs.append({k: float(np.asarray(v)) for k, v in log.items()})
            log_alphas.append(np.asarray(agent.alpha.params["params"]["log_alpha"]))
    finally:
        distrax_normal.Normal._sample_from_std_normal = original  # type: ignore[method-assign]
    if len(feed.draws) != 2 * args.updates:
        raise SystemExit(f"error: expected 2 standard-normal draws per update, saw {len(feed.draws)}")
    B = args.num_tasks * args.per_task
    noise = np.stack(feed.draws).reshape(args.updates, 2, B, -1)
    arrays["noise/next_obs"] = noise[:, 0]  # the TD target's a' (update_critic draws first)
    arrays["noise/obs"] = noise[:, 1]  # the actor loss's reparametrised action
    for key in ("losses/qf_loss", "losses/actor_loss", "losses/alpha_loss"):
        arrays[f"per_update/{key.split('/')[1]}"] = np.array([log[key] for log in logs])
    grad_norms["critic"] = [log["metrics/critic_grad_magnitude"] for log in logs]
    grad_norms["actor"] = [log["metrics/actor_grad_magnitude"] for log in logs]
    arrays["per_update/log_alpha"] = np.stack(log_alphas)
    arrays["per_update/critic_grad_norm"] = np.array(grad_norms["critic"])
    arrays["per_update/actor_grad_norm"] = np.array(grad_norms["actor"])
    arrays.update(flatten(agent.actor.params, "final/actor"))
    arrays.update(flatten(agent.critic.params, "final/critic"))
    arrays.update(flatten(agent.critic.target_params, "final/critic_target"))
    arrays["final/log_alpha"] = np.asarray(agent.alpha.params["params"]["log_alpha"])
    for name, state in (("actor", agent.actor.opt_state), ("critic", agent.critic.opt_state)):
        adam = state[1][0]  # chain(clip_by_global_norm, adam): adam = chain(scale_by_adam, scale_by_lr)
        arrays.update(flatten(adam.mu, f"final/{name}_adam_mu"))
        arrays.update(flatten(adam.nu, f"final/{name}_adam_nu"))
        arrays[f"final/{name}_adam_count"] = np.asarray(adam.count)
    adam = agent.alpha.opt_state[0]
    arrays.update(flatten(adam.mu, "final/alpha_adam_mu"))
    arrays.update(flatten(adam.nu, "final/alpha_adam_nu"))
    arrays["final/alpha_adam_count"] = np.asarray(adam.count)
    return arrays, {"hparams": hparams, "grad_norms": grad_norms, "logs": logs}


def run_pcgrad(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The reference's PCGrad (``optim/pcgrad.py``) on one random Jacobian ``(T, P)``: its input, the permutation
    its key draws, its output direction and its conflict count."""
    import jax
    import jax.numpy as jnp
    from metaworld_algorithms.optim.pcgrad import pcgrad

    T, P = args.num_tasks, 64
    rng = np.random.default_rng(args.seed + 2)
    jacobian = rng.standard_normal((T, P)) + 0.2 * rng.standard_normal(P)  # about a third of the pairs conflict
    key = jax.random.PRNGKey(args.seed)
    params = {"w": jnp.zeros(P)}
    tx = pcgrad(num_tasks=T)
    direction, state = tx.update({"w": jnp.asarray(jacobian)}, tx.init(params), params, key=key)
    perm = np.asarray(jax.random.permutation(key, jnp.arange(T)))
    if not np.array_equal(np.asarray(jax.random.permutation(key, jnp.asarray(jacobian))), jacobian[perm]):
        raise SystemExit("error: jax.random.permutation of the rows is not the permutation of arange(T)")
    return {
        "jacobian": jacobian,
        "permutation": perm,
        "direction": np.asarray(direction["w"]),
        "conflicts": np.asarray(state.n_grad_conflicts),
    }


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("jax", "jaxlib", "flax", "optax", "distrax", "chex", "numpy"):
        out[dist] = importlib.metadata.version(dist)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    commit = reference_commit(args.reference, args.exported_commit)
    with tempfile.TemporaryDirectory() as tmp:
        rewrites = make_compat_copy(args.reference, Path(tmp))
        sys.path.insert(0, tmp)
        import jax

        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
        arrays, info = run(args)
        pcgrad_arrays = run_pcgrad(args)
    norms = info["grad_norms"]["critic"] + info["grad_norms"]["actor"]
    # clipping must act somewhere (else the clip and its formula are untested) and not everywhere (a clipped
    # gradient forgets a constant factor, so the mean-over-tasks reduction would be untested)
    if max(norms) <= 1.0 or min(norms) >= 1.0:
        raise SystemExit(f"error: pre-clip norms {norms} must straddle 1.0; change --reward-scale / --obs-scale")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    npz = args.out_dir / f"{NAME}.npz"
    np.savez_compressed(npz, **arrays)
    meta = {
        "reference": "https://github.com/rainx0r/metaworld-algorithms",
        "commit": commit,
        "generator": "scripts/mwplus_reference/generate_fixture.py",
        "versions": versions(),
        "compat_rewrites": rewrites,
        "hparams": info["hparams"],
        "pre_clip_grad_norms": info["grad_norms"],
        "batch_layout": "reference rows: row = i * num_tasks + t (sample i of task t, same indices for every task)",
        "noise_layout": "noise/<x>[update, row, action]; next_obs: the TD target's a', obs: the actor loss's action",
        "shapes": {k: list(v.shape) for k, v in sorted(arrays.items())},
        "pcgrad": f"{PCGRAD_NAME}.npz: optim/pcgrad.py on a random (T, 64) Jacobian with PRNGKey(seed)",
    }
    (args.out_dir / f"{NAME}.json").write_text(json.dumps(meta, indent=1) + "\n")
    np.savez_compressed(args.out_dir / f"{PCGRAD_NAME}.npz", **pcgrad_arrays)
    print(f"wrote {npz} ({npz.stat().st_size / 1024:.0f} KiB) and {NAME}.json; pre-clip norms {info['grad_norms']}")


if __name__ == "__main__":
    main()
