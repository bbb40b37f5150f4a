"""Our update, configured by ``configs/mt10_mwplus.yaml``, is Meta-World+'s MTSAC update at T = 10.

``tests/data/mwplus_mt10_update.npz`` holds what the reference (rainx0r/metaworld-algorithms, commit
30c9991, JAX on CPU in float64) did: its initial weights, one stratified batch drawn by its replay
buffer, the standard-normal draws of 5 updates, and after them every parameter, target parameter, Adam
moment and temperature, with the losses and temperatures after each update (written by
``scripts/mwplus_reference/generate_fixture.py``; versions and shapes in the .json beside it). The
reference's network is 3 x 32 there (the preset's 3 x 400 would make the fixture large); everything else is
the MTMHSAC example's. The critic's pre-clip gradient norm exceeds 1 at every update (clipping acts) and
the actor's stays below 1 (so the mean reduction is not hidden by clipping).

Our agent starts from those weights (kernels transposed, the vmapped heads onto our batched heads, the
twin critics from the ensemble axis), takes the same batch and noise, and must agree per tensor within
``1e-10 · max(1, max|reference|)`` (parameters, targets, Adam ``exp_avg``/``exp_avg_sq`` against optax's
``mu``/``nu``, log-temperatures, per-update losses and gradient norms). Each negative control undoes one
detail of the preset and must break that agreement.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from agents.config import SACConfig, TrainConfig
from agents.networks import TwinCritic, initialise
from agents.sac import MultiTaskSAC, UpdateNoise
from mtrl.balancers import make_balancer
from mtrl.balancers.pcgrad import PCGrad, pcgrad_coefficients
from mtrl.config import load_config
from mtrl.nn import MultiTaskMLP
from mtrl.replay import Batch

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "mwplus_mt10_update.npz"
META = json.loads(FIXTURE.with_suffix(".json").read_text())
HP = META["hparams"]
T, O, A, N = HP["num_tasks"], HP["obs_dim"], HP["action_dim"], HP["per_task"]
ACTOR = "params/ContinuousActionPolicyTorso_0/MultiHeadNetwork_0"
CRITIC = "params/VmapQValueFunction_0/MultiHeadNetwork_0"
RTOL = 1e-10


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def preset_sac() -> tuple[SACConfig, bool]:
    """``configs/mt10_mwplus.yaml``'s SAC fields at the fixture's width, and whether ew takes the mean."""
    width = ",".join([str(HP["width"])] * HP["depth"])
    cfg = load_config(TrainConfig, str(ROOT / "configs" / "mt10_mwplus.yaml"), [f"sac.hidden_sizes=[{width}]"])
    assert cfg.critic_balancer == cfg.actor_balancer == "ew"
    assert cfg.critic_balancer_hparams == cfg.actor_balancer_hparams == {"mean": True}
    return cfg.sac, True


# --- the reference's layout --------------------------------------------------------------------------------
def _linears(net: MultiTaskMLP) -> list[nn.Linear]:
    return [m for m in net.trunk.modules() if isinstance(m, nn.Linear)]


def _slots(agent: MultiTaskSAC, critic: TwinCritic) -> Iterator[tuple[str, int | None, nn.Parameter, str]]:
    """``(reference path, ensemble index, our parameter, kind)`` for every parameter of actor and ``critic``."""
    for i, lin in enumerate(_linears(agent.actor.net)):
        yield f"actor/{ACTOR}/layer_{i}/kernel", None, lin.weight, "kernel"
        yield f"actor/{ACTOR}/layer_{i}/bias", None, lin.bias, "bias"
    yield f"actor/{ACTOR}/VmapDense_0/kernel", None, agent.actor.net.heads.weight, "head_kernel"
    yield f"actor/{ACTOR}/VmapDense_0/bias", None, agent.actor.net.heads.bias, "head_bias"
    for k, q_net in enumerate((critic.q1, critic.q2)):
        for i, lin in enumerate(_linears(q_net)):
            yield f"critic/{CRITIC}/layer_{i}/kernel", k, lin.weight, "kernel"
            yield f"critic/{CRITIC}/layer_{i}/bias", k, lin.bias, "bias"
        yield f"critic/{CRITIC}/VmapDense_0/kernel", k, q_net.heads.weight, "head_kernel"
        yield f"critic/{CRITIC}/VmapDense_0/bias", k, q_net.heads.bias, "head_bias"


def _to_ref(value: Tensor, kind: str) -> np.ndarray:
    """Our tensor in the reference's layout: ``(in, out)`` kernels, ``(T, out)`` head biases."""
    v = value.detach().cpu().numpy()
    return v.T if kind == "kernel" else v[:, 0, :] if kind == "head_bias" else v


