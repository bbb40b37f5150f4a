"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class DGR(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('DGR is not implemented yet')

