"""Functions of tensors in ``torch.nn.functional``'s names: activations, losses, linear."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..frontend import numpy_api as F
from ..errors import ShapeError, TapejitError
from ..frontend.tensor import ArrayLike, Tensor, _state, as_tensor
from . import init

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return F.mean(loss)
    if reduction == "sum":
        return F.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, not {reduction!r}")


def linear(x: ArrayLike, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """x @ weight.T + bias, weight of shape (out_features, in_features)."""
    y = F.matmul(x, F.transpose(weight))
    return y if bias is None else y + bias


def relu(x: ArrayLike) -> Tensor:
    return F.relu(x)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> Tensor:
    return F.where(as_tensor(x) >= 0.0, x, negative_slope * as_tensor(x))


def elu(x: ArrayLike, alpha: float = 1.0) -> Tensor:
    x = as_tensor(x)
    return F.where(x > 0.0, x, alpha * F.expm1(F.minimum(x, 0.0)))


def gelu(x: ArrayLike, approximate: str = "none") -> Tensor:
    x = as_tensor(x)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + F.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    if approximate != "none":
        raise ValueError("approximate must be 'none' or 'tanh'")
    return 0.5 * x * (1.0 + F.erf(x * (1.0 / math.sqrt(2.0))))


def tanh(x: ArrayLike) -> Tensor:
    return F.tanh(x)


def sigmoid(x: ArrayLike) -> Tensor:
    return F.sigmoid(x)


def softplus(x: ArrayLike, beta: float = 1.0) -> Tensor:
    return F.softplus(x) if beta == 1.0 else F.softplus(beta * as_tensor(x)) / beta


def softmax(x: ArrayLike, dim: int = -1) -> Tensor:
    return F.softmax(x, axis=dim)


def log_softmax(x: ArrayLike, dim: int = -1) -> Tensor:
    return F.log_softmax(x, axis=dim)


def dropout(x: ArrayLike, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    x = as_tensor(x)
    if not training or p == 0.0:
        return x
    if x._tape is not None and x._tape is _state.trace:
        raise TapejitError("dropout inside tj.trace would draw its mask once and replay it on every "
                           "call; pass the mask as a parameter, or train in eager mode")
    keep = init.generator().random(x.shape) >= p
    return x * (keep / (1.0 - p))


def mse_loss(input: ArrayLike, target: ArrayLike, reduction: str = "mean") -> Tensor:
    diff = as_tensor(input) - target
    _same_shape(diff, input, "mse_loss")
    return _reduce(diff * diff, reduction)


def l1_loss(input: ArrayLike, target: ArrayLike, reduction: str = "mean") -> Tensor:
    diff = as_tensor(input) - target
    _same_shape(diff, input, "l1_loss")
    return _reduce(F.abs(diff), reduction)


def _same_shape(diff: Tensor, input, what: str) -> None:
    if diff.shape != np.shape(input._value if isinstance(input, Tensor) else input):
        raise ShapeError(f"{what}: target broadcasts the input from {np.shape(input)} to {diff.shape}; "
                         "give a target of the input's shape")


def _class_indices(target, n: int, classes: int) -> np.ndarray:
    if isinstance(target, Tensor):
        if target.requires_grad:
            raise TapejitError("cross_entropy: class indices cannot require grad")
        target = target._value
    idx = np.asarray(target)
    if idx.shape != (n,):
        raise ShapeError(f"cross_entropy: expected {n} class indices, got shape {idx.shape}")
    as_int = idx.astype(np.int64)
    if not np.array_equal(as_int, idx):
        raise TapejitError("cross_entropy: class indices must be integers (or pass class probabilities "
                           "of the input's shape)")
    if as_int.size and (as_int.min() < 0 or as_int.max() >= classes):
        raise ShapeError(f"cross_entropy: class indices must lie in [0, {classes}), got "
                         f"{as_int.min()}..{as_int.max()}")
    return as_int


def cross_entropy(input: ArrayLike, target, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross entropy of logits ``input`` (N, C) (or (C,)) against class indices (N,) or class
    probabilities (N, C), as torch.nn.functional.cross_entropy."""
    x = as_tensor(input)
    if x.ndim not in (1, 2):
        raise ShapeError(f"cross_entropy takes logits of shape (N, C) or (C,), got {x.shape}")
    single = x.ndim == 1
    if single:
        x = F.reshape(x, (1, -1))
        target = np.reshape(target._value if isinstance(target, Tensor) else target, (1,) + np.shape(target))
    n, classes = x.shape
    logp = F.log_softmax(x, axis=1)
    target_shape = np.shape(target._value if isinstance(target, Tensor) else target)
    if target_shape == (n, classes):                        # class probabilities
        loss = -F.sum(logp * target, axis=1)
    elif isinstance(target, Tensor) and target._tape is not None and target._tape is _state.trace:
        # labels that change at replay (a batch passed as params=): each row picks its
        # class by comparison, recorded; the range check is a guard, checked at replay
        if target_shape != (n,):
            raise ShapeError(f"cross_entropy: expected {n} class indices, got shape {target_shape}")
        if not bool(((target >= 0.0) & (target < classes)).all()):
            raise ShapeError(f"cross_entropy: class indices must lie in [0, {classes})")
        picked = F.equal(F.reshape(target, (n, 1)), np.arange(classes, dtype=np.float64)[None, :])
        loss = -F.sum(F.where(picked, logp, 0.0), axis=1)
    else:
        idx = _class_indices(target, n, classes)
        loss = -logp[np.arange(n), idx]
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.mean(logp, axis=1)
    if single and reduction == "none":
        return F.reshape(loss, ())
    return _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike, reduction: str = "mean") -> Tensor:
    """-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))), computed stably as softplus(x) - t x."""
    x = as_tensor(input)
    loss = F.softplus(x) - x * target
    _same_shape(loss, input, "binary_cross_entropy_with_logits")
    return _reduce(loss, reduction)


def one_hot(labels, num_classes: int = -1) -> np.ndarray:
    """Class indices as rows of a float identity (a constant: labels carry no gradient)."""
    idx = np.asarray(labels._value if isinstance(labels, Tensor) else labels).astype(np.int64)
    k = int(idx.max()) + 1 if num_classes < 0 else num_classes
    return np.eye(k)[idx]