def _from_ref(array: np.ndarray, kind: str) -> Tensor:
    a = array.T if kind == "kernel" else array[:, None, :] if kind == "head_bias" else array
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)


def _in_ref_layout(
    agent: MultiTaskSAC, critic: TwinCritic, value: Callable[[nn.Parameter], Tensor], critic_prefix: str = "critic"
) -> dict[str, np.ndarray]:
    """``{reference path: array}`` of ``value(parameter)`` (the parameter itself, or an Adam moment)."""
    out: dict[str, list[np.ndarray]] = {}
    for path, _k, param, kind in _slots(agent, critic):
        path = path.replace("critic/", f"{critic_prefix}/", 1) if path.startswith("critic/") else path
        out.setdefault(path, []).append(_to_ref(value(param), kind))
    return {p: np.stack(v) if p.startswith(f"{critic_prefix}/") else v[0] for p, v in out.items()}


def load_reference_weights(agent: MultiTaskSAC, ref: dict[str, np.ndarray], permute_q_input: bool = False) -> None:
    """The fixture's initial weights into ``agent`` (float64), the target critics as copies.

    ``permute_q_input``: our Q-networks take ``[obs, action, one-hot]`` (``q_input_order: obs_action``), so
    the first layer's columns are reordered from the reference's ``[action, obs, one-hot]``."""
    with torch.no_grad():
        for path, k, param, kind in _slots(agent, agent.critic):
            array = ref[f"init/{path}"]
            array = array if k is None else array[k]
            if permute_q_input and path.endswith("layer_0/kernel") and path.startswith("critic/"):
                array = np.concatenate([array[A : A + O], array[:A], array[A + O :]])
            param.copy_(_from_ref(array, kind))
        agent.critic_target.load_state_dict(agent.critic.state_dict())
        agent.log_alpha_T.copy_(torch.as_tensor(ref["init/log_alpha"]))


def reference_batch(ref: dict[str, np.ndarray]) -> tuple[Batch, list[UpdateNoise]]:
    """The fixture's batch and noise in our ``(T, n, ·)`` layout (reference row ``i·T + t`` = task t, sample i)."""

    def grouped(x: np.ndarray) -> Tensor:
        x = x.reshape(N, T, *x.shape[1:]).swapaxes(0, 1)
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)

    obs, next_obs = grouped(ref["batch/observations"]), grouped(ref["batch/next_observations"])
    eye = torch.eye(T, dtype=torch.float64)[:, None, :].expand(T, N, T)
    assert torch.equal(obs[..., O:], eye) and torch.equal(next_obs[..., O:], eye)  # one-hot = task of the row
    batch = Batch(
        obs=obs[..., :O],
        action=grouped(ref["batch/actions"]),
        reward=grouped(ref["batch/rewards"])[..., 0],
        next_obs=next_obs[..., :O],
        terminated=grouped(ref["batch/dones"])[..., 0],
    )
    noise = [
        UpdateNoise(
            next_obs=grouped(ref["noise/next_obs"][u]),
            obs=grouped(ref["noise/obs"][u]),
        )
        for u in range(HP["updates"])
    ]
    return batch, noise


def make_agent(sac: SACConfig, mean: bool, agent_cls: type[MultiTaskSAC] = MultiTaskSAC) -> MultiTaskSAC:
    agent = agent_cls(T, O, A, sac, make_balancer("ew", T, mean=mean), make_balancer("ew", T, mean=mean))
    for net in (agent.actor, agent.critic, agent.critic_target):
        net.double()
    agent.log_alpha_T.data = agent.log_alpha_T.data.double()
    return agent


