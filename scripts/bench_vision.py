"""Time per training step of each balancer relative to ``ew``, side by side in one run.

    python scripts/bench_vision.py                               # CPU, small model, 64×80, batch 16, 1 thread
    python scripts/bench_vision.py --balancers ew pcgrad aligned_mtl_ub --repeats 20
    python scripts/bench_vision.py --device cuda --model segnet_mtan --size 288 384 --batch 2   # NYUv2-sized

Every balancer trains its own copy of the same initial model on the same fixed ``synthetic_scenes`` batch
(one full step: forward, per-task losses, engine backward, Adam step, FAMO post-step). The balancers are
timed round-robin (one step each per round) so that load changes on a shared machine hit all of them
alike; the table shows the median seconds per step over ``--repeats`` rounds after ``--warmup`` rounds and
the ratio to ``ew``. Balancers whose module is still a PLACEHOLDER are listed as skipped.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from mtrl.balancers import BALANCERS, make_balancer
from mtrl.engine import Strategy
from mtrl.vision.data.synthetic import SyntheticScenes
from mtrl.vision.models import MODELS, make_model
from mtrl.vision.trainer import BalancedStep, resolve_device

DEFAULT = ["ew", "mgda", "mgda_ub", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "imtl", "aligned_mtl",
           "aligned_mtl_ub", "upgrad", "graddrop", "task_tensioner", "famo", "uw", "sgsu", "dgr"]  # fmt: skip
GPU_COMMAND = (
    "python scripts/bench_vision.py --device cuda --model segnet_mtan --size 288 384 --batch 2 --repeats 20"
    "   # NYUv2-sized (MTAN protocol); LibMTL protocol: --model resnet50_aspp --batch 8"
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--balancers", nargs="+", default=DEFAULT, help="balancer keys (ew is always included first)")
    ap.add_argument("--model", default="small", choices=list(MODELS))
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 80), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    ap.add_argument("--strategy", default="auto", choices=["auto", "reference", "batched"],
                    help="engine strategy of the parameter-level balancers (representation-level ones keep theirs)")
    ap.add_argument("--amp", default="off", choices=["off", "bf16"], help="autocast dtype on CUDA")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = SyntheticScenes("train", size=tuple(args.size), length=args.batch, seed=0)
    batch = [data[i] for i in range(args.batch)]
    x = torch.stack([b["image"] for b in batch]).to(device)
    targets = {t.name: torch.stack([b[t.name] for b in batch]).to(device) for t in data.tasks}
    torch.manual_seed(0)
    base_model = make_model(args.model, data.tasks, width=args.width).to(device)
    amp = torch.bfloat16 if args.amp == "bf16" and device.type == "cuda" else None

    names = ["ew", *[b for b in args.balancers if b != "ew"]]
    steps: dict[str, BalancedStep] = {}
    skipped: list[str] = []
    for name in names:
        if name not in BALANCERS:
            raise SystemExit(f"unknown balancer {name!r}; valid: {', '.join(sorted(BALANCERS))}")
        try:
            balancer = make_balancer(name, len(data.tasks))
        except NotImplementedError:
            skipped.append(name)
            continue
        model = copy.deepcopy(base_model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        level = getattr(getattr(balancer, "base", balancer), "representation_level", False)
        chosen: Strategy = "auto" if level else args.strategy
        steps[name] = BalancedStep(model, data.tasks, balancer, opt, strategy=chosen, amp_dtype=amp)
    times: dict[str, list[float]] = {n: [] for n in steps}
    strategy: dict[str, str] = {}
    for round_ in range(args.warmup + args.repeats):
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            _, report = step(x, targets)
            _sync(device)
            strategy[name] = report.strategy
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    ew = statistics.median(times["ew"])
    print(
        f"# {args.model} (width {args.width or 'default'}), {args.size[0]}×{args.size[1]}, batch {args.batch}, "
        f"T = {len(data.tasks)}, device {device}, threads {args.threads}, strategy {args.strategy}, "
        f"median of {args.repeats} rounds"
    )
    print("| balancer | strategy | s/step | × ew |\n|---|---|---|---|")
    for name in steps:
        med = statistics.median(times[name])
        print(f"| {name} | {strategy[name]} | {med:.4f} | {med / ew:.2f} |")
    if skipped:
        print(f"skipped (PLACEHOLDER, not implemented yet): {', '.join(skipped)}")
    print(f"\nSame on a GPU with NYUv2-sized inputs:\n  {GPU_COMMAND}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
