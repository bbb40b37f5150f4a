"""Cost of one balanced backward relative to one plain backward, per engine strategy and balancer.

Model: the multi-task SAC critic shape, a shared 3×400 ReLU trunk (``mtrl.nn.MultiTaskMLP``, input
``39 + T`` = Meta-World observation + one-hot, output 1) with batched per-task heads, 128 rows per
task grouped by task, per-task MSE losses. For each ``T`` it times, side by side in one run
(round-robin over configurations, warm-up rounds discarded, median of the repeats):

* ``plain``: ``losses.sum().backward()`` (the denominator);
* ``<strategy>``: ``GradientEngine(balancer, strategy).backward(...)`` for reference, batched and
  task_partitioned (which records the forward with a ``LinearCapture``); ``imtl`` runs these with
  ``representation_level=False`` (parameter gradients);
* ``representation``: the balancer's representation-level variant (``mgda`` → ``mgda_ub``,
  ``aligned_mtl`` → ``aligned_mtl_ub``, ``imtl_g`` → ``imtl_g(representation_level=True)``, ``imtl``)
  with ``features=z``, the trunk output ``(T, n, 400)``: gradients w.r.t. ``z`` by one vectorised
  backward through the heads, then one trunk backward with ``Σ_t w_t Z_t``; balancers without such a
  variant have no row;
* ``peers``: the common implementation (LibMTL ``autograd`` mode): a ``T``-call
  ``torch.autograd.grad`` loop filling a ``(T, P)`` Jacobian, the head gradients, ``w`` from
  ``G = JJᵀ``, ``d = wᵀJ`` written to ``.grad``;
* ``torchjd_autojac`` / ``torchjd_autogram``: torchjd's own implementation of the balancer (see
  :func:`torchjd_runners`), only if ``torchjd`` is importable (the optional ``bench`` extra:
  ``pip install -e ".[bench]"``).

Above ``--all-slow-up-to`` tasks the ``T``-pass rows (reference, batched, peers, torchjd_autojac)
are timed for the first balancer and the first non-constant-weight one only; configurations slower
than ``--slow-seconds`` in warm-up get ``--slow-repeats`` timed rounds.

``bwd×`` is the backward time over the plain backward; ``step×`` adds the forward to both.
``--strategies`` restricts the columns (plain is always timed), e.g. a focused run of the fast path:

    python scripts/bench_balancers.py --tasks 10 50 --repeats 7 --threads 1
    python scripts/bench_balancers.py --tasks 10 --strategies task_partitioned --repeats 25
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mtrl.balancers import BALANCERS, GramianWeighting, make_balancer
from mtrl.engine import GradientEngine, LinearCapture
from mtrl.nn import MultiTaskMLP

DEFAULT_BALANCERS = (
    "ew", "mgda", "imtl_g", "aligned_mtl", "pcgrad", "cagrad", "nash_mtl", "upgrad", "gradnorm", "imtl",
)  # fmt: skip
STRATEGIES = ("reference", "batched", "task_partitioned")
#: every column ``--strategies`` can select (engine strategies, then the comparison rows)
COLUMNS = (*STRATEGIES, "representation", "peers", "torchjd_autojac", "torchjd_autogram")
#: the representation-level variant timed in the ``representation`` row: (registry key, hyper-parameters)
REPRESENTATION_VARIANT: dict[str, tuple[str, dict[str, object]]] = {
    "mgda": ("mgda_ub", {}),
    "aligned_mtl": ("aligned_mtl_ub", {}),
    "imtl_g": ("imtl_g", {"representation_level": True}),
    "imtl": ("imtl", {}),
}
#: hyper-parameters of the parameter-level rows (imtl is feature-level by default)
PARAMETER_LEVEL: dict[str, dict[str, object]] = {"imtl": {"representation_level": False}}
OBS_DIM = 39  # Meta-World observation size


class Setup:
    """Network, task-grouped batch ``x (T, n, 39+T)``, targets ``y (T, n, 1)``."""

    def __init__(self, num_tasks: int, per_task: int, hidden: int, seed: int) -> None:
        torch.manual_seed(seed)
        self.T = num_tasks
        self.net = MultiTaskMLP(num_tasks, OBS_DIM + num_tasks, (hidden, hidden, hidden), 1)
        self.x = torch.randn(num_tasks, per_task, OBS_DIM + num_tasks)
        self.y = torch.randn(num_tasks, per_task, 1)
        self.capture = LinearCapture(self.net.trunk, num_tasks)
        self.shared = self.net.shared_parameters()
        self.task = self.net.task_parameters()

    def losses(self, record: bool = False) -> torch.Tensor:
        if record:
            with self.capture.record():
                out = self.net(self.x)
        else:
            out = self.net(self.x)
        return ((out - self.y) ** 2).mean(dim=(1, 2))  # (T,)

    def features_and_losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (T, n, hidden)`` (the trunk output) and the losses computed from it."""
        z = self.net.features(self.x)
        return z, ((self.net.heads(z) - self.y) ** 2).mean(dim=(1, 2))