# --- the comparison -------------------------------------------------------------------------------------
def run_and_compare(
    ref: dict[str, np.ndarray],
    sac: SACConfig,
    mean: bool = True,
    agent_cls: type[MultiTaskSAC] = MultiTaskSAC,
    permute_q_input: bool = False,
) -> dict[str, float]:
    """Run our 5 updates from the fixture's start; ``{quantity: max|ours − ref| / (1e-10 · max(1, max|ref|))}``
    (a ratio above 1 is a disagreement)."""
    torch.manual_seed(0)  # nothing may be drawn: the noise is given (a draw would only change the init)
    agent = make_agent(sac, mean, agent_cls)
    load_reference_weights(agent, ref, permute_q_input)
    batch, noise = reference_batch(ref)
    ratios: dict[str, float] = {}

    def check(name: str, ours: np.ndarray, theirs: np.ndarray) -> None:
        assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
        ratios[name] = float(np.abs(ours - theirs).max() / (RTOL * max(1.0, float(np.abs(theirs).max()))))

    per_update: dict[str, list[float]] = {k: [] for k in ("critic_loss", "actor_loss", "alpha_loss")}
    norms: dict[str, list[float]] = {"critic": [], "actor": []}
    log_alphas = []
    for u in range(HP["updates"]):
        metrics = agent.update(batch, noise=noise[u])
        per_update["critic_loss"].append(metrics["train/critic_loss"])
        per_update["actor_loss"].append(metrics["train/actor_loss"])
        per_update["alpha_loss"].append(metrics["train/alpha_loss"])
        for name in norms:
            norms[name].append(float(agent.grad_norms[name]) if name in agent.grad_norms else float("nan"))
        log_alphas.append(agent.log_alpha_T.detach().numpy().copy())
    reference_losses = {"critic_loss": "qf_loss", "actor_loss": "actor_loss", "alpha_loss": "alpha_loss"}
    for ours, theirs in reference_losses.items():
        check(f"per_update/{ours}", np.array(per_update[ours]), ref[f"per_update/{theirs}"])
    for name, values in norms.items():
        check(f"per_update/{name}_grad_norm", np.array(values), ref[f"per_update/{name}_grad_norm"])
    check("per_update/log_alpha", np.stack(log_alphas), ref["per_update/log_alpha"])
    check("final/log_alpha", agent.log_alpha_T.detach().numpy(), ref["final/log_alpha"])

    critic = agent.critic
    if permute_q_input:  # compare in the reference's column order
        critic = copy.deepcopy(agent.critic)
        with torch.no_grad():
            for q_net in (critic.q1, critic.q2):
                w = _linears(q_net)[0].weight
                w.copy_(torch.cat([w[:, O : O + A], w[:, :O], w[:, O + A :]], dim=1))
    state = {**agent.actor_opt.state, **agent.critic_opt.state}
    views: dict[str, Callable[[nn.Parameter], Tensor]] = {
        "": lambda p: p,
        "adam_mu": lambda p: state[p]["exp_avg"],
        "adam_nu": lambda p: state[p]["exp_avg_sq"],
    }
    for suffix, value in views.items():
        if permute_q_input and suffix:
            continue  # the moments of a permuted layer are compared through the parameters (enough here)
        for path, ours in _in_ref_layout(agent, critic, value).items():
            net, rest = path.split("/", 1)
            key = f"final/{net}_{suffix}/{rest}" if suffix else f"final/{path}"
            check(key, ours, ref[key])
    target = agent.critic_target
    if permute_q_input:
        target = copy.deepcopy(agent.critic_target)
        with torch.no_grad():
            for q_net in (target.q1, target.q2):
                w = _linears(q_net)[0].weight
                w.copy_(torch.cat([w[:, O : O + A], w[:, :O], w[:, O + A :]], dim=1))
    for path, ours in _in_ref_layout(agent, target, lambda p: p, critic_prefix="critic_target").items():
        if path.startswith("critic_target/"):
            check(f"final/{path}", ours, ref[f"final/{path}"])
    alpha_state = agent.alpha_opt.state[agent.log_alpha_T]
    check("final/alpha_adam_mu", alpha_state["exp_avg"].numpy(), ref["final/alpha_adam_mu/params/log_alpha"])
    check("final/alpha_adam_nu", alpha_state["exp_avg_sq"].numpy(), ref["final/alpha_adam_nu/params/log_alpha"])
    for name, opt in (("actor", agent.actor_opt), ("critic", agent.critic_opt), ("alpha", agent.alpha_opt)):
        steps = {int(s["step"]) for s in opt.state.values()}
        assert steps == {int(ref[f"final/{name}_adam_count"])}, (name, steps)
    return ratios


