"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class NashMTL(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('NashMTL is not implemented yet')

