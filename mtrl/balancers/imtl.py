"""PLACEHOLDER: being implemented (replace this whole file)."""

from mtrl.balancers.base import Balancer


class IMTL(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('IMTL is not implemented yet')


class IMTLG(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('IMTLG is not implemented yet')


class IMTLL(Balancer):
    def __init__(self, num_tasks: int) -> None:
        raise NotImplementedError('IMTLL is not implemented yet')

