"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class SGSU(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('SGSU is not implemented yet')

