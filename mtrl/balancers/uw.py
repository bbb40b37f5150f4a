"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class UW(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('UW is not implemented yet')

