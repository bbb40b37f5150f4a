"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class PCGrad(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('PCGrad is not implemented yet')

