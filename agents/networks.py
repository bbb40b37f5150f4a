"""Actor and twin critics for multi-task SAC: shared trunks, batched per-task heads, a task input.

All inputs are task-grouped, ``(T, n, ·)``: row block ``t`` belongs to task ``t`` (stratified replay
batches, or the ``T`` sub-envs of a vector env with ``n = 1``). Each network is a
:class:`mtrl.nn.MultiTaskMLP` (shared trunk of ReLU layers + one batched output layer per task), so
the per-task heads cost one ``baddbmm`` whatever ``T`` is. How the trunk learns which task a row
belongs to is :class:`TaskInput` (``sac.task_input``): nothing (the heads alone carry the task), the
one-hot appended to the input, or a learned per-task embedding appended to the input. The replay
buffer stores observations without any of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from mtrl.nn import MultiTaskMLP

__all__ = [
    "LOG_STD_MAX",
    "LOG_STD_MIN",
    "TASK_INPUTS",
    "Actor",
    "QInputOrder",
    "TanhLogDet",
    "TaskInput",
    "TaskInputMode",
    "TrunkInit",
    "TwinCritic",
    "initialise",
    "polyak_update",
    "tanh_log_det_jacobian",
    "with_one_hot",
]

#: Bounds of the actor's log standard deviation (mtrl ``metaworld_actor.yaml``: log_std_bounds [-20, 2]).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

TaskInputMode = Literal["none", "one_hot", "embedding"]
#: The tanh change-of-variables term of ``log π`` (``sac.tanh_log_det``; :func:`tanh_log_det_jacobian`).
TanhLogDet = Literal["epsilon", "exact"]
#: The Q-networks' input order before the task input (``sac.q_input_order``).
QInputOrder = Literal["obs_action", "action_obs"]
#: Trunk initialisation (``sac.trunk_init``; :func:`initialise`).
TrunkInit = Literal["torch", "he_uniform"]
#: The ways task identity can enter the trunk (``sac.task_input``).
TASK_INPUTS: tuple[str, ...] = get_args(TaskInputMode)


def with_one_hot(x_TNI: Tensor) -> Tensor:
    """Append the task one-hot to task-grouped rows: ``(T, n, I) -> (T, n, I + T)``."""
    T, n, _ = x_TNI.shape
    eye_TT = torch.eye(T, device=x_TNI.device, dtype=x_TNI.dtype)
    return torch.cat([x_TNI, eye_TT[:, None, :].expand(T, n, T)], dim=-1)


class TaskInput(nn.Module):
    """What a network appends to each row to tell the trunk its task: ``(T, n, I) -> (T, n, I + extra)``.

    * ``"none"``: nothing (``extra = 0``); the task enters only through the per-task heads (and, in
      SAC, the per-task temperatures).
    * ``"one_hot"``: the task one-hot (``extra = T``). At ``T = 1`` this is a constant 1, a second
      bias of the first layer.
    * ``"embedding"``: a learned vector ``e_t`` per task (``extra = embedding_dim``), initialised
      ``N(0, 1)`` like ``nn.Embedding``. Row ``t`` of the table only affects task ``t``'s losses, so
      it is a task-specific parameter (:meth:`task_parameters`): the engine gives it its own task's
      unweighted gradient, as it does the heads.
    """

    def __init__(self, num_tasks: int, mode: TaskInputMode = "none", embedding_dim: int = 16) -> None:
        super().__init__()
        if mode not in TASK_INPUTS:
            raise ValueError(f"unknown task input {mode!r}; valid choices: {', '.join(TASK_INPUTS)}")
        if mode == "embedding" and embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.num_tasks, self.mode = num_tasks, mode
        self.embedding_TD = nn.Parameter(torch.randn(num_tasks, embedding_dim)) if mode == "embedding" else None

    @property
    def extra_features(self) -> int:
        """Columns appended to every row."""
        if self.embedding_TD is not None:
            return int(self.embedding_TD.shape[1])
        return self.num_tasks if self.mode == "one_hot" else 0

    def forward(self, x_TNI: Tensor) -> Tensor:
        if self.mode == "one_hot":
            return with_one_hot(x_TNI)
        if self.embedding_TD is not None:
            T, n, _ = x_TNI.shape
            e_TND = self.embedding_TD.to(x_TNI.dtype)[:, None, :].expand(T, n, -1)
            return torch.cat([x_TNI, e_TND], dim=-1)
        return x_TNI

    def task_parameters(self) -> list[nn.Parameter]:
        return [self.embedding_TD] if self.embedding_TD is not None else []

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, extra_features={self.extra_features}"


class Actor(nn.Module):
    """Tanh-squashed diagonal Gaussian policy with a shared trunk and per-task heads.

    The head outputs ``(mean, log_std)``; ``log_std`` is clamped to ``[LOG_STD_MIN, LOG_STD_MAX]``
    as in stable-baselines3's ``sac/policies.py``. Note: mtrl/pytorch_sac instead squash it with
    ``min + ½(max − min)(tanh(x) + 1)``, which with bounds [-20, 2] starts every policy at
    ``std ≈ e⁻⁹``; the clamp starts at ``std ≈ 1`` (log_std ≈ 0) and explores from the first update.
    Actions lie in ``[-1, 1]``; the log-density includes the tanh change of variables
    ``log π(a) = log N(u) − Σ log(1 − tanh(u)² + ε)`` (SAC, Haarnoja et al. 2018, App. C, eq. 21), or
    its exact form with ``tanh_log_det="exact"`` (:func:`tanh_log_det_jacobian`).
    """

    def __init__(
        self,
        num_tasks: int,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        task_input: TaskInputMode = "none",
        embedding_dim: int = 16,
        *,
        layer_norm: bool = False,
        skip: bool = False,
        tanh_log_det: TanhLogDet = "epsilon",
    ) -> None:
        super().__init__()
        if tanh_log_det not in get_args(TanhLogDet):
            raise ValueError(f"unknown tanh_log_det {tanh_log_det!r}; valid choices: {', '.join(get_args(TanhLogDet))}")
        self.num_tasks = num_tasks
        self.action_dim = action_dim
        self.tanh_log_det: TanhLogDet = tanh_log_det
        self.task_input = TaskInput(num_tasks, task_input, embedding_dim)
        in_features = obs_dim + self.task_input.extra_features
        self.net = MultiTaskMLP(num_tasks, in_features, hidden, 2 * action_dim, layer_norm=layer_norm, skip=skip)

    def _input(self, obs_TNO: Tensor) -> Tensor:
        return self.task_input(obs_TNO)

    def distribution(self, obs_TNO: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean (T, n, A), log_std (T, n, A))`` of the pre-tanh Gaussian."""
        mean_TNA, raw_TNA = self.net(self._input(obs_TNO)).chunk(2, dim=-1)
        return mean_TNA, raw_TNA.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, obs_TNO: Tensor, noise_TNA: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reparametrised sample: ``(action (T, n, A) in [-1, 1], log_prob (T, n))``.

        ``u = mean + std · ε`` with ``ε = noise_TNA`` (standard normal, ``(T, n, A)``) or, when None,
        a fresh ``torch.randn_like(mean)`` from the global generator. Passing ``ε`` makes the sample a
        deterministic function of the parameters (loss closures re-evaluate it at other parameters).
        """
        mean_TNA, log_std_TNA = self.distribution(obs_TNO)
        std_TNA = log_std_TNA.exp()
        if noise_TNA is None:
            noise_TNA = torch.randn_like(mean_TNA)
        elif noise_TNA.shape != mean_TNA.shape:
            raise ValueError(f"noise_TNA must have shape {tuple(mean_TNA.shape)}, got {tuple(noise_TNA.shape)}")
        u_TNA = mean_TNA + std_TNA * noise_TNA
        action_TNA = torch.tanh(u_TNA)
        gauss_TNA = -0.5 * ((u_TNA - mean_TNA) / std_TNA) ** 2 - log_std_TNA - 0.5 * math.log(2 * math.pi)
        log_prob_TN = (gauss_TNA - tanh_log_det_jacobian(u_TNA, action_TNA, self.tanh_log_det)).sum(-1)
        return action_TNA, log_prob_TN

    def deterministic(self, obs_TNO: Tensor) -> Tensor:
        """The mean action ``tanh(mean) (T, n, A)`` used for evaluation."""
        return torch.tanh(self.distribution(obs_TNO)[0])

    def shared_parameters(self) -> list[nn.Parameter]:
        return self.net.shared_parameters()

    def task_parameters(self) -> list[nn.Parameter]:
        return self.net.task_parameters() + self.task_input.task_parameters()

    def head_modules(self) -> list[nn.Module]:
        """The per-task output heads (not the task embedding, an input of the shared trunk)."""
        return self.net.head_modules()


class TwinCritic(nn.Module):
    """Two independent Q-networks ``Q_k(s, a)``, each a shared trunk + per-task scalar heads.

    The only ``nn.Linear`` (and ``nn.LayerNorm``, with ``layer_norm``) layers are the two trunks (the
    heads are :class:`~mtrl.nn.BatchedLinear`), so ``LinearCapture(critic, T)`` hooks exactly the
    shared parameters. ``layer_norm`` / ``skip``: trunks as :class:`~mtrl.nn.VanillaMLP`.
    ``input_order``: the first layer sees ``[obs, action, task input]`` ("obs_action") or
    ``[action, obs, task input]`` ("action_obs", Meta-World+'s order).
    """

    def __init__(
        self,
        num_tasks: int,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        task_input: TaskInputMode = "none",
        embedding_dim: int = 16,
        *,
        layer_norm: bool = False,
        skip: bool = False,
        input_order: QInputOrder = "obs_action",
    ) -> None:
        super().__init__()
        if input_order not in get_args(QInputOrder):
            raise ValueError(f"unknown input_order {input_order!r}; valid choices: {', '.join(get_args(QInputOrder))}")
        self.input_order: QInputOrder = input_order
        # one task input per Q-network: the twin critics stay independent (an embedding is not shared)
        self.input1 = TaskInput(num_tasks, task_input, embedding_dim)
        self.input2 = TaskInput(num_tasks, task_input, embedding_dim)
        in_features = obs_dim + action_dim + self.input1.extra_features
        self.q1 = MultiTaskMLP(num_tasks, in_features, hidden, 1, layer_norm=layer_norm, skip=skip)
        self.q2 = MultiTaskMLP(num_tasks, in_features, hidden, 1, layer_norm=layer_norm, skip=skip)

    def forward(self, obs_TNO: Tensor, action_TNA: Tensor) -> tuple[Tensor, Tensor]:
        """``(q1 (T, n), q2 (T, n))``."""
        parts = [obs_TNO, action_TNA] if self.input_order == "obs_action" else [action_TNA, obs_TNO]
        x_TNI = torch.cat(parts, dim=-1)
        return self.q1(self.input1(x_TNI)).squeeze(-1), self.q2(self.input2(x_TNI)).squeeze(-1)

    def shared_parameters(self) -> list[nn.Parameter]:
        return self.q1.shared_parameters() + self.q2.shared_parameters()

    def task_parameters(self) -> list[nn.Parameter]:
        extra = self.input1.task_parameters() + self.input2.task_parameters()
        return self.q1.task_parameters() + self.q2.task_parameters() + extra

    def head_modules(self) -> list[nn.Module]:
        """The per-task output heads of both Q-networks (not the task embeddings, inputs of the trunks)."""
        return self.q1.head_modules() + self.q2.head_modules()


def tanh_log_det_jacobian(u_TNA: Tensor, action_TNA: Tensor, mode: TanhLogDet) -> Tensor:
    """``log |d tanh(u)/du|`` per action dimension, the term ``log π`` subtracts for ``a = tanh(u)``.

    * ``"epsilon"``: ``log(1 − a² + 1e-6)`` (SAC's paper code, SB3, mtrl). The ``1e-6`` keeps the log
      finite where ``tanh`` rounds to ±1, and biases it by up to ``1e-6 / (1 − a²)``.
    * ``"exact"``: ``2 (log 2 − u − softplus(−2u))``, the same quantity rewritten so that it never
      rounds to ``log 0`` (distrax's ``Tanh`` bijector, used by Meta-World+); softplus is
      ``logaddexp(·, 0)`` as ``jax.nn.softplus`` computes it.
    """
    if mode == "epsilon":
        return torch.log(1.0 - action_TNA.pow(2) + 1e-6)
    return 2.0 * (math.log(2.0) - u_TNA - torch.logaddexp(-2.0 * u_TNA, torch.zeros_like(u_TNA)))


@torch.no_grad()
def initialise(net: MultiTaskMLP, trunk: TrunkInit = "torch", head_bound: float | None = None) -> None:
    """Re-initialise a network in place (``sac.trunk_init``, ``sac.{actor,critic}_head_init``).

    ``trunk="he_uniform"``: every ``nn.Linear`` of the trunk gets kernels uniform in ``±√(6 / fan_in)``
    (``kaiming_uniform_`` for ReLU, flax's ``he_uniform``) and zero biases; "torch" leaves ``nn.Linear``'s
    own initialisation. LayerNorms keep theirs (scale 1, bias 0). ``head_bound=b``: the per-task heads'
    weights and biases uniform in ``±b``; None leaves them (uniform ``±1/√fan_in``, like ``nn.Linear``).
    Draws from the global torch generator; with the defaults it draws nothing.
    """
    if trunk not in get_args(TrunkInit):
        raise ValueError(f"unknown trunk init {trunk!r}; valid choices: {', '.join(get_args(TrunkInit))}")
    if trunk == "he_uniform":
        for module in net.trunk.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
    if head_bound is not None:
        net.heads.weight.uniform_(-head_bound, head_bound)
        net.heads.bias.uniform_(-head_bound, head_bound)


@torch.no_grad()
def polyak_update(params: Iterable[Tensor], target_params: Iterable[Tensor], tau: float) -> None:
    """Soft target update ``θ' ← τ θ + (1 − τ) θ'`` (Lillicrap et al. 2016, DDPG, Alg. 1).

    The target critics move a fraction ``τ`` (0.005 in SAC) towards the online critics after every
    update, so the bootstrap target ``r + γ (min Q' − α log π)`` changes slowly and the TD regression
    does not chase itself. In-place ``lerp_`` on the target tensors, like stable-baselines3's
    ``polyak_update`` (``mul_(1 − τ)`` then ``add_(τ θ)``); parameters are zipped in order and
    must match in number and shape.
    """
    params, target_params = list(params), list(target_params)
    if len(params) != len(target_params):
        raise ValueError(f"polyak_update got {len(params)} parameters but {len(target_params)} target parameters")
    for p, tp in zip(params, target_params, strict=True):
        tp.lerp_(p, tau)