def peers_backward(balancer: GramianWeighting, setup: Setup, losses: torch.Tensor) -> None:
    """The T-call loop most reference implementations use (LibMTL ``_compute_grad(mode='autograd')``)."""
    shared = setup.shared
    jac_TP = torch.zeros(setup.T, sum(p.numel() for p in shared))
    for t in range(setup.T):
        grads = torch.autograd.grad(losses[t], shared, retain_graph=True)
        jac_TP[t] = torch.cat([g.reshape(-1) for g in grads])
    for p, g in zip(setup.task, torch.autograd.grad(losses.sum(), setup.task), strict=True):
        p.grad = g
    jac64 = jac_TP.to(torch.float64)
    w = balancer.weights(jac64 @ jac64.T, losses.detach().to(torch.float64))
    d_P = w.to(jac_TP.dtype) @ jac_TP
    offset = 0
    for p in shared:
        p.grad = d_P[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


TORCHJD_NAMES = {"ew": "Sum", "mgda": "MGDA", "imtl_g": "IMTLG", "aligned_mtl": "AlignedMTL", "pcgrad": "PCGrad",
                 "cagrad": "CAGrad", "nash_mtl": "NashMTL", "upgrad": "UPGrad"}  # fmt: skip


def torchjd_runners(
    key: str, setup: Setup, twin: Setup, engines: dict[int, object]
) -> dict[str, Callable[[], tuple[float, float]]]:
    """torchjd's own implementation of ``key``, when torchjd (the optional ``bench`` extra) imports:

    * ``torchjd_autojac``: ``mtl_backward(losses, features)`` (one vmapped trunk backward) then
      ``jac_to_grad(shared, aggregator)``;
    * ``torchjd_autogram``: ``Engine(trunk, batch_dim=0).compute_gramian(losses)`` (the task axis of
      the ``(T, n, ·)`` rows is the batch axis), ``w = weighting(G)``, ``losses.backward(w)``; runs on
      ``twin`` (a copy of the network) because the engine hooks its modules for good; one engine per
      network (``engines``), as two engines on one module break each other.
    """
    try:
        from torchjd import aggregation
        from torchjd.autogram import Engine
        from torchjd.autojac import jac_to_grad, mtl_backward
    except ImportError:
        return {}
    name = TORCHJD_NAMES.get(key)
    if name is None:
        return {}
    kwargs = {"c": 0.4} if key == "cagrad" else {}  # mtrl's CAGrad default c
    runners: dict[str, Callable[[], tuple[float, float]]] = {}
    try:
        aggregator = getattr(aggregation, name)(**kwargs)
    except (ImportError, TypeError, AttributeError):  # e.g. CAGrad/NashMTL need torchjd's cvxpy extra
        aggregator = None
    if aggregator is not None:

        def autojac() -> tuple[float, float]:
            start = time.perf_counter()
            z = setup.net.features(setup.x)
            losses = ((setup.net.heads(z) - setup.y) ** 2).mean(dim=(1, 2))
            mid = time.perf_counter()
            mtl_backward(list(losses.unbind()), z, shared_params=setup.shared, retain_graph=True)
            jac_to_grad(setup.shared, aggregator)
            return mid - start, time.perf_counter() - mid

        runners["torchjd_autojac"] = autojac
    try:
        weighting = getattr(aggregation, f"{name}Weighting")(**kwargs)
    except (ImportError, TypeError, AttributeError):
        weighting = None
    if weighting is not None:
        if id(twin.net) not in engines:
            engines[id(twin.net)] = Engine(twin.net.trunk, batch_dim=0)
        engine = engines[id(twin.net)]
        assert isinstance(engine, Engine)

        def autogram() -> tuple[float, float]:
            start = time.perf_counter()
            losses = twin.losses()
            mid = time.perf_counter()
            weights = weighting(engine.compute_gramian(losses))
            losses.backward(weights)
            return mid - start, time.perf_counter() - mid

        runners["torchjd_autogram"] = autogram
    return runners


def bench(num_tasks: int, keys: list[str], args: argparse.Namespace) -> list[tuple[str, str, float, float, float]]:
    setup = Setup(num_tasks, args.per_task, args.hidden, args.seed)
    twin = Setup(num_tasks, args.per_task, args.hidden, args.seed)  # for torchjd's autogram hooks
    jd_engines: dict[int, object] = {}
    configs: dict[tuple[str, str], Callable[[], tuple[float, float]]] = {}

    def timed(record: bool, backward: Callable[[torch.Tensor], object]) -> tuple[float, float]:
        start = time.perf_counter()
        losses = setup.losses(record)
        mid = time.perf_counter()
        backward(losses)
        end = time.perf_counter()
        return mid - start, end - mid

    def run_engine(engine: GradientEngine, record: bool) -> tuple[float, float]:
        capture = setup.capture if record else None
        return timed(record, lambda losses: engine.backward(losses, setup.shared, setup.task, capture=capture))

    def run_representation(engine: GradientEngine) -> tuple[float, float]:
        start = time.perf_counter()
        z, losses = setup.features_and_losses()
        mid = time.perf_counter()
        engine.backward(losses, setup.shared, setup.task, features=z)
        return mid - start, time.perf_counter() - mid

    def run_peers(balancer: GramianWeighting) -> tuple[float, float]:
        return timed(False, lambda losses: peers_backward(balancer, setup, losses))

    configs[("-", "plain")] = lambda: timed(False, lambda losses: losses.sum().backward())
    balanced = [k for k in keys if not getattr(BALANCERS[k], "constant_weights", False)]
    loop_keys = set(keys[:1] + balanced[:1])
    for key in keys:
        # reference, batched, peers and autojac cost T backward passes whatever the balancer (its solver
        # shows in the task_partitioned row), so above --all-slow-up-to tasks they are timed only for the
        # first balancer and the first non-constant-weight one
        loops = key in loop_keys or num_tasks <= args.all_slow_up_to
        hparams = PARAMETER_LEVEL.get(key, {})
        for strategy in STRATEGIES:
            if strategy not in args.strategies or (strategy != "task_partitioned" and not loops):
                continue
            engine = GradientEngine(make_balancer(key, num_tasks, **hparams), strategy, chunk_size=args.chunk_size)
            record = strategy == "task_partitioned"
            configs[(key, strategy)] = partial(run_engine, engine, record)
        if key in REPRESENTATION_VARIANT and "representation" in args.strategies:
            rep_key, rep_hparams = REPRESENTATION_VARIANT[key]
            rep_engine = GradientEngine(make_balancer(rep_key, num_tasks, **rep_hparams), "representation")
            configs[(key, "representation")] = partial(run_representation, rep_engine)
        peer_balancer = make_balancer(key, num_tasks, **hparams)
        scalarizes = type(peer_balancer).scalarize is not GramianWeighting.scalarize  # imtl: peers would differ
        if loops and isinstance(peer_balancer, GramianWeighting) and not scalarizes and "peers" in args.strategies:
            configs[(key, "peers")] = partial(run_peers, peer_balancer)
        wanted_jd = [c for c in ("torchjd_autojac", "torchjd_autogram") if c in args.strategies]
        for strategy, runner in (torchjd_runners(key, setup, twin, jd_engines) if wanted_jd else {}).items():
            # autojac is a vmapped T-row backward, like batched
            if strategy in wanted_jd and (loops or strategy == "torchjd_autogram"):
                configs[(key, strategy)] = runner
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in configs}
    warm: dict[tuple[str, str], int] = dict.fromkeys(configs, 0)
    wanted: dict[tuple[str, str], int] = dict.fromkeys(configs, args.repeats)
    while any(len(samples[k]) < wanted[k] for k in configs):
        for name, run in configs.items():  # round-robin, so load changes hit every configuration alike
            if len(samples[name]) >= wanted[name]:
                continue
            for p in [*setup.net.parameters(), *twin.net.parameters()]:
                p.grad = None
            fwd, bwd = run()
            if warm[name] < args.warmup:
                warm[name] += 1
                if fwd + bwd > args.slow_seconds:  # a slow configuration: no more warm-up, fewer repeats
                    warm[name] = args.warmup
                    wanted[name] = args.slow_repeats
                continue
            samples[name].append((fwd, bwd))
    fwd0 = statistics.median(f for f, _ in samples[("-", "plain")])
    bwd0 = statistics.median(b for _, b in samples[("-", "plain")])
    rows = []
    for (key, strategy), values in samples.items():
        fwd = statistics.median(f for f, _ in values)
        bwd = statistics.median(b for _, b in values)
        rows.append((key, strategy, 1e3 * bwd, bwd / bwd0, (fwd + bwd) / (fwd0 + bwd0)))
    return rows


