"""``tj.trace_step``: a whole training step recorded once, replayed on every batch.

    step = tj.trace_step(lambda X, y: F.cross_entropy(model(X), y), model, opt)
    for Xb, yb in batches:
        loss = step(Xb, yb)          # forward, gradient and the optimizer's update

The loss function is traced with the model's parameters as the Function's inputs and the
batch as its parameters (``params=``), so a new batch of the same shapes replays the
tape with no Python per operation; a batch of new shapes is traced once more. The
parameters keep their identity: while the trace runs each one stands for its traced
input (tapejit.frontend.inplace.become), and gets its own fields back afterwards.
"""
from __future__ import annotations

from typing import Callable, Iterable, Union

import numpy as np

from ..errors import TapejitError
from ..frontend.inplace import become
from ..frontend.tensor import Tensor
from .optimizer import Optimizer

_FIELDS = ("_value", "_tape", "_base", "_strides", "_shape", "_bool", "_rg")


class TracedStep:
    """A training step: ``step(*batch)`` sets each parameter's ``.grad`` to the gradient of
    ``loss_fn(*batch)``, runs ``optimizer.step()`` and returns the loss (a float)."""

    def __init__(self, loss_fn: Callable, parameters: list, optimizer: Optimizer) -> None:
        self.loss_fn = loss_fn
        self.parameters = parameters
        self.optimizer = optimizer
        self.functions: dict = {}        # batch shapes -> Function

    def _record(self, batch: list):
        from ..frontend.function import trace
        params = self.parameters

        def traced(*tensors):
            saved = [(tuple(getattr(p, f) for f in _FIELDS), getattr(p, "_version", 0)) for p in params]
            try:
                for p, t in zip(params, tensors[: len(params)]):
                    become(p, t)
                loss = self.loss_fn(*tensors[len(params):])
            finally:
                for p, (fields, version) in zip(params, saved):
                    for name, value in zip(_FIELDS, fields):
                        setattr(p, name, value)
                    p._version = version
            return loss
        return trace(traced, *[np.asarray(p._value, dtype=np.float64) for p in params], params=batch)

    def function(self, *batch):
        """The Function replayed for a batch of these shapes (traced on first use)."""
        arrays = [np.asarray(b._value if isinstance(b, Tensor) else b, dtype=np.float64) for b in batch]
        key = tuple(a.shape for a in arrays)
        if key not in self.functions:
            self.functions[key] = self._record(arrays)
        return self.functions[key], arrays

    def __call__(self, *batch) -> float:
        f, arrays = self.function(*batch)
        values = [np.asarray(p._value, dtype=np.float64) for p in self.parameters]
        loss, grads = f.value_and_grad(*values, params=arrays)
        if len(self.parameters) == 1:
            grads = (grads,)
        for p, g in zip(self.parameters, grads):
            p.grad = Tensor(g) if np.ndim(g) else Tensor(float(g))
        self.optimizer.step()
        return float(loss)


def trace_step(loss_fn: Callable, model: Union["Module", Iterable[Tensor]], optimizer: Optimizer) -> TracedStep:
    """Record ``loss_fn(*batch)`` (which reads ``model``'s parameters) once per batch shape;
    each call of the result is one training step (see :class:`TracedStep`)."""
    from ..nn.modules import Module
    parameters = list(model.parameters()) if isinstance(model, Module) else list(model)
    if not parameters:
        raise TapejitError("trace_step: the model has no parameters")
    if any(not (isinstance(p, Tensor) and p.is_leaf and p.requires_grad) for p in parameters):
        raise TapejitError("trace_step: the parameters must be leaf tensors that require grad")
    return TracedStep(loss_fn, parameters, optimizer)
