"""Modules in PyTorch's names: a Module holds parameters (tensors that require grad) and
submodules as attributes, and computes in ``forward``."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from ..errors import ShapeError, TapejitError
from ..frontend.inplace import replace_value
from ..frontend.tensor import ArrayLike, Tensor, no_grad, tensor
from . import functional as F
from . import init


def Parameter(data: ArrayLike, requires_grad: bool = True) -> Tensor:
    """A tensor that requires grad (tapejit's parameters are plain leaf tensors)."""
    return tensor(data, requires_grad=requires_grad)


class Module:
    """Base class: assign parameters (leaf tensors that require grad) and submodules as
    attributes in ``__init__``, compute in ``forward``, call the module to run it."""

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- attributes ------------------------------------------------------------------------
    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise TapejitError(f"{type(self).__name__}.__init__ must call super().__init__() before "
                               "assigning attributes")
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        if isinstance(value, Module):
            self._modules[name] = value
        elif isinstance(value, Tensor) and value.is_leaf and value.requires_grad:
            self._parameters[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name: str):
        for store in ("_parameters", "_buffers", "_modules"):
            d = self.__dict__.get(store)
            if d is not None and name in d:
                return d[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, value: Optional[ArrayLike]) -> None:
        """A tensor that is state but not a parameter (saved in state_dict, not trained)."""
        self._buffers[name] = None if value is None else (value if isinstance(value, Tensor) else tensor(value))

    def register_parameter(self, name: str, value: Optional[Tensor]) -> None:
        if value is not None and not (isinstance(value, Tensor) and value.is_leaf):
            raise TapejitError(f"parameter {name!r} must be a leaf tensor")
        self._parameters[name] = value

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        self._modules[name] = module

    # -- calling -----------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- traversal ---------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple]:
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def children(self) -> Iterator["Module"]:
        return (m for m in self._modules.values() if m is not None)

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple]:
        seen = set()
        for mod_prefix, module in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple]:
        for mod_prefix, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), b

    def buffers(self) -> Iterator[Tensor]:
        return (b for _, b in self.named_buffers())

    # -- modes and state ---------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.zero_()

    def apply(self, fn: Callable[["Module"], None]) -> "Module":
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers by dotted name, as numpy copies."""
        out = OrderedDict()
        for name, p in self.named_parameters():
            out[name] = np.array(p._value)
        for name, b in self.named_buffers():
            out[name] = np.array(b._value)
        return out

    def load_state_dict(self, state: dict, strict: bool = True) -> tuple:
        """Copy values into the parameters and buffers in place; returns (missing, unexpected)."""
        own = OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise TapejitError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, t in own.items():
            if name in state:
                value = np.asarray(state[name]._value if isinstance(state[name], Tensor) else state[name],
                                   dtype=np.float64)
                if value.shape != t.shape:
                    raise ShapeError(f"load_state_dict: {name} has shape {t.shape}, the state {value.shape}")
                with no_grad():
                    replace_value(t, value)
        return missing, unexpected

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # -- printing ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        return head + ("\n" + "\n".join(lines) + "\n)" if lines else ")")


class Sequential(Module):
    """Modules applied in order."""

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for k, m in enumerate(modules):
                self.add_module(str(k), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, k):
        mods = list(self._modules.values())
        return Sequential(*mods[k]) if isinstance(k, slice) else mods[k]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of submodules (registered, so their parameters are the list's)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, k):
        return list(self._modules.values())[k]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Linear(Module):
    """y = x @ weight.T + bias, initialized as PyTorch's Linear (uniform in +-1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(np.empty((self.out_features, self.in_features)))
        self.bias = Parameter(np.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _Elementwise(Module):
    """An activation with no parameters: forward is one function of the input."""
    fn: Callable = staticmethod(lambda x: x)

    def forward(self, x):
        return type(self).fn(x)


class Identity(_Elementwise):
    fn = staticmethod(lambda x: x)


class ReLU(_Elementwise):
    fn = staticmethod(F.relu)


class Tanh(_Elementwise):
    fn = staticmethod(F.tanh)


class Sigmoid(_Elementwise):
    fn = staticmethod(F.sigmoid)


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class ELU(Module):
    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)


class GELU(Module):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)


class Softplus(Module):
    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return F.softplus(x, self.beta)


class _AlongDim(Module):
    """A normalization along one axis: forward is fn(x, dim)."""
    fn: Callable = staticmethod(lambda x, dim: x)

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return type(self).fn(x, self.dim)


class Softmax(_AlongDim):
    fn = staticmethod(F.softmax)


class LogSoftmax(_AlongDim):
    fn = staticmethod(F.log_softmax)


class Flatten(Module):
    """Flatten all dimensions from ``start_dim`` on (the batch axis stays)."""

    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x):
        shape = x.shape[: self.start_dim] + (-1,)
        return x.reshape(shape)


class Dropout(Module):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction


class MSELoss(_Loss):
    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return F.l1_loss(input, target, self.reduction)


class CrossEntropyLoss(_Loss):
    def __init__(self, reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.reduction, self.label_smoothing)


class BCEWithLogitsLoss(_Loss):
    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.reduction)
