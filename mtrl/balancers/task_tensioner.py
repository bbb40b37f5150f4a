"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class TaskTensioner(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('TaskTensioner is not implemented yet')

