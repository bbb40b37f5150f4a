"""Shared fixtures for the engine tests: a small trunk + batched-heads model and test-only balancers.

The test-only balancers stand in for the real methods (written in parallel) and are chosen so that
every engine path is exercised with non-trivial numbers: a Gramian weighting whose weights depend on
``G`` and the losses, a Jacobian aggregator that is not ``wᵀJ``, a constant-weight weighting (the
``ew`` path), and a loss weighting with a learnable parameter (the UW form).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mtrl.balancers.base import GradientBalancer, GramianWeighting, LossWeighting
from mtrl.engine import LinearCapture, LossClosure, make_loss_fn
from mtrl.nn import MultiTaskMLP

IN, HIDDEN, OUT = 5, (7, 6), 2


@dataclass
class Problem:
    """A seeded task-grouped regression problem: ``x (T, n, IN)``, ``y (T, n, OUT)``."""

    net: MultiTaskMLP
    x: Tensor
    y: Tensor

    @property
    def num_tasks(self) -> int:
        return self.net.num_tasks

    def losses(self, out: Tensor) -> Tensor:
        """Per-task MSE ``(T,)`` of task-grouped outputs ``(T, n, OUT)``."""
        return ((out - self.y) ** 2).mean(dim=(1, 2))

    def forward(self, capture: LinearCapture | None = None) -> Tensor:
        if capture is None:
            return self.losses(self.net(self.x))
        with capture.record():
            return self.losses(self.net(self.x))

    def loss_fn(self) -> LossClosure:
        return make_loss_fn(
            self.net, self.net.shared_parameters(), self.net.task_parameters(), lambda fwd: self.losses(fwd(self.x))
        )

    def shared(self) -> list[nn.Parameter]:
        return self.net.shared_parameters()

    def task(self) -> list[nn.Parameter]:
        return self.net.task_parameters()

    def heads(self) -> list[nn.Module]:
        return self.net.head_modules()

    def clear_grads(self) -> None:
        for p in self.net.parameters():
            p.grad = None


def make_problem(
    T: int = 3, n: int = 4, dtype: torch.dtype = torch.float64, device: str = "cpu", seed: int = 0
) -> Problem:
    torch.manual_seed(seed)
    net = MultiTaskMLP(T, IN, HIDDEN, OUT).to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(T, n, IN, generator=g, dtype=dtype).to(device)
    # task-dependent targets so the per-task gradients differ in direction and size
    y = (torch.randn(T, n, OUT, generator=g, dtype=dtype) * torch.arange(1, T + 1, dtype=dtype)[:, None, None]).to(
        device
    )
    return Problem(net, x, y)


class GramTestWeighting(GramianWeighting):
    """Test-only: ``w_t = (1 + t/T) / (√G_tt + L_t)``, depends on ``G`` and the losses."""

    name = "gram_test"

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        ranks = 1.0 + torch.arange(self.num_tasks, dtype=gram.dtype, device=gram.device) / self.num_tasks
        return ranks / (gram.diagonal().clamp_min(0).sqrt() + losses.to(gram))


class RepGramTestWeighting(GramTestWeighting):
    """Test-only representation-level variant."""

    name = "rep_gram_test"
    representation_level = True


class AggregatorTest(GradientBalancer):
    """Test-only Jacobian aggregator: ``d = Σ_t g_t / (‖g_t‖ + 1) + J.abs().max(0)·1e-3`` (not ``wᵀJ``)."""

    name = "agg_test"

    def aggregate(self, jac: Tensor, losses: Tensor) -> Tensor:
        norms = jac.norm(dim=1, keepdim=True)
        return (jac / (norms + 1)).sum(0) + 1e-3 * jac.abs().amax(0)


class RepAggregatorTest(AggregatorTest):
    """Test-only representation-level Jacobian aggregator."""

    name = "rep_agg_test"
    representation_level = True


class RepRequiredTestWeighting(RepGramTestWeighting):
    """Test-only weighting defined at representation level only (like ``mgda_ub``)."""

    name = "rep_required_test"
    representation_required = True


class OnesTestWeighting(GramianWeighting):
    """Test-only stand-in for ``ew``: constant weights 1."""

    name = "ones_test"
    constant_weights = True

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        return torch.ones(self.num_tasks, dtype=gram.dtype, device=gram.device)


class HalfTestWeighting(OnesTestWeighting):
    """Test-only constant weights ``1/T`` (the ``mean`` variant of ``ew``)."""

    name = "half_test"

    def weights(self, gram: Tensor, losses: Tensor, rtol: float | None = None) -> Tensor:
        return torch.full((self.num_tasks,), 1.0 / self.num_tasks, dtype=gram.dtype, device=gram.device)


class UWTestWeighting(LossWeighting):
    """Test-only learnable loss weighting ``S_t = exp(-s_t) L_t + s_t`` (the UW form)."""

    name = "uw_test"

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.log_var = torch.linspace(-0.5, 0.5, num_tasks, dtype=torch.float64).requires_grad_(True)
        self.stepped = 0

    def scalarize(self, losses: Tensor) -> Tensor:
        s = self.log_var.to(losses)
        return torch.exp(-s) * losses + s

    def parameters(self) -> list[Tensor]:
        return [self.log_var]

    def after_backward(self) -> None:
        self.stepped += 1


TEST_BALANCERS: dict[str, Callable[[int], GradientBalancer | LossWeighting]] = {
    "gram_test": GramTestWeighting,
    "agg_test": AggregatorTest,
}


def grads_of(params: list[nn.Parameter]) -> list[Tensor]:
    out = []
    for p in params:
        assert p.grad is not None, f"parameter of shape {tuple(p.shape)} got no .grad"
        out.append(p.grad.detach().clone())
    return out


def assert_close_lists(actual: list[Tensor], expected: list[Tensor], rtol: float = 1e-5, atol: float = 0.0) -> None:
    assert len(actual) == len(expected)
    scale = max(float(e.detach().abs().max()) for e in expected) if expected else 1.0
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e.detach(), rtol=rtol, atol=atol + rtol * scale)
