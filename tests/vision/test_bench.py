"""scripts/bench_vision.py runs its advertised configurations: SegNet-MTAN with every default balancer (the
NYUv2-sized GPU command at a tiny width and size), MTAN's shared attention convs (representation-level balancers
skipped with the reason), and the AMP branch through CPU autocast."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    return load_script("bench_vision")


def _rows(out: str) -> dict[str, list[str]]:
    return {m.group(1): m.group(0).split(" | ") for m in re.finditer(r"^\| (\w+) \| (?!strategy).*$", out, re.M)}


TINY = ["--width", "2", "--size", "32", "32", "--batch", "1", "--repeats", "1", "--warmup", "0", "--threads", "1"]


def test_segnet_mtan_runs_every_default_balancer(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    command = bench.GPU_COMMAND.split("#")[0].split()[2:]  # the advertised NYUv2-sized arguments
    assert command[command.index("--model") + 1] == "segnet_mtan" and command[command.index("--classes") + 1] == "13"
    args = [a for a in command if a not in ("--device", "cuda")]
    for flag in ("--size", "--batch", "--repeats"):  # shrink the advertised sizes for the CPU
        i = args.index(flag)
        del args[i : i + (3 if flag == "--size" else 2)]
    assert bench.main([*args, *TINY]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == set(bench.DEFAULT), out
    assert "skipped" not in out
    assert "13-class seg" in out and "attention convs per task" in out
    for key in ("mgda_ub", "aligned_mtl_ub", "imtl"):
        assert rows[key][1] == "representation", rows[key]


def test_shared_mtan_attention_skips_representation_level_balancers(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    assert bench.main(["--model", "segnet_mtan", "--mtan-shared-attention", "--balancers", "ew", "mgda_ub", "pcgrad",
                       "aligned_mtl_ub", *TINY]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert set(_rows(out)) == {"ew", "pcgrad"}
    skipped = re.findall(r"^skipped (\w+): (.*)$", out, re.M)
    assert [k for k, _ in skipped] == ["mgda_ub", "aligned_mtl_ub"]
    assert all("share_attention_convs=false" in why for _, why in skipped)


def test_amp_branch_runs_and_refuses_fp16_where_inexact(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    assert bench.main(["--amp", "fp16", "--balancers", "ew", "pcgrad", "dgr", *TINY, "--size", "32", "40"]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert set(rows) == {"ew", "pcgrad"} and rows["pcgrad"][2] == "float16"
    assert re.search(r"^skipped dgr: amp=fp16 .*amp=bf16", out, re.M)
    assert bench.main(["--amp", "bf16", "--balancers", "ew", "aligned_mtl_ub", *TINY, "--size", "32", "40"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["aligned_mtl_ub"][2] == "bfloat16" and rows["aligned_mtl_ub"][1] == "representation"
