"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class AlignedMTL(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('AlignedMTL is not implemented yet')


class AlignedMTLUB(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('AlignedMTLUB is not implemented yet')

