"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class DWA(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('DWA is not implemented yet')

