"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class FAMO(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('FAMO is not implemented yet')