def _load() -> float:
    """The 1-minute load average (NaN where the OS has none): a busy machine inflates every ratio."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[10, 50], help="task counts T to benchmark")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before the repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--per-task", type=int, default=128, help="rows per task in the batch")
    parser.add_argument("--hidden", type=int, default=400, help="width of the 3-layer trunk")
    parser.add_argument(
        "--slow-seconds", type=float, default=1.0, help="a warm-up run slower than this marks a slow config"
    )
    parser.add_argument("--slow-repeats", type=int, default=1, help="timed rounds of slow configs")
    parser.add_argument(
        "--all-slow-up-to", type=int, default=10, help="time the T-pass strategies of every balancer up to this T"
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="rows per vectorised backward (batched)")
    parser.add_argument("--balancers", nargs="+", default=list(DEFAULT_BALANCERS), help="registry keys")
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=list(COLUMNS),
        choices=COLUMNS,
        metavar="COLUMN",
        help=f"columns to time besides plain (default all): {', '.join(COLUMNS)}",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unknown = [k for k in args.balancers if k not in BALANCERS]
    if unknown:
        parser.error(f"unknown balancers {unknown}; valid: {', '.join(sorted(BALANCERS))}")
    keys = list(args.balancers)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, load(1 min) {_load():.2f}, "
        f"{args.per_task} rows/task, trunk 3x{args.hidden}, median of {args.repeats} (+{args.warmup} warm-up)"
    )
    try:
        import torchjd  # noqa: F401
    except ImportError:
        print("torchjd not installed (optional bench extra: pip install -e '.[bench]'): its rows are omitted")
    for num_tasks in args.tasks:
        load_before = _load()
        rows = bench(num_tasks, keys, args)
        load_after = _load()
        print(
            f"\nT = {num_tasks}  (plain backward median {rows[0][2]:.1f} ms; "
            f"load(1 min) {load_before:.2f} at start, {load_after:.2f} at end)"
        )
        print(f"{'balancer':<12} {'strategy':<17} {'bwd ms':>9} {'bwd×':>7} {'step×':>7}")
        for key, strategy, ms, ratio, step_ratio in rows:
            print(f"{key:<12} {strategy:<17} {ms:9.1f} {ratio:7.2f} {step_ratio:7.2f}")
    print(f"\nload(1 min) at end {_load():.2f}")


if __name__ == "__main__":
    main()
