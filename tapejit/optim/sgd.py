"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .optimizer import Optimizer, check_hyper


class SGD(Optimizer):
    """PyTorch's SGD: g = grad + weight_decay * p; with momentum, b = momentum * b +
    (1 - dampening) * g (b = g at the first step) and g = g + momentum * b (nesterov) or
    g = b; then p -= lr * g (+= when maximize)."""

    def __init__(self, params: Iterable, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        check_hyper("learning rate", lr)
        check_hyper("momentum", momentum)
        check_hyper("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _update(self, value: np.ndarray, grad: np.ndarray, state: dict, group: dict, lr: float) -> np.ndarray:
        g = -grad if group["maximize"] else grad
        if group["weight_decay"]:
            g = g + group["weight_decay"] * value
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = np.array(g, dtype=np.float64)
            else:
                buf = momentum * buf + (1.0 - group["dampening"]) * g
            state["momentum_buffer"] = buf
            g = g + momentum * buf if group["nesterov"] else buf
        return value - lr * g
