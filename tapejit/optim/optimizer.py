"""The optimizer base class: parameter groups, per-parameter state, state_dict."""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Optional, Union

import numpy as np

from ..errors import TapejitError
from ..frontend.inplace import write_value
from ..frontend.tensor import Tensor, no_grad


class Optimizer:
    """Holds ``param_groups`` (dicts with "params" and the hyperparameters) and ``state``
    (per parameter: numpy arrays and the step count). Subclasses define ``_update``."""

    def __init__(self, params: Iterable, defaults: dict) -> None:
        self.defaults = dict(defaults)
        self.state: dict = {}
        self.param_groups: list = []
        self._steps = 0
        groups = list(params)
        if not groups:
            raise TapejitError("the optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, group: dict) -> None:
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor) or not p.is_leaf:
                raise TapejitError("an optimizer updates leaf tensors (parameters); got "
                                   f"{type(p).__name__ if not isinstance(p, Tensor) else 'a recorded tensor'}")
            if not p.requires_grad:
                raise TapejitError("an optimizer's parameters must require grad")
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in known for p in params):
            raise TapejitError("a parameter appears in more than one parameter group")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    # -- the loop's three calls ---------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad.zero_()

    def step(self, closure: Optional[Callable[[], Tensor]] = None):
        """One update of every parameter that has a gradient; ``closure`` (which
        recomputes the loss and calls backward) is run first when given."""
        loss = closure() if closure is not None else None
        self._steps += 1
        with no_grad():
            for g in self.param_groups:
                lr = g["lr"](self._steps - 1) if callable(g["lr"]) else g["lr"]
                for p in g["params"]:
                    if p.grad is None:
                        continue
                    grad = np.asarray(p.grad._value, dtype=np.float64)
                    if grad.shape != p.shape:
                        raise TapejitError(f"a gradient of shape {grad.shape} for a parameter of shape {p.shape}")
                    state = self.state.setdefault(id(p), {})
                    value = np.asarray(p._value, dtype=np.float64)
                    new = self._update(value, grad, state, g, float(lr))
                    write_value(p, new if p.shape else float(new), f"{type(self).__name__}.step()")
        return loss

    def _update(self, value: np.ndarray, grad: np.ndarray, state: dict, group: dict, lr: float) -> np.ndarray:
        raise NotImplementedError

    # -- state ----------------------------------------------------------------------------------
    def _params(self) -> list:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        """{"state": {index: {name: array or number}}, "param_groups": [hyperparameters and
        parameter indices]}, as PyTorch's (parameters by position, values copied)."""
        index = {id(p): k for k, p in enumerate(self._params())}
        state = {index[i]: copy.deepcopy(s) for i, s in self.state.items() if i in index}
        groups = []
        for g in self.param_groups:
            entry = {k: v for k, v in g.items() if k != "params"}
            entry["params"] = [index[id(p)] for p in g["params"]]
            groups.append(entry)
        return {"state": state, "param_groups": groups, "steps": self._steps}

    def load_state_dict(self, state_dict: dict) -> None:
        params = self._params()
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise TapejitError("load_state_dict: the saved parameter groups do not match this optimizer's")
        for mine, saved in zip(self.param_groups, groups):
            mine.update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for k, s in state_dict["state"].items():
            p = params[int(k)]
            for name, v in s.items():
                if isinstance(v, np.ndarray) and v.shape != p.shape:
                    raise TapejitError(f"load_state_dict: state {name!r} of parameter {k} has shape {v.shape}, "
                                       f"the parameter {p.shape}")
            self.state[id(p)] = copy.deepcopy(s)
        self._steps = int(state_dict.get("steps", 0))

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({hyper})"


def check_hyper(name: str, value: Union[float, Callable], low: float = 0.0) -> None:
    if not callable(value) and not value >= low:
        raise ValueError(f"invalid {name}: {value}")
