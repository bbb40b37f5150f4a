"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class GradNorm(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('GradNorm is not implemented yet')

