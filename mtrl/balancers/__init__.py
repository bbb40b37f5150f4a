"""Multi-task gradient balancers: one file per method, one registry, one interface.

>>> from mtrl.balancers import make_balancer
>>> balancer = make_balancer("aligned_mtl", num_tasks=3)
"""

from mtrl.balancers.base import Balancer, GradientBalancer, GramianWeighting, LossWeighting
from mtrl.balancers.registry import BALANCERS, balancer_hparams, make_balancer

__all__ = [
    "BALANCERS",
    "Balancer",
    "GradientBalancer",
    "GramianWeighting",
    "LossWeighting",
    "balancer_hparams",
    "make_balancer",
]
