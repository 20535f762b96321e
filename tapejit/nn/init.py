"""Parameter initializations with PyTorch's defaults (``torch.nn.init``), in place.

Random numbers come from ``tj.manual_seed``'s generator unless one is passed."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..frontend.inplace import write_value
from ..frontend.tensor import Tensor, no_grad

_rng = [np.random.default_rng()]


def manual_seed(seed: int) -> None:
    """Seed the generator tapejit's initializations and dropout draw from."""
    _rng[0] = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _rng[0]


def _fans(t: Tensor) -> tuple:
    if t.ndim < 2:
        raise ValueError("fan in and fan out need a tensor with at least 2 dimensions")
    receptive = int(np.prod(t.shape[2:])) if t.ndim > 2 else 1
    return t.shape[1] * receptive, t.shape[0] * receptive


def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    if nonlinearity in ("linear", "sigmoid", "identity"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


def _fill(t: Tensor, values: np.ndarray) -> Tensor:
    with no_grad():
        write_value(t, values.reshape(t.shape) if t.shape else float(values), "initialization")
    return t


def uniform_(t: Tensor, a: float = 0.0, b: float = 1.0, generator: Optional[np.random.Generator] = None) -> Tensor:
    return _fill(t, (generator or _rng[0]).uniform(a, b, t.shape))


def normal_(t: Tensor, mean: float = 0.0, std: float = 1.0, generator: Optional[np.random.Generator] = None) -> Tensor:
    return _fill(t, (generator or _rng[0]).normal(mean, std, t.shape))


def constant_(t: Tensor, value: float) -> Tensor:
    return _fill(t, np.full(t.shape, float(value)))


def zeros_(t: Tensor) -> Tensor:
    return constant_(t, 0.0)


def ones_(t: Tensor) -> Tensor:
    return constant_(t, 1.0)


def kaiming_uniform_(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: Optional[np.random.Generator] = None) -> Tensor:
    fan_in, fan_out = _fans(t)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / (fan_in if mode == "fan_in" else fan_out))
    return uniform_(t, -bound, bound, generator)


def kaiming_normal_(t: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: Optional[np.random.Generator] = None) -> Tensor:
    fan_in, fan_out = _fans(t)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    return normal_(t, 0.0, std, generator)


def xavier_uniform_(t: Tensor, gain: float = 1.0, generator: Optional[np.random.Generator] = None) -> Tensor:
    fan_in, fan_out = _fans(t)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, generator)


def xavier_normal_(t: Tensor, gain: float = 1.0, generator: Optional[np.random.Generator] = None) -> Tensor:
    fan_in, fan_out = _fans(t)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)
