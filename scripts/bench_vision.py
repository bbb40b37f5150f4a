"""Time per training step of each balancer relative to ``ew``, side by side in one run.

    python scripts/bench_vision.py                               # CPU, small model, 64×80, batch 16, 1 thread
    python scripts/bench_vision.py --balancers ew pcgrad aligned_mtl_ub --repeats 20
    python scripts/bench_vision.py --device cuda --model segnet_mtan --size 288 384 --batch 2 --classes 13

Every balancer trains its own copy of the same initial model on the same fixed ``synthetic_scenes`` batch
(one full step: forward, per-task losses, engine backward, Adam step, FAMO post-step) through the
trainer's own :class:`~mtrl.vision.step.BalancedStep`, with the trainer's device settings: on CUDA
channels-last model and inputs (``--no-channels-last`` to disable) and the trainer's ``amp`` rule
(:func:`mtrl.vision.amp.resolve_amp`: ``auto`` = bf16 where supported, else fp16 + GradScaler for
scale-equivariant balancers, else full precision; full precision on the CPU). The balancers are timed
round-robin (one step each per round) so that load changes on a shared machine hit all of them alike; the
table shows the median seconds per step over ``--repeats`` rounds after ``--warmup`` rounds and the ratio
to ``ew``. ``--classes`` sets the segmentation classes (13 = NYUv2; the synthetic labels use the first 7).

SegNet-MTAN is built with one copy of the attention-path convs per task (``share_attention_convs=False``) so
that the representation-level balancers (``mgda_ub``, ``aligned_mtl_ub``, ``imtl``) run on the same model as
the others; ``--mtan-shared-attention`` uses MTAN's shared convs instead, and those balancers are then listed
as skipped with the reason (as is any balancer the chosen ``--amp`` cannot train exactly).
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
from mtrl.config import ConfigError
from mtrl.device import resolve_device, synchronize
from mtrl.engine import Strategy, core_balancer
from mtrl.vision.amp import make_grad_scaler, resolve_amp
from mtrl.vision.data.synthetic import SyntheticScenes
from mtrl.vision.models import MODELS, make_model
from mtrl.vision.step import BalancedStep
from mtrl.vision.tasks import TaskSpec

DEFAULT = ["ew", "mgda", "mgda_ub", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "imtl", "aligned_mtl",
           "aligned_mtl_ub", "upgrad", "graddrop", "task_tensioner", "famo", "uw", "sgsu", "dgr"]  # fmt: skip
GPU_COMMAND = (
    "python scripts/bench_vision.py --device cuda --model segnet_mtan --size 288 384 --batch 2 --classes 13 "
    "--repeats 20   # NYUv2-sized (MTAN protocol: 13-class seg, depth, normals); "
    "LibMTL protocol: --model resnet50_aspp --batch 8"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--balancers", nargs="+", default=DEFAULT, help="balancer keys (ew is always included first)")
    ap.add_argument("--model", default="small", choices=list(MODELS))
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--size", type=int, nargs=2, default=(64, 80), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=None, help="segmentation classes (default: the data's 7)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    ap.add_argument("--strategy", default="auto", choices=["auto", "reference", "batched"],
                    help="engine strategy of the parameter-level balancers (representation-level ones keep theirs)")
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                    help="autocast, as the trainer's amp option (auto: bf16 on CUDA where supported; off on the CPU)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                    help="channels-last model and inputs on CUDA (the trainer's default)")
    ap.add_argument("--mtan-shared-attention", action="store_true",
                    help="segnet_mtan: MTAN's shared attention convs (representation-level balancers are skipped)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = SyntheticScenes("train", size=tuple(args.size), length=args.batch, seed=0)
    classes = args.classes or data.num_classes
    if classes < data.num_classes:
        raise SystemExit(f"--classes {classes} is below the {data.num_classes} classes of the synthetic labels")
    tasks = tuple(TaskSpec(t.name, t.kind, classes if t.kind == "seg" else t.out_channels) for t in data.tasks)
    batch = [data[i] for i in range(args.batch)]
    channels_last = args.channels_last and device.type == "cuda"
    x = torch.stack([b["image"] for b in batch]).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    targets = {t.name: torch.stack([b[t.name] for b in batch]).to(device) for t in tasks}
    torch.manual_seed(0)
    base_model = make_model(
        args.model, tasks, width=args.width, share_attention_convs=args.mtan_shared_attention
    ).to(device)
    if channels_last:
        base_model = base_model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    names = ["ew", *[b for b in args.balancers if b != "ew"]]
    steps: dict[str, BalancedStep] = {}
    amp_of: dict[str, str] = {}
    skipped: list[str] = []
    for name in names:
        if name not in BALANCERS:
            raise SystemExit(f"unknown balancer {name!r}; valid: {', '.join(sorted(BALANCERS))}")
        balancer = make_balancer(name, len(tasks))
        model = copy.deepcopy(base_model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        level = core_balancer(balancer).representation_level
        chosen: Strategy = "auto" if level else args.strategy
        try:
            amp = resolve_amp(args.amp, device, balancer)
            steps[name] = BalancedStep(
                model, tasks, balancer, opt, strategy=chosen, amp_dtype=amp.dtype,
                scaler=make_grad_scaler(amp, device),
            )  # fmt: skip
        except (ConfigError, ValueError) as err:  # representation level on shared MTAN convs; fp16 refusals
            if name == "ew":
                raise SystemExit(f"cannot time the ew reference: {err}") from err
            skipped.append(f"{name}: {err}")
            continue
        amp_of[name] = "off" if amp.dtype is None else str(amp.dtype).removeprefix("torch.")
    times: dict[str, list[float]] = {n: [] for n in steps}
    strategy: dict[str, str] = {}
    for round_ in range(args.warmup + args.repeats):
        for name, step in steps.items():
            synchronize(device)
            t0 = time.perf_counter()
            _, report = step(x, targets)
            synchronize(device)
            strategy[name] = report.strategy
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - t0)

    ew = statistics.median(times["ew"])
    mtan = f", MTAN attention convs {'shared' if args.mtan_shared_attention else 'per task'}"
    print(
        f"# {args.model} (width {args.width or 'default'}{mtan if args.model == 'segnet_mtan' else ''}), "
        f"{args.size[0]}×{args.size[1]}, batch {args.batch}, T = {len(tasks)} ({classes}-class seg), device {device}, "
        f"channels-last {channels_last}, amp {args.amp}, threads {args.threads}, strategy {args.strategy}, "
        f"median of {args.repeats} rounds"
    )
    print("| balancer | strategy | amp | s/step | × ew |\n|---|---|---|---|---|")
    for name in steps:
        med = statistics.median(times[name])
        print(f"| {name} | {strategy[name]} | {amp_of[name]} | {med:.4f} | {med / ew:.2f} |")
    for line in skipped:
        print(f"skipped {line}")
    print(f"\nSame on a GPU with NYUv2-sized inputs:\n  {GPU_COMMAND}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
