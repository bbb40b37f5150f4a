"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class UPGrad(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('UPGrad is not implemented yet')

