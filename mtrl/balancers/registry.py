"""The one registry of balancers: an explicit dict from registry key to class."""

from __future__ import annotations

import inspect
from typing import Any

from mtrl.balancers.aligned_mtl import AlignedMTL, AlignedMTLUB
from mtrl.balancers.base import Balancer
from mtrl.balancers.cagrad import CAGrad
from mtrl.balancers.dgr import DGR
from mtrl.balancers.dwa import DWA
from mtrl.balancers.ew import EW
from mtrl.balancers.famo import FAMO
from mtrl.balancers.graddrop import GradDrop
from mtrl.balancers.gradnorm import GradNorm
from mtrl.balancers.imtl import IMTL, IMTLG, IMTLL
from mtrl.balancers.mgda import MGDA, MGDAUB
from mtrl.balancers.nash_mtl import NashMTL
from mtrl.balancers.pcgrad import PCGrad
from mtrl.balancers.rlw import RLW
from mtrl.balancers.sgsu import SGSU
from mtrl.balancers.task_tensioner import TaskTensioner
from mtrl.balancers.upgrad import UPGrad
from mtrl.balancers.uw import UW

__all__ = ["BALANCERS", "balancer_hparams", "make_balancer"]

BALANCERS: dict[str, type[Balancer]] = {
    "ew": EW,
    "uw": UW,
    "dwa": DWA,
    "rlw": RLW,
    "famo": FAMO,
    "gradnorm": GradNorm,
    "mgda": MGDA,
    "mgda_ub": MGDAUB,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "nash_mtl": NashMTL,
    "upgrad": UPGrad,
    "graddrop": GradDrop,
    "imtl_g": IMTLG,
    "imtl_l": IMTLL,
    "imtl": IMTL,
    "aligned_mtl": AlignedMTL,
    "aligned_mtl_ub": AlignedMTLUB,
    "task_tensioner": TaskTensioner,
    "sgsu": SGSU,
    "dgr": DGR,
}


def balancer_hparams(name: str) -> dict[str, Any]:
    """The hyper-parameters of balancer ``name`` with their defaults (``num_tasks`` excluded)."""
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    return {
        key: (None if p.default is inspect.Parameter.empty else p.default)
        for key, p in params.items()
        if key not in ("self", "num_tasks") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _lookup(name: str) -> type[Balancer]:
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; valid balancers: {', '.join(sorted(BALANCERS))}")
    return BALANCERS[name]


def make_balancer(name: str, num_tasks: int, **hparams: Any) -> Balancer:
    """Build balancer ``name`` for ``num_tasks`` tasks.

    Raises ``ValueError`` naming the valid choices for an unknown balancer or hyper-parameter.
    """
    cls = _lookup(name)
    valid = balancer_hparams(name)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        choices = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
        raise ValueError(
            f"unknown hyper-parameter(s) {unknown} for balancer {name!r}; valid ones (with defaults): {choices}"
        )
    return cls(num_tasks, **hparams)
