"""The balancers that wrap no other balancer, by registry key, and how one is built from its key.

``mtrl.balancers.registry.BALANCERS`` is this table plus DGR, which wraps any of these (its ``base``). The
table lives apart from the registry so that DGR can build its base without importing the registry that
imports it (no import cycle).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from mtrl.balancers.aligned_mtl import AlignedMTL, AlignedMTLUB
from mtrl.balancers.base import Balancer
from mtrl.balancers.cagrad import CAGrad
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

__all__ = ["PLAIN_BALANCERS", "build_balancer", "hparams_of", "lookup"]

#: Registry key → class of every balancer that wraps no other (the key equals the class's ``name``).
PLAIN_BALANCERS: dict[str, type[Balancer]] = {
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
}


def hparams_of(cls: type[Balancer]) -> dict[str, Any]:
    """The hyper-parameters of balancer class ``cls`` with their defaults (``num_tasks`` excluded)."""
    params = inspect.signature(cls.__init__).parameters
    return {
        key: (None if p.default is inspect.Parameter.empty else p.default)
        for key, p in params.items()
        if key not in ("self", "num_tasks") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def lookup(table: Mapping[str, type[Balancer]], name: str) -> type[Balancer]:
    """The class of key ``name`` in ``table``; ``ValueError`` naming the valid keys for an unknown one."""
    if name not in table:
        raise ValueError(f"unknown balancer {name!r}; valid balancers: {', '.join(sorted(table))}")
    return table[name]


def build_balancer(table: Mapping[str, type[Balancer]], name: str, num_tasks: int, **hparams: Any) -> Balancer:
    """Build balancer ``name`` of ``table`` for ``num_tasks`` tasks.

    Raises ``ValueError`` naming the valid choices for an unknown balancer or hyper-parameter.
    """
    cls = lookup(table, name)
    valid = hparams_of(cls)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        choices = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
        raise ValueError(
            f"unknown hyper-parameter(s) {unknown} for balancer {name!r}; valid ones (with defaults): {choices}"
        )
    return cls(num_tasks, **hparams)
