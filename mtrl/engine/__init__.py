"""The gradient engine: every balancer, of every kind, driven by one call that writes ``.grad``.

>>> engine = GradientEngine(make_balancer("mgda", T))
>>> capture = LinearCapture(net.trunk, T)
>>> with capture.record():
...     losses_T = per_task_losses(net(x_TNI))
>>> report = engine.backward(losses_T, net.shared_parameters(), net.task_parameters(), capture=capture)
>>> optimizer.step()
"""

from mtrl.engine.capture import LinearCapture
from mtrl.engine.closure import LossClosure, make_loss_fn
from mtrl.engine.engine import STRATEGIES, GradientEngine, Strategy
from mtrl.engine.report import BalanceReport
from mtrl.engine.rules import (
    StrategyChoice,
    StrategyNames,
    choose_strategy,
    core_balancer,
    needs_loss_fn,
    weighed_losses,
)

__all__ = [
    "STRATEGIES",
    "BalanceReport",
    "GradientEngine",
    "LinearCapture",
    "LossClosure",
    "Strategy",
    "StrategyChoice",
    "StrategyNames",
    "choose_strategy",
    "core_balancer",
    "make_loss_fn",
    "needs_loss_fn",
    "weighed_losses",
]
