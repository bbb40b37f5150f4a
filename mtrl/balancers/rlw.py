"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class RLW(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('RLW is not implemented yet')

