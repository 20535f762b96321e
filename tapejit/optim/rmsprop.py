"""RMSprop (Hinton's lecture notes), with PyTorch's options."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .optimizer import Optimizer, check_hyper


class RMSprop(Optimizer):
    """v = alpha v + (1-alpha) g^2; p -= lr g / (sqrt(v) + eps) (centered: v - mean(g)^2;
    with momentum, a buffer b = momentum b + that step)."""

    def __init__(self, params: Iterable, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False) -> None:
        check_hyper("learning rate", lr)
        check_hyper("alpha", alpha)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _update(self, value: np.ndarray, grad: np.ndarray, state: dict, group: dict, lr: float) -> np.ndarray:
        g = grad + group["weight_decay"] * value if group["weight_decay"] else grad
        alpha = group["alpha"]
        v = alpha * state.get("square_avg", np.zeros_like(value)) + (1.0 - alpha) * g * g
        state["square_avg"] = v
        if group["centered"]:
            mean = alpha * state.get("grad_avg", np.zeros_like(value)) + (1.0 - alpha) * g
            state["grad_avg"] = mean
            v = v - mean * mean
        step = g / (np.sqrt(v) + group["eps"])
        if group["momentum"]:
            buf = group["momentum"] * state.get("momentum_buffer", np.zeros_like(value)) + step
            state["momentum_buffer"] = buf
            step = buf
        return value - lr * step