def test_fixture_is_meaningful(ref: dict[str, np.ndarray]) -> None:
    """The fixture exercises what the controls need: clipping acts (critic) and does not act (actor)."""
    assert META["commit"].startswith("30c9991f5e1e6e119d3f98266add3828390a038e")
    assert {"jax", "flax", "optax", "distrax"} <= set(META["versions"])
    assert (ref["per_update/critic_grad_norm"] > 1.0).all() and (ref["per_update/actor_grad_norm"] < 1.0).all()
    assert FIXTURE.stat().st_size < 1_000_000


def test_preset_update_equals_reference(ref: dict[str, np.ndarray]) -> None:
    sac, mean = preset_sac()
    ratios = run_and_compare(ref, sac, mean)
    worst = max(ratios, key=lambda k: ratios[k])
    assert len(ratios) > 40  # every tensor of actor, critics, targets, moments, plus the per-update values
    assert ratios[worst] <= 1.0, f"{worst}: {ratios[worst]:.3g} x the tolerance"


def test_q_input_order_is_only_a_layout(ref: dict[str, np.ndarray]) -> None:
    """With today's input order and the first layer's columns permuted, the update is the same."""
    sac, mean = preset_sac()
    ratios = run_and_compare(ref, dataclasses.replace(sac, q_input_order="obs_action"), mean, permute_q_input=True)
    worst = max(ratios, key=lambda k: ratios[k])
    assert ratios[worst] <= 1.0, f"{worst}: {ratios[worst]:.3g} x the tolerance"


class ActorBeforeCritic(MultiTaskSAC):
    """The update order undone: the actor scored by the critics as they were before this update's critic step."""

    def critic_losses(self, batch: Batch, target_q_Tn: Tensor) -> Tensor:
        self._critic_before = copy.deepcopy(self.critic)
        return super().critic_losses(batch, target_q_Tn)

    def _actor_losses(self, action_TnA: Tensor, log_prob_Tn: Tensor, obs_TnO: Tensor, alpha_T: Tensor) -> Tensor:
        q1_Tn, q2_Tn = self._critic_before(obs_TnO, action_TnA)
        return (alpha_T[:, None] * log_prob_Tn - torch.min(q1_Tn, q2_Tn)).mean(1)


#: One detail of the preset undone each: ``(SACConfig changes, ew mean, agent class)``.
CONTROLS: dict[str, tuple[dict[str, Any], bool, type[MultiTaskSAC]]] = {
    "actor_adam_eps_1e-8": ({"actor_adam_eps": 1e-8}, True, MultiTaskSAC),
    "critic_adam_eps_1e-8": ({"critic_adam_eps": 1e-8}, True, MultiTaskSAC),
    "alpha_adam_eps_1e-8": ({"alpha_adam_eps": 1e-8}, True, MultiTaskSAC),
    "no_clipping": ({"grad_clip": None}, True, MultiTaskSAC),
    "torch_clip_formula": ({"grad_clip_formula": "torch"}, True, MultiTaskSAC),
    "ew_sum_over_tasks": ({}, False, MultiTaskSAC),
    "alpha_loss_sum_over_tasks": ({"alpha_loss_reduction": "sum"}, True, MultiTaskSAC),
    "epsilon_tanh_log_det": ({"tanh_log_det": "epsilon"}, True, MultiTaskSAC),
    "actor_before_critic": ({}, True, ActorBeforeCritic),
}


