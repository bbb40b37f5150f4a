"""How far SGSU's shared direction is from ew's, for a grid of inner steps: the sweep behind sgsu's default.

    python scripts/sgsu_sweep.py                                  # the README table (a few minutes on a CPU)
    python scripts/sgsu_sweep.py --models mt10_critic --steps 0.03

For every model and inner step ``a`` it prints the cosine between the shared-parameter directions that
``GradientEngine`` writes for ``sgsu`` (second order) and for ``ew``, at initialisation, on one batch:

* ``mt10_critic×s``: the MT10 SAC critic (``agents.networks.TwinCritic``: T = 10, 39-d observations,
  4-d actions, one-hot task input, 3×400 ReLU trunks, batched per-task heads), 128 random transitions per
  task (observations N(0, 1), actions U(−1, 1)) and TD targets N(0, s²), s ∈ {0.1, 1, 10}: the loss scale
  changes by 10⁴ between the three;
* ``toy_critic``: the toy-suite critic (``configs/toy_sac.yaml``: T = 4, 2-d positions, 2-d actions,
  64×64 trunks), 32 random transitions per task, targets N(0, 1);
* ``synthetic``: the small dense model on synthetic scenes (``configs/vision/synthetic.yaml``: width 16,
  48×64 inputs, batch 8; segmentation, depth, normals).

Rows ``a`` use the default normalised inner step (a step of length ``a``); rows ``sgd a`` the SGD inner step
(``normalize=False``, learning rate ``a``; 3e-4 was the earlier default).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.networks import TwinCritic  # noqa: E402
from mtrl.balancers import make_balancer  # noqa: E402
from mtrl.engine import GradientEngine, LossClosure, make_loss_fn  # noqa: E402
from mtrl.vision.data.synthetic import SyntheticScenes  # noqa: E402
from mtrl.vision.losses import multi_task_losses  # noqa: E402
from mtrl.vision.models import make_model  # noqa: E402

NORMALISED = [0.003, 0.01, 0.02, 0.03, 0.05, 0.1]
SGD = [3e-4, 1e-2, 1e-1]


class Setup:
    """One model and batch: ``losses()`` (T,) attached to the graph and the matching loss closure."""

    def __init__(self, module: nn.Module, shared: list[Tensor], task: list[Tensor], losses: Callable[..., Tensor]):
        self.module, self.shared, self.task, self.losses = module, shared, task, losses

    def closure(self) -> LossClosure:
        return make_loss_fn(self.module, self.shared, self.task, self.losses)

    def direction(self, key: str, **hparams: float | bool) -> Tensor:
        """The flattened shared direction the engine writes for balancer ``key``."""
        for p in self.module.parameters():
            p.grad = None
        losses = self.losses(self.module)
        GradientEngine(make_balancer(key, losses.shape[0], **hparams)).backward(  # type: ignore[arg-type]
            losses, self.shared, self.task, loss_fn=self.closure()
        )
        return torch.cat([p.grad.reshape(-1) for p in self.shared if p.grad is not None]).double()


def critic(num_tasks: int, obs: int, act: int, hidden: tuple[int, ...], rows: int, scale: float) -> Setup:
    torch.manual_seed(0)
    net = TwinCritic(num_tasks, obs, act, hidden, "one_hot")
    gen = torch.Generator().manual_seed(1)
    obs_TNO = torch.randn(num_tasks, rows, obs, generator=gen)
    act_TNA = torch.rand(num_tasks, rows, act, generator=gen) * 2 - 1
    target_TN = torch.randn(num_tasks, rows, generator=gen) * scale

    def losses(forward: Callable[..., tuple[Tensor, Tensor]]) -> Tensor:  # SAC's ½ Σ_k MSE per task
        q1, q2 = forward(obs_TNO, act_TNA)
        return 0.5 * (((q1 - target_TN) ** 2).mean(1) + ((q2 - target_TN) ** 2).mean(1))

    return Setup(net, net.shared_parameters(), net.task_parameters(), losses)


def synthetic() -> Setup:
    data = SyntheticScenes("train", size=(48, 64), length=8)
    torch.manual_seed(0)
    model = make_model("small", data.tasks, width=16)
    samples = [data[i] for i in range(8)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}

    def losses(forward: Callable[..., dict[str, Tensor]]) -> Tensor:
        return multi_task_losses(data.tasks, forward(batch["image"]), batch)

    return Setup(model, model.shared_parameters(), model.task_parameters(), losses)


MODELS: dict[str, Callable[[], Setup]] = {
    "mt10_critic×0.1": lambda: critic(10, 39, 4, (400, 400, 400), 128, 0.1),
    "mt10_critic×1": lambda: critic(10, 39, 4, (400, 400, 400), 128, 1.0),
    "mt10_critic×10": lambda: critic(10, 39, 4, (400, 400, 400), 128, 10.0),
    "toy_critic": lambda: critic(4, 2, 2, (64, 64), 32, 1.0),
    "synthetic": synthetic,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="MODEL")
    ap.add_argument("--steps", type=float, nargs="+", default=NORMALISED, help="normalised inner steps a")
    ap.add_argument("--sgd", type=float, nargs="*", default=SGD, help="SGD inner learning rates (normalize=False)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [(f"{a:g}", {"inner_lr": a}) for a in args.steps]
    rows += [(f"sgd {a:g}", {"inner_lr": a, "normalize": False}) for a in args.sgd]
    cells: dict[str, list[str]] = {label: [] for label, _ in rows}
    t0 = time.perf_counter()
    for name in args.models:
        setup = MODELS[name]()
        ew = setup.direction("ew")
        for label, hparams in rows:
            d = setup.direction("sgsu", **hparams)
            cells[label].append(f"{float(d @ ew / (d.norm() * ew.norm())):.4f}")
            print(f"{name} {label}: cos {cells[label][-1]}", file=sys.stderr, flush=True)
    print("cosine(sgsu, ew) of the shared direction at initialisation, one batch\n")
    print("| inner step | " + " | ".join(args.models) + " |")
    print("|---|" + "---:|" * len(args.models))
    for label, _ in rows:
        print(f"| {label} | " + " | ".join(cells[label]) + " |")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
