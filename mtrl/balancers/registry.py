"""The one registry of balancers: an explicit dict from registry key to class.

The balancers that wrap no other are listed in ``mtrl/balancers/_plain.py`` (``PLAIN_BALANCERS``); this
registry adds the two wrappers of one of them: DGR and ``alpha_weights`` (SAC's α-derived task weights).
"""

from __future__ import annotations

from typing import Any

from mtrl.balancers._plain import PLAIN_BALANCERS, build_balancer, hparams_of, lookup
from mtrl.balancers.alpha_weights import AlphaWeights
from mtrl.balancers.base import Balancer
from mtrl.balancers.dgr import DGR

__all__ = ["BALANCERS", "balancer_hparams", "make_balancer"]

BALANCERS: dict[str, type[Balancer]] = {**PLAIN_BALANCERS, "dgr": DGR, "alpha_weights": AlphaWeights}


def balancer_hparams(name: str) -> dict[str, Any]:
    """The hyper-parameters of balancer ``name`` with their defaults (``num_tasks`` excluded)."""
    return hparams_of(lookup(BALANCERS, name))


def make_balancer(name: str, num_tasks: int, **hparams: Any) -> Balancer:
    """Build balancer ``name`` for ``num_tasks`` tasks.

    Raises ``ValueError`` naming the valid choices for an unknown balancer or hyper-parameter.
    """
    return build_balancer(BALANCERS, name, num_tasks, **hparams)
