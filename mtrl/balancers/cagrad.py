"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class CAGrad(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('CAGrad is not implemented yet')

