"""What each scaling knob costs per SAC update, at the Meta-World+ MT10 preset (batch 1280), interleaved.

    python scripts/bench_knobs.py                       # the README's table (CPU, 1 thread)
    python scripts/bench_knobs.py --device cuda --threads 8 --rounds 50
    python scripts/bench_knobs.py --variant 'wide=sac.hidden_sizes=[4096,4096,4096]' --only wide --rounds 3

Variants (overrides of ``--preset``): the preset itself; ``sac.layer_norm=true``; ``sac.skip_connections=true``;
critic 3×1024 with actor 3×400 (``configs/mt10_mwplus_critic1024.yaml``'s widths); the α-derived task weights
(``balancer=alpha_weights`` over the preset's ``ew`` with ``mean: true``); and a Gramian balancer (``imtl_g``) with
and without LayerNorm, for what the LayerNorm capture of the ``task_partitioned`` strategy costs. The timing
itself is :func:`agents.update_timing.time_update_variants`; prints a Markdown table (median, range of the block
medians, ratio to the preset).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

ROOT = Path(__file__).resolve().parents[1]


def _both(hparams: str) -> list[str]:
    """The hyper-parameters of both loss groups (replacing the preset's ``balancer_hparams``, which are ew's)."""
    return [f"critic_balancer_hparams={hparams}", f"actor_balancer_hparams={hparams}"]


WIDE_CRITIC = ["sac.actor_hidden_sizes=[400,400,400]", "sac.critic_hidden_sizes=[1024,1024,1024]"]
VARIANTS: dict[str, list[str]] = {
    "preset (3×400, ew mean)": [],
    "+ LayerNorm": ["sac.layer_norm=true"],
    "+ skip connections": ["sac.skip_connections=true"],
    "critic 3×1024, actor 3×400": WIDE_CRITIC,
    "+ α task weights": ["balancer=alpha_weights", *_both("{base: ew, base_hparams: {mean: true}}")],
    "imtl_g": ["balancer=imtl_g", *_both("{}")],
    "imtl_g + LayerNorm": ["balancer=imtl_g", *_both("{}"), "sac.layer_norm=true"],
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="bench_knobs.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", type=Path, default=ROOT / "configs" / "mt10_mwplus.yaml")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds per block (each variant one update per round)")
    p.add_argument("--blocks", type=int, default=3, help="repeats of the rounds (their medians give the range)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=KEY=VALUE[;KEY=VALUE]",
                   help="an extra variant: a label, then overrides separated by semicolons")  # fmt: skip
    p.add_argument("--only", nargs="+", default=None, help="time only these labels (the first is the reference)")
    args = p.parse_args(argv)
    variants = dict(VARIANTS)
    for spec in args.variant:
        label, _, overrides = spec.partition("=")
        variants[label] = [o for o in overrides.split(";") if o]
    if args.only:
        unknown = [label for label in args.only if label not in variants]
        if unknown:
            p.error(f"--only: unknown labels {unknown}; known: {list(variants)}")
        variants = {label: variants[label] for label in args.only}
    torch.set_num_threads(args.threads)
    from agents.update_timing import time_update_variants

    results = time_update_variants(args.preset, variants, args.rounds, args.blocks, args.warmup, args.device)
    base = results[0].median_ms
    print(f"preset={args.preset.relative_to(ROOT) if args.preset.is_relative_to(ROOT) else args.preset} "
          f"device={args.device} torch threads={torch.get_num_threads()} torch={torch.__version__} "
          f"rounds={args.rounds} blocks={args.blocks}")  # fmt: skip
    print("\n| variant | ms per update (median) | range of block medians | × preset |\n|---|---:|---:|---:|")
    for r in results:
        low, high = r.range_ms
        print(f"| {r.label} | {r.median_ms:.1f} | {low:.1f}–{high:.1f} | {r.median_ms / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
