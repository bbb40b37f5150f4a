"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class GradDrop(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('GradDrop is not implemented yet')