@pytest.mark.parametrize("control", list(CONTROLS))
def test_negative_control_breaks_agreement(ref: dict[str, np.ndarray], control: str) -> None:
    changes, mean, agent_cls = CONTROLS[control]
    sac, _ = preset_sac()
    ratios = run_and_compare(ref, dataclasses.replace(sac, **changes), mean, agent_cls)
    worst = max(ratios, key=lambda k: ratios[k])
    assert ratios[worst] > 1.0, f"{control} still agrees (worst {worst}: {ratios[worst]:.3g} x the tolerance)"


def test_initialisers_follow_the_reference() -> None:
    """he_uniform trunks (bound √(6/fan_in), zero biases) and uniform heads (±1e-3 actor, ±3e-3 critic)."""
    sac, mean = preset_sac()
    sac = dataclasses.replace(sac, hidden_sizes=(256, 256))
    torch.manual_seed(0)
    agent = MultiTaskSAC(T, O, A, sac, make_balancer("ew", T, mean=mean), make_balancer("ew", T, mean=mean))
    for net, head_bound in ((agent.actor.net, 1e-3), (agent.critic.q1, 3e-3), (agent.critic.q2, 3e-3)):
        for lin in _linears(net):
            bound = (6.0 / lin.in_features) ** 0.5
            w = lin.weight.detach()
            assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound  # uniform up to the bound
            assert abs(float(w.pow(2).mean()) - bound**2 / 3) < 0.05 * bound**2 / 3  # variance of U(±b)
            assert torch.count_nonzero(lin.bias) == 0
        for p in (net.heads.weight, net.heads.bias):
            assert p.abs().max() <= head_bound and p.abs().max() > 0.9 * head_bound
    assert torch.equal(agent.critic_target.q1.heads.weight, agent.critic.q1.heads.weight)
    default = TwinCritic(T, O, A, (256,), "one_hot")
    initialise(default.q1)  # the defaults draw nothing and change nothing
    assert _linears(default.q1)[0].bias.abs().max() > 0


def test_pcgrad_variant_matches_the_reference() -> None:
    """``pcgrad`` with ``variant="metaworld_plus"`` is the reference's ``optim/pcgrad.py`` on the same Jacobian and
    permutation (shared permutation, ``j = i`` included, ``‖g_j‖² + 1e-8``, mean); the default variant is not."""
    with np.load(FIXTURE.with_name("mwplus_pcgrad.npz")) as data:
        jac, perm, expected = data["jacobian"], data["permutation"], data["direction"]
    num_tasks = jac.shape[0]
    gram = jac @ jac.T
    assert (gram < 0).any()  # conflicts to project
    coef = pcgrad_coefficients(gram, np.tile(perm, (num_tasks, 1)), include_self=True, eps=1e-8)
    ours = coef.mean(axis=0) @ jac
    assert np.abs(ours - expected).max() <= RTOL * max(1.0, float(np.abs(expected).max()))
    # the balancer draws its one permutation from its generator and combines as above
    jac_t, losses = torch.as_tensor(jac), torch.ones(num_tasks, dtype=torch.float64)
    balancer = PCGrad(num_tasks, seed=3, variant="metaworld_plus")
    own_perm = torch.randperm(num_tasks, generator=torch.Generator().manual_seed(3)).numpy()
    own = pcgrad_coefficients(gram, np.tile(own_perm, (num_tasks, 1)), include_self=True, eps=1e-8).mean(0) @ jac
    assert np.abs(balancer.aggregate(jac_t, losses).numpy() - own).max() <= 1e-12 * np.abs(own).max()
    yu = PCGrad(num_tasks, seed=3).aggregate(jac_t, losses).numpy() / num_tasks  # sum -> mean, still differs
    assert np.abs(yu - expected).max() > 1e-3 * np.abs(expected).max()
