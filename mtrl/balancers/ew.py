"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class EW(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('EW is not implemented yet')

