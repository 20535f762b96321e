"""Adam and AdamW (Kingma and Ba; Loshchilov and Hutter), with PyTorch's bias corrections."""
from __future__ import annotations

import math
from typing import Iterable, Tuple

import numpy as np

from .optimizer import Optimizer, check_hyper


class Adam(Optimizer):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
    ``weight_decay`` adds weight_decay * p to the gradient (L2); ``amsgrad`` uses the running
    maximum of v."""

    decoupled = False

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        check_hyper("learning rate", lr)
        check_hyper("eps", eps)
        check_hyper("weight_decay", weight_decay)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas: {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _update(self, value: np.ndarray, grad: np.ndarray, state: dict, group: dict, lr: float) -> np.ndarray:
        g = -grad if group["maximize"] else grad
        wd = group["weight_decay"]
        if wd and self.decoupled:
            value = value * (1.0 - lr * wd)
        elif wd:
            g = g + wd * value
        b1, b2 = group["betas"]
        t = state.get("step", 0) + 1
        m = state.get("exp_avg")
        v = state.get("exp_avg_sq")
        m = (1.0 - b1) * g if m is None else b1 * m + (1.0 - b1) * g
        v = (1.0 - b2) * g * g if v is None else b2 * v + (1.0 - b2) * g * g
        state.update(step=t, exp_avg=m, exp_avg_sq=v)
        if group["amsgrad"]:
            v = np.maximum(state.get("max_exp_avg_sq", v), v)
            state["max_exp_avg_sq"] = v
        denom = np.sqrt(v) / math.sqrt(1.0 - b2 ** t) + group["eps"]
        return value - (lr / (1.0 - b1 ** t)) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step
    (default weight_decay 0.01, as PyTorch's)."""

    decoupled = True

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
