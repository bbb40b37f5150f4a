"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class MGDA(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('MGDA is not implemented yet')


class MGDAUB(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('MGDAUB is not implemented yet')

