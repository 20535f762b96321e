"""Record once, replay many: ``tj.trace`` and the ``Function`` it returns.

A trace runs the user's Python function once on example values, recording every
operation on traced values onto a fresh tape. The finished, validated tape is then
replayed by the Numba sweeps at new points, one at a time or in batches, with no Python
per operation and nothing compiled per function.

Python control flow on traced values records guards; a replay where a guard flips
raises ``BranchChangedError`` (or masks or retraces those points, for batches).
"""
from __future__ import annotations

import functools
import gc
import threading
import time
from collections import Counter
from contextlib import contextmanager
from types import MethodType
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..cpu import point as _point
from ..cpu import _sweeps as sweeps
from ..cpu import batch as batch_engine
from ..cpu import tier
from ..cpu import tiling
from ..errors import BranchChangedError, InvalidTapeError, ShapeError, TapeFormatError, TapejitError, TraceError
from ..ops.table import OP, OPS
from ..ops.primitives import PRIMITIVE_OPS
from ..tape import io as tape_io
from ..tape.tape import Tape, TapeArrays, validate
from .tensor import (Tensor, _as_float_array, _state, _cstrides, _gather, _on_tape, _positions,
                     _refresh_active, _size, _state, _uniform_step)

BRANCH_MODES = ("raise", "mask", "retrace")
# Functions rebuilt from pickles in this process: tells how often a tape was shipped here
unpickled_count = 0


_NO_VALUES = np.zeros(0)   # the parameters of a Function that has none
_ONE_SEED = np.ones(1)     # a scalar output's adjoint, for a gradient


_UNSET = object()


def _fresh_workspaces_on_error(method):
    """A sweep that raised (a user primitive's kernel, a rule not given) left its
    workspaces half consumed: adjoints that the next call would add to. Drop them, so that
    the next call starts from zeros, and name the tape's primitives in the exception. Only
    tapes with primitives get this (their sweeps are the only ones that raise), as instance
    attributes: the wrapper's frame cost a 3.5 us f.grad of a small tape 0.3 us."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BaseException as exc:
            self._local.ws = self._local.tangent_ws = None
            from ..ops.primitives import name_the_primitives
            name_the_primitives(exc, self.arrays)
            raise
    return guarded


def _one_layout(a: np.ndarray) -> np.ndarray:
    """a as a writable, C-contiguous vector: Numba compiles a function once per array
    layout, so every call into _point passes this one."""
    if a.ndim != 1 or not (a.flags.c_contiguous and a.flags.writeable):
        return a.reshape(-1).copy()
    return a


class Function:
    """A finished tape with its inputs, parameters, output and guards.

    ``f(x)`` gives the value at a new point, ``f.grad(x)`` the gradient,
    ``f.batch(X)`` / ``f.batch_grad(X)`` the same at every row of X.
    """

    #: the per-function kernel of ``compile()`` (tapejit.cpu.compiled); None: the interpreter
    _kernel = None

    def __init__(self, arrays: TapeArrays, inputs: Sequence[tuple], params: Sequence[tuple],
                 param_values: Sequence[np.ndarray], output: tuple, guards: Sequence[int],
                 fn: Optional[Callable] = None, _validate: bool = True):
        if _validate:
            validate(arrays)
        self.arrays = arrays
        self.inputs = [(int(b), tuple(s)) for b, s in inputs]
        self.params = [(int(b), tuple(s)) for b, s in params]
        self.param_values = [np.asarray(p, np.float64) for p in param_values]
        self.output = (int(output[0]), tuple(output[1]))
        self.guards = np.asarray(guards, np.int64)
        self.fn = fn
        self._check_layout()
        self._setup()
        self._guard_if_primitives()

    #: the methods whose sweeps may leave adjoints behind when a user kernel raises
    _SWEEPING = ("value_and_grad", "jvp", "hvp", "vjp", "jacobian", "hessian")

    def _guard_if_primitives(self) -> None:
        if np.isin(self.arrays.ops, PRIMITIVE_OPS).any():
            for name in self._SWEEPING:
                setattr(self, name, MethodType(_fresh_workspaces_on_error(getattr(Function, name)), self))

    def _check_layout(self) -> None:
        n = self.arrays.n_slots
        if len(self.inputs) == 0:
            raise TapejitError("a Function needs at least one input")
        for base, shape in self.inputs + self.params + [self.output]:
            if base < 0 or base + _size(shape) > n:
                raise TapejitError(f"slot range [{base}, {base + _size(shape)}) outside the tape's {n} slots")
        if self.guards.size and (self.guards.min() < 0 or self.guards.max() >= n):
            raise TapejitError("guard slot outside the tape")
        if len(self.param_values) != len(self.params):
            raise TapejitError("one value is needed per parameter")

    def _setup(self) -> None:
        def positions(ranges):
            parts = [np.arange(b, b + _size(s), dtype=np.int64) for b, s in ranges]
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)
        self.in_pos = positions(self.inputs)
        self.param_pos = positions(self.params)
        self.out_pos = positions([self.output])
        # inputs are usually one run of slots: copy them as a slice, not a fancy index
        self._in = self._as_slice(self.in_pos)
        self._params = self._as_slice(self.param_pos)
        self._local = threading.local()
        self._variants: list[Function] = []
        self._segments = None
        self._packed = None
        self._single_plain = None
        self._direct = _UNSET
        self.locations = getattr(self, "locations", {})
        self._tier = tier.Tier()

    @staticmethod
    def _as_slice(pos: np.ndarray):
        if pos.size and pos[-1] - pos[0] == pos.size - 1 and np.all(np.diff(pos) == 1):
            return slice(int(pos[0]), int(pos[-1]) + 1)
        return pos

    @property
    def segments(self):
        """The single-point execution plan: plain runs and tiled elementwise stretches."""
        if self._segments is None:
            keep = np.concatenate([self.out_pos, self.guards])
            self._segments = tiling.plan(self.arrays, keep)
        return self._segments

    # -- sizes ---------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return int(self.in_pos.size)

    @property
    def n_outputs(self) -> int:
        return int(self.out_pos.size)

    @property
    def n_slots(self) -> int:
        return self.arrays.n_slots

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def input_shapes(self) -> list:
        return [s for _, s in self.inputs]

    @property
    def output_shape(self) -> tuple:
        return self.output[1]

    def summary(self, file=None) -> str:
        """An opcode histogram: instructions and slots written per opcode."""
        counts = Counter()
        elements = Counter()
        for op, n in zip(self.arrays.ops, self.arrays.ins[1]):
            counts[OPS[op].name] += 1
            elements[OPS[op].name] += int(n)
        lines = [f"Function: {self.n_inputs} inputs, {self.n_outputs} outputs, {len(self)} instructions, "
                 f"{self.n_slots} slots, {len(self.guards)} guards, {self.arrays.nbytes} bytes of tape",
                 f"{'opcode':<16}{'instructions':>14}{'slots':>14}"]
        for name, count in counts.most_common():
            lines.append(f"{name:<16}{count:>14}{elements[name]:>14}")
        text = "\n".join(lines)
        print(text, file=file)
        return text

    def __repr__(self) -> str:
        return (f"<tapejit.Function {self.n_inputs} -> {self.output_shape or 'scalar'}, "
                f"{len(self)} instructions>")

    # -- saving and pickling: arrays and layout only ------------------------------------
    def save(self, path) -> None:
        """Write this Function to a versioned, checksummed .npz file (``tj.load`` reads it)."""
        tape_io.save(self, path)

    _STATE = ("arrays", "inputs", "params", "param_values", "output", "guards", "in_pos", "param_pos",
              "out_pos", "_in", "_params", "locations")

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k in self._STATE}
        state["compiled"] = self._kernel is not None
        return state

    def __setstate__(self, state):
        global unpickled_count
        unpickled_count += 1
        self.__dict__.update(state)
        self.fn = None
        validate(self.arrays)
        self._check_layout()
        self._local = threading.local()
        self._variants = []
        self._segments = None
        self._packed = None
        self._single_plain = None
        self._direct = _UNSET
        self._tier = tier.Tier()
        self._guard_if_primitives()
        if self.__dict__.pop("compiled", False):
            # Numba's cache (keyed by the kernel's source) makes this an import, not a compile
            from ..cpu.compiled import Kernel
            self._kernel = Kernel(self)

    # -- argument handling ---------------------------------------------------------------
    def _flat_inputs(self, xs: tuple) -> np.ndarray:
        if len(xs) != len(self.inputs):
            raise TapejitError(f"this Function takes {len(self.inputs)} input(s), got {len(xs)}")
        parts = []
        for k, (x, (_, shape)) in enumerate(zip(xs, self.inputs)):
            arr = _as_float_array(x)
            if arr.shape != shape:
                raise ShapeError(f"input {k} has shape {arr.shape}, the trace was recorded with {shape}")
            parts.append(arr.reshape(-1))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _flat_params(self, params) -> np.ndarray:
        if params is None:
            values = self.param_values
        else:
            if len(params) != len(self.params):
                raise TapejitError(f"this Function takes {len(self.params)} parameter(s), got {len(params)}")
            values = []
            for k, (p, (_, shape)) in enumerate(zip(params, self.params)):
                arr = _as_float_array(p)
                if arr.shape != shape:
                    raise ShapeError(f"parameter {k} has shape {arr.shape}, the trace was recorded with {shape}")
                values.append(arr)
        parts = [np.ravel(v) for v in values]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _batch_inputs(self, Xs: tuple) -> np.ndarray:
        if len(Xs) != len(self.inputs):
            raise TapejitError(f"this Function takes {len(self.inputs)} input(s), got {len(Xs)}")
        parts = []
        B = None
        for k, (X, (_, shape)) in enumerate(zip(Xs, self.inputs)):
            arr = _as_float_array(X)
            if arr.shape[1:] != shape or arr.ndim != len(shape) + 1:
                raise ShapeError(f"batch input {k} has shape {arr.shape}; expected (B, *{shape})")
            if B is not None and arr.shape[0] != B:
                raise ShapeError("batch inputs disagree on the batch size")
            B = arr.shape[0]
            parts.append(arr.reshape(B, _size(shape)))
        X = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        return np.ascontiguousarray(X)

    def _split(self, flat: np.ndarray, batch: Optional[int] = None):
        """Per-input arrays from a flat vector (or (B, n) matrix)."""
        if len(self.inputs) == 1:
            shape = self.inputs[0][1]
            return flat.reshape(shape if batch is None else (batch,) + shape)
        out = []
        k = 0
        for _, shape in self.inputs:
            n = _size(shape)
            part = flat[..., k:k + n]
            out.append(part.reshape(shape if batch is None else (batch,) + shape))
            k += n
        return out[0] if len(out) == 1 else tuple(out)

    # -- single point ----------------------------------------------------------------------
    def _workspace(self):
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = (np.zeros(self.n_slots), np.zeros(self.n_slots))
            self._local.ws = ws
        return ws

    def _set_inputs(self, v, xs: tuple, params) -> None:
        flat = self._flat_inputs(xs)
        if isinstance(self._in, slice) and flat.size >= tiling.MIN_LENGTH:
            tiling.copy(flat, v[self._in])
        else:
            v[self._in] = flat
        self._set_params(v, params)

    def _set_params(self, v, params) -> None:
        if self.param_pos.size:
            v[self._params] = self._flat_params(params)

    def _one_call(self) -> bool:
        """Whether a point's sweeps run as one call into compiled code (_point): the tape
        is one plain segment (no tiled stretch) and no debug replay is asked."""
        if self._single_plain is None:
            segments = self.segments
            self._single_plain = len(segments) == 1 and segments[0][0] == "plain"
        return self._single_plain and not _state.debug

    def _point_inputs(self, xs: tuple, params) -> tuple:
        """The flat inputs and parameters, as _point's calls take them."""
        if len(xs) == 1 and len(self.inputs) == 1 and type(xs[0]) is np.ndarray:
            x = xs[0]                                    # the common case, without copies
            if x.dtype != np.float64 or x.shape != self.inputs[0][1]:
                x = self._flat_inputs(xs)
        else:
            x = self._flat_inputs(xs)
        p = self._flat_params(params) if self.param_pos.size else _NO_VALUES
        return _one_layout(x), _one_layout(p)

    def _point_reverse(self, xs: tuple, params, seed: np.ndarray):
        """Values and seed^T J at one point, in one compiled call: (value workspace,
        the inputs' adjoints)."""
        x, p = self._point_inputs(xs, params)
        v, g = self._workspace()
        grad = np.empty(self.n_inputs)
        if not _point.value_and_grad(*self.arrays.sweep_args, v, g, x, self.in_pos, p, self.param_pos, self.guards,
                                     self.out_pos, seed, grad):
            raise self._branch_changed(v)
        return v, grad

    def _branch_changed(self, v) -> BranchChangedError:
        flipped = int(np.sum(v[self.guards] != 1.0))
        return BranchChangedError(
            f"{flipped} Python branch(es) taken while tracing go the other way at this point; "
            "retrace there (tj.grad does this for you) or use tj.where to record both branches")

    def _forward(self, xs: tuple, params) -> np.ndarray:
        v, g = self._workspace()
        if self._one_call():
            x, p = self._point_inputs(xs, params)
            if not _point.value(*self.arrays.sweep_args, v, x, self.in_pos, p, self.param_pos, self.guards):
                raise self._branch_changed(v)
            return v
        self._set_inputs(v, xs, params)
        if _state.debug:
            from . import debug
            sweeps.forward_vector(*self.arrays.sweep_args, v, 0, len(self.arrays))   # every value kept
            debug.check_replay(self, v)
        else:
            tiling.forward(self.segments, self.arrays, v)
        self._check_guards(v)
        return v

    def _check_guards(self, v) -> None:
        if self.guards.size and not np.all(v[self.guards] == 1.0):
            raise self._branch_changed(v)

    def _value(self, v):
        if not self.output_shape:
            return float(v[self.out_pos[0]])
        return v[self.out_pos].reshape(self.output_shape).copy()

    def __call__(self, *xs, params=None):
        """The value at a new point (a float, or an array for vector outputs)."""
        return self._value(self._forward(xs, params))

    def _scalar_output(self, what: str) -> None:
        if self.n_outputs != 1:
            raise TapejitError(f"{what} needs a scalar output; this Function returns shape "
                               f"{self.output_shape}: use vjp or jacobian")

    def _reverse(self, seed) -> np.ndarray:
        v, g = self._workspace()
        if type(seed) is float and self.out_pos.size == 1:
            g[self.out_pos[0]] += seed           # an integer index: no fancy-indexing machinery
        else:
            g[self.out_pos] += seed
        tiling.reverse(self.segments, self.arrays, v, g)
        return self._take_gradient(g)

    def _take_gradient(self, g, taken=None) -> np.ndarray:
        """The inputs' adjoints, leaving the workspace's zero for the next call; ``taken``:
        the gradient already added into its own array (the input rows of g stayed zero)."""
        if taken is not None:
            grad = taken
        elif isinstance(self._in, slice) and self.n_inputs >= tiling.MIN_LENGTH:
            grad = np.empty(self.n_inputs)
            tiling.move(g[self._in], grad)         # one pass over a long gradient
        else:
            grad = g[self._in].copy()
            g[self._in] = 0.0
        if self.param_pos.size:
            g[self._params] = 0.0
        return grad

    def value_and_grad(self, *xs, params=None):
        """(value, gradient) at a new point; the gradient has the inputs' shapes."""
        self._scalar_output("value_and_grad")
        if self._one_call():
            v, grad = self._point_reverse(xs, params, _ONE_SEED)
            return float(v[self.out_pos[0]]), self._split(grad)
        if not self._fusable_tail():
            v = self._forward(xs, params)
            value = self._value(v)
            return value, self._split(self._reverse(1.0))
        # the tape ends with a long stretch (a vectorized objective): its forward runs
        # inside its reverse, tile by tile (no guards to check before the reverse)
        v, g = self._workspace()
        x_at, touch = self._direct_loads()
        if x_at is None:
            self._set_inputs(v, xs, params)
            direct = None
        else:
            # the stretch reads the point where it is and adds the gradient into the result
            self._set_params(v, params)
            direct = (_one_layout(self._flat_inputs(xs)), np.empty(self.n_inputs), x_at, touch)
        g[self.out_pos] += 1.0
        tiling.forward_reverse(self.segments, self.arrays, v, g, direct=direct)
        return self._value(v), self._split(self._take_gradient(g, None if direct is None else direct[1]))

    def _direct_loads(self):
        """(x_at, touch): tiling.direct_loads and tiling.first_touch for this tape, found
        once. x_at is None when the point goes into the workspace first (the inputs are
        not one run of slots, or more than the final stretch reads them)."""
        if self._direct is _UNSET:
            x_at = tiling.direct_loads(self.segments, self.arrays, self._in) if isinstance(self._in, slice) else None
            self._direct = x_at, None if x_at is None else tiling.first_touch(self.segments[-1][1], x_at)
        return self._direct

    def grad(self, *xs, params=None):
        """The gradient at a new point (a tuple of arrays for several inputs)."""
        return self.value_and_grad(*xs, params=params)[1]

    def _tangent_workspace(self):
        ws = getattr(self._local, "tangent_ws", None)
        if ws is None:
            ws = self._local.tangent_ws = (np.zeros(self.n_slots), np.zeros(self.n_slots))
        return ws

    def _flat_tangent(self, vs) -> np.ndarray:
        return self._flat_inputs(vs if isinstance(vs, tuple) else (vs,))

    def _fusable_tail(self) -> bool:
        """Whether the tape ends with a long stretch and has no guards to check before a
        reverse: then that stretch's forward can run inside its reverse, which
        recomputes each tile's values anyway."""
        return self.segments[-1][0] != "plain" and not self.guards.size and not _state.debug

    def _forward_tangent(self, xs, vs, params, flat_tangent=None, head_only: bool = False):
        """Values and tangents at one point; returns (v, dv) workspaces. The tangent is
        vs (shaped like the inputs) or flat_tangent (one flat array). head_only: only the
        plain segments before a fusable final stretch (the reverse runs that one)."""
        v, _ = self._workspace()
        dv, _ = self._tangent_workspace()
        self._set_inputs(v, xs, params)
        dv[self._in] = self._flat_tangent(vs) if flat_tangent is None else flat_tangent
        if self.param_pos.size:
            dv[self._params] = 0.0
        if head_only:
            for _, start, stop in self.segments[:-1]:
                sweeps.forward_tangent_vector(*self.arrays.sweep_args, v, dv, start, stop)
            return v, dv
        plan = self._tangent_plan()
        if plan is None:
            sweeps.forward_tangent_vector(*self.arrays.sweep_args, v, dv, 0, len(self.arrays))
        else:
            tiling.packed_forward_tangent(*self.arrays.sweep_args, v, dv, *plan.args(), plan.n_local)
        self._check_guards(v)
        return v, dv

    def _tangent_plan(self):
        """The packed tile plan when the tape has long elementwise stretches, else None."""
        plan = self._packed
        if plan is None:
            segments = self.segments
            plan = tiling.pack(segments) if any(kind != "plain" for kind, *_ in segments) else False
            self._packed = plan
        return plan or None

    def _split_direction(self, xs, v):
        """(inputs, direction): v by keyword, or as the argument after the inputs
        (scipy's hessp(x, p) calls f.hvp(x, p))."""
        if v is None:
            if len(xs) != len(self.inputs) + 1:
                raise TapejitError("pass the direction as v=..., or as the argument after the inputs")
            return xs[:-1], xs[-1]
        return xs, v

    def jvp(self, *xs, v=None, params=None):
        """(value, J v): the directional derivative, one forward-mode sweep.
        ``v`` has the inputs' shape (a tuple of arrays for several inputs)."""
        xs, v = self._split_direction(xs, v)
        if self._one_call():
            x, p = self._point_inputs(xs, params)
            values, dv = self._workspace()[0], self._tangent_workspace()[0]
            if not _point.tangent(*self.arrays.sweep_args, values, dv, x, _one_layout(self._flat_tangent(v)),
                                  self.in_pos, p, self.param_pos, self.guards):
                raise self._branch_changed(values)
        else:
            values, dv = self._forward_tangent(xs, v, params)
        out = dv[self.out_pos]
        jv = float(out[0]) if not self.output_shape else out.reshape(self.output_shape).copy()
        return self._value(values), jv

    def hvp(self, *xs, v=None, params=None):
        """H v, the Hessian of a scalar output times v: forward over reverse on the tape.
        ``f.hvp(x, v=p)`` or ``f.hvp(x, p)`` (scipy's hessp)."""
        self._scalar_output("hvp")
        xs, v = self._split_direction(xs, v)
        if self._one_call():
            x, p = self._point_inputs(xs, params)
            t = _one_layout(self._flat_tangent(v))
            (values, g), (dv, dg) = self._workspace(), self._tangent_workspace()
            out = np.empty(self.n_inputs)
            if not _point.hvp(*self.arrays.sweep_args, values, dv, g, dg, x, t, self.in_pos, p, self.param_pos,
                              self.guards, self.out_pos, out):
                raise self._branch_changed(values)
            return self._split(out)
        return self._split(self._hvp_flat(xs, params, self._flat_tangent(v)))

    def _hvp_flat(self, xs, params, flat_tangent, out=None):
        """H v for a flat v, written to out (a new array when None)."""
        # there is no tiled forward-tangent driver for a stretch before the last one
        head_only = self._fusable_tail() and all(kind == "plain" for kind, *_ in self.segments[:-1])
        values, dv = self._forward_tangent(xs, None, params, flat_tangent, head_only)
        _, g = self._workspace()
        _, dg = self._tangent_workspace()
        g[self.out_pos] += 1.0
        if self._tangent_plan() is None:
            sweeps.reverse_tangent_vector(*self.arrays.sweep_args, values, dv, g, dg, 0, len(self.arrays))
        else:   # tile by tile, on the worker threads (as the gradient's reverse)
            tiling.reverse_tangent(self.segments, self.arrays, values, dv, g, dg)
        if out is None:
            out = dg[self._in].copy()
        else:
            out[:] = dg[self._in]
        for array in (g, dg):
            array[self._in] = 0.0
            if self.param_pos.size:
                array[self._params] = 0.0
        return out

    def jacobian(self, *xs, params=None, sparse: bool = False):
        """The Jacobian (n_outputs, n_inputs) at a point: dense through the batch engine
        (one tangent or adjoint per row of the identity, whichever is fewer), or a scipy
        CSR matrix from a colored compressed evaluation with ``sparse=True``."""
        if sparse:
            from ..analysis import sparsity
            return sparsity.sparse_jacobian(self, xs, params)
        x = self._flat_inputs(xs)
        m, n = self.n_outputs, self.n_inputs
        if n <= m:
            _, jv, valid = self._run_flat(np.tile(x, (n, 1)), np.eye(n), batch_engine.MODE_JVP, params)
            return jv.T.copy()
        _, ju, valid = self._run_flat(np.tile(x, (m, 1)), np.eye(m), batch_engine.MODE_VJP, params)
        return ju

    def hessian(self, *xs, params=None, sparse: bool = False):
        """The Hessian (n_inputs, n_inputs) of a scalar output at a point: n Hessian-vector
        products through the batch engine, or colored and compressed with ``sparse=True``."""
        self._scalar_output("hessian")
        if sparse:
            from ..analysis import sparsity
            return sparsity.sparse_hessian(self, xs, params)
        x = self._flat_inputs(xs)
        n = self.n_inputs
        _, hv, _ = self._run_flat(np.tile(x, (n, 1)), np.eye(n), batch_engine.MODE_HVP, params)
        return hv

    def _run_flat(self, X, seeds, mode, params):
        vals, derivs, valid = batch_engine.run(
            self.arrays, self.in_pos, self.param_pos, self._flat_params(params), self.out_pos,
            self.guards, np.ascontiguousarray(X), mode, seeds=np.ascontiguousarray(seeds))
        if not valid.all():
            raise BranchChangedError("a Python branch taken while tracing goes the other way at this point")
        return vals, derivs, valid

    def optimize(self) -> "Function":
        """A smaller equivalent Function: constant folding, algebraic identities that IEEE
        allows, common subexpressions and dead code (tapejit.passes.program)."""
        from ..passes import program as passes
        pieces = passes.optimize(self)
        locations = pieces.pop("locations")
        g = Function(**pieces, fn=self.fn)
        g.unoptimized_size = (len(self), self.n_slots)
        if locations:
            g.locations = locations
        return g

    def compile(self) -> "Function":
        """This Function with its own compiled kernel for batch values and gradients.

        The interpreter stores every instruction's result and loads it back; the kernel is
        the tape unrolled into straight-line code per point (tapejit.cpu.compiled), which keeps
        a point's values in registers. Batch values and gradients of small tapes run about
        twice as fast (B1: see the README), at the price of compiling once per function
        (cached on disk across processes). Every other method, and batches of other
        modes, still use the interpreter. Raises NotCompilableError for tapes too large to
        unroll."""
        from ..cpu.compiled import Kernel
        twin = Function(self.arrays, self.inputs, self.params, self.param_values, self.output, self.guards,
                        fn=self.fn, _validate=False)
        twin.locations = self.locations
        twin._kernel = Kernel(self)
        return twin

    @property
    def tier(self) -> str:
        """Where batch values and gradients run: "interpreter", "compiling" (its kernel
        compiles in the background), "compiled", or "not compilable" / "failed" (the
        interpreter for good; ``tier_error`` says why). See tapejit.cpu.tier."""
        return tier.COMPILED if self._kernel is not None else self._tier.state

    @property
    def tier_error(self) -> Optional[BaseException]:
        return self._tier.error

    def wait_compiled(self, timeout: Optional[float] = None) -> bool:
        """Wait for a background compile of this Function's kernel (if one runs); True
        when the kernel is in use."""
        return tier.wait(self, timeout)

    def jacobian_sparsity(self):
        """Boolean scipy.sparse CSR pattern (n_outputs, n_inputs) of the Jacobian, found by
        propagating index sets through the tape (computed once per Function)."""
        from ..analysis import sparsity
        return sparsity.jacobian_pattern(self)

    def hessian_sparsity(self):
        """Boolean scipy.sparse CSR pattern (n_inputs, n_inputs) of the Hessian."""
        from ..analysis import sparsity
        return sparsity.hessian_pattern(self)

    def vjp(self, *xs, u, params=None):
        """(value, u^T J): the vector-Jacobian product for a vector output."""
        seed = _as_float_array(u)
        if seed.shape != self.output_shape:
            raise ShapeError(f"u has shape {seed.shape}, the output has shape {self.output_shape}")
        if self._one_call():
            v, grad = self._point_reverse(xs, params, _one_layout(seed))
            return self._value(v), self._split(grad)
        v = self._forward(xs, params)
        return self._value(v), self._split(self._reverse(seed.reshape(-1)))

    # -- batches -----------------------------------------------------------------------------
    def _run_batch(self, Xs, params, mode, on_branch_change, seeds=None, device="cpu", dtype=None,
                   out=(None, None)):
        if on_branch_change not in BRANCH_MODES:
            raise TapejitError(f"on_branch_change must be one of {BRANCH_MODES}, got {on_branch_change!r}")
        if device not in ("cpu", "cuda"):
            raise TapejitError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda":
            if out[0] is not None or out[1] is not None:
                raise TapejitError("out= buffers are for the CPU engine; on the GPU pass device arrays in")
            return self._run_cuda(Xs, params, mode, on_branch_change, seeds, dtype or np.float64)
        if dtype is not None and np.dtype(dtype) != np.float64:
            raise TapejitError("the CPU engine computes in float64; dtype applies to device='cuda'")
        X = self._batch_inputs(Xs)
        B = X.shape[0]
        if out[1] is not None and len(self.inputs) != 1:
            raise TapejitError("an out= gradient buffer needs a function of one input array")
        out = (None if out[0] is None else batch_engine.check_out(out[0], (B, self.n_outputs), "out (values)", X),
               None if out[1] is None else batch_engine.check_out(out[1], (B, self.n_inputs), "out (gradients)", X))
        kernel = self._kernel            # read once: a background compile may set it (tapejit.cpu.tier)
        started = time.perf_counter()
        try:
            if kernel is not None and mode in (batch_engine.MODE_VALUES, batch_engine.MODE_GRAD):
                vals, derivs, valid = batch_engine.run_compiled(kernel, self.arrays, X,
                                                                self._flat_params(params), mode, out)
            else:
                vals, derivs, valid = batch_engine.run(
                    self.arrays, self.in_pos, self.param_pos, self._flat_params(params), self.out_pos,
                    self.guards, X, mode, seeds=seeds, out=out)
        except Exception as exc:
            from ..ops.primitives import name_the_primitives
            name_the_primitives(exc, self.arrays)
            raise
        else:
            if mode in (batch_engine.MODE_VALUES, batch_engine.MODE_GRAD):
                tier.served(self, B, mode, time.perf_counter() - started, kernel)
        self._check_branches(X, params, mode, seeds, vals, derivs, valid, on_branch_change)
        if _state.debug:
            bad = ~np.isfinite(vals).all(axis=1) | (~np.isfinite(derivs).all(axis=1) if mode else False)
            if bad.any():
                b = int(np.flatnonzero(bad)[0])
                self._forward(tuple(np.atleast_1d(p) for p in [X[b]]) if len(self.inputs) == 1
                              else self._split(X[b]), params)
                from ..errors import NonFiniteError
                raise NonFiniteError(f"point {b} of the batch has a non-finite derivative")
        return vals, derivs, valid

    def _check_branches(self, X, params, mode, seeds, vals, derivs, valid, on_branch_change):
        if valid.all():
            return
        if on_branch_change == "raise":
            bad = np.flatnonzero(~valid)
            raise BranchChangedError(
                f"{bad.size} of {len(valid)} points take a different Python branch than the trace "
                f"(first at index {bad[0]}); pass on_branch_change='mask' or 'retrace'")
        if on_branch_change == "retrace":
            self._retrace_points(X, params, mode, seeds, vals, derivs, valid)

    def _run_cuda(self, Xs, params, mode, on_branch_change, seeds, dtype):
        from .. import cuda
        from ..ops.primitives import require_gpu_rules
        require_gpu_rules(self.arrays.ops, self.arrays.cv, mode)
        cuda.require()
        if len(Xs) == 1 and cuda.is_device_array(Xs[0]):
            X = cuda.as_device_array(Xs[0])
            if seeds is not None and cuda.is_device_array(seeds):
                seeds = cuda.as_device_array(seeds)
            if len(X.shape) != 2:
                if tuple(X.shape[1:]) != self.input_shapes[0] or len(self.inputs) != 1:
                    raise ShapeError(f"batch input has shape {tuple(X.shape)}; expected (B, *{self.input_shapes[0]})")
                X = X.reshape(X.shape[0], self.n_inputs)
            vals, derivs, valid = cuda.run(self, X, mode, seeds=seeds, params=params, dtype=dtype)
            if valid is None:   # no guards: every point is valid
                if on_branch_change == "mask":
                    from numba import cuda as nbcuda
                    valid = nbcuda.to_device(np.ones(X.shape[0], np.bool_))
                return vals, derivs, valid
            host_valid = valid.copy_to_host()
            if not host_valid.all():
                if on_branch_change == "retrace":
                    hv, hd = vals.copy_to_host(), derivs.copy_to_host()
                    sd = None if seeds is None else (seeds.copy_to_host() if cuda.is_device_array(seeds) else seeds)
                    hX = X.copy_to_host().astype(np.float64)
                    self._check_branches(hX, params, mode, sd, hv, hd, host_valid, on_branch_change)
                    from numba import cuda as nbcuda
                    return nbcuda.to_device(hv.astype(dtype)), nbcuda.to_device(hd.astype(dtype)), nbcuda.to_device(host_valid)
                self._check_branches(None, params, mode, seeds, None, None, host_valid, on_branch_change)
            return vals, derivs, valid
        X = self._batch_inputs(Xs)
        vals, derivs, valid = cuda.run(self, X, mode, seeds=seeds, params=params, dtype=dtype)
        if not valid.all():
            vals, derivs = vals.astype(np.float64), derivs.astype(np.float64)
            self._check_branches(X, params, mode, seeds, vals, derivs, valid, on_branch_change)
        return vals, derivs, valid

    def _retrace_points(self, X, params, mode, seeds, vals, derivs, valid) -> None:
        """Fill in the points whose branches differ, with traces recorded at such points."""
        if self.fn is None:
            raise BranchChangedError("points take another branch and this Function has no Python "
                                     "function to retrace (it was loaded or unpickled)")
        todo = np.flatnonzero(~valid)
        candidates = list(self._variants)
        while todo.size:
            if not candidates:
                point = self._split(X[todo[0]])
                point = point if isinstance(point, tuple) else (point,)
                variant = trace(self.fn, *point, params=tuple(self._param_arrays(params)))
                self._variants.append(variant)
                candidates = [variant]
            variant = candidates.pop(0)
            sub_seeds = seeds[todo] if seeds is not None and len(seeds) else seeds
            v2, d2, ok = batch_engine.run(
                variant.arrays, variant.in_pos, variant.param_pos,
                variant._flat_params(self._param_arrays(params)), variant.out_pos, variant.guards,
                np.ascontiguousarray(X[todo]), mode, seeds=sub_seeds)
            done = todo[ok]
            vals[done] = v2[ok]
            if mode:
                derivs[done] = d2[ok]
            valid[done] = True
            todo = todo[~ok]

    def _param_arrays(self, params):
        return self.param_values if params is None else [_as_float_array(p) for p in params]

    def _batch_values(self, vals, B):
        return vals.reshape((B,) + self.output_shape)

    def _batch_split(self, flat, B):
        from ..cuda import is_device_array
        if is_device_array(flat):
            return flat.reshape((B,) + self.input_shapes[0]) if len(self.inputs) == 1 else flat
        return self._split(flat, B)

    def batch(self, *Xs, params=None, on_branch_change: str = "raise", device: str = "cpu", dtype=None,
              out: np.ndarray | None = None):
        """Values at every row: X of shape (B, *input shape) -> (B,) or (B, *output shape).

        ``device="cuda"`` runs on the GPU (numpy in, numpy out; device arrays stay on the
        device); ``dtype=np.float32`` computes in single precision there. ``out``: a
        float64 C-contiguous array of the result's shape to write and return (as numpy's
        ``out=``; reusing one spares a large batch the page faults of fresh memory)."""
        vals, _, valid = self._run_batch(Xs, params, batch_engine.MODE_VALUES, on_branch_change,
                                         device=device, dtype=dtype, out=(out, None))
        result = self._batch_values(vals, vals.shape[0]) if out is None else out
        return (result, valid) if on_branch_change == "mask" else result

    def batch_value_and_grad(self, *Xs, params=None, on_branch_change: str = "raise",
                             device: str = "cpu", dtype=None, out: tuple | None = None):
        """(values (B,), gradients (B, *input shape)) at every row; ``out=(values,
        gradients)`` writes into and returns those arrays (see ``batch``)."""
        self._scalar_output("batch_value_and_grad")
        buffers = (None, None) if out is None else tuple(out)
        vals, grads, valid = self._run_batch(Xs, params, batch_engine.MODE_GRAD, on_branch_change,
                                             device=device, dtype=dtype, out=buffers)
        B = vals.shape[0]
        result = (vals.reshape(B) if buffers[0] is None else buffers[0],
                  self._batch_split(grads, B) if buffers[1] is None else buffers[1])
        return result + (valid,) if on_branch_change == "mask" else result

    def batch_grad(self, *Xs, params=None, on_branch_change: str = "raise", device: str = "cpu", dtype=None,
                   out: np.ndarray | None = None):
        """Gradients (B, *input shape) at every row; ``out``: the array to write (see ``batch``)."""
        result = self.batch_value_and_grad(*Xs, params=params, on_branch_change=on_branch_change,
                                           device=device, dtype=dtype, out=None if out is None else (None, out))
        return (result[1], result[2]) if on_branch_change == "mask" else result[1]

    def _seeds(self, S, width_shape, name, device):
        from ..cuda import is_device_array
        if device == "cuda" and is_device_array(S):
            return S.reshape(S.shape[0], -1) if len(S.shape) != 2 else S
        S = _as_float_array(S)
        if S.ndim == 0 or S.shape[1:] != width_shape:
            raise ShapeError(f"{name} has shape {S.shape}; expected (B, *{width_shape})")
        return np.ascontiguousarray(S.reshape(S.shape[0], _size(width_shape)))

    def batch_vjp(self, *Xs, U, params=None, on_branch_change: str = "raise", device: str = "cpu", dtype=None):
        """(values, u_b^T J(x_b)) for every row b, U of shape (B, *output shape)."""
        seeds = self._seeds(U, self.output_shape, "U", device)
        vals, grads, valid = self._run_batch(Xs, params, batch_engine.MODE_VJP, on_branch_change, seeds,
                                             device=device, dtype=dtype)
        out = (self._batch_values(vals, vals.shape[0]), self._batch_split(grads, vals.shape[0]))
        return out + (valid,) if on_branch_change == "mask" else out

    def batch_hvp(self, *Xs, V, params=None, on_branch_change: str = "raise", device: str = "cpu", dtype=None):
        """Hessian-vector products H(x_b) v_b at every row b (forward over reverse)."""
        self._scalar_output("batch_hvp")
        if len(self.inputs) != 1:
            raise TapejitError("batch_hvp takes one input array; concatenate several inputs")
        seeds = self._seeds(V, self.input_shapes[0], "V", device)
        _, hv, valid = self._run_batch(Xs, params, batch_engine.MODE_HVP, on_branch_change, seeds,
                                       device=device, dtype=dtype)
        out = self._batch_split(hv, hv.shape[0])
        return (out, valid) if on_branch_change == "mask" else out

    def batch_jvp(self, *Xs, V, params=None, on_branch_change: str = "raise", device: str = "cpu", dtype=None):
        """(values, J(x_b) v_b) for every row b (forward mode), V shaped like the inputs."""
        if len(self.inputs) != 1:
            raise TapejitError("batch_jvp takes one input array; concatenate several inputs")
        seeds = self._seeds(V, self.input_shapes[0], "V", device)
        vals, jv, valid = self._run_batch(Xs, params, batch_engine.MODE_JVP, on_branch_change, seeds,
                                          device=device, dtype=dtype)
        B = vals.shape[0]
        out = (self._batch_values(vals, B), self._batch_values(jv, B))
        return out + (valid,) if on_branch_change == "mask" else out


# ------------------------------------------------------------------------------------------
# tracing
# ------------------------------------------------------------------------------------------
def _input_tensor(tape: Tape, value) -> Tensor:
    arr = _as_float_array(value)
    n = arr.size
    base = tape.emit(OP.input, n)
    tape.values[base: base + n] = arr.reshape(-1)
    if arr.shape:
        v = tape.values[base: base + n].reshape(arr.shape)
        v.flags.writeable = False
    else:
        v = float(arr)
    return _on_tape(tape, base, _cstrides(arr.shape), arr.shape, v, False)


def _output_block(tape: Tape, out) -> tuple:
    """(base, shape) of the output as a contiguous run of slots, recording a copy if needed."""
    if isinstance(out, Tensor) and out._tape is tape:
        shape = out._shape
        if _uniform_step(shape, out._strides) == 1 or _size(shape) == 1:
            if _size(shape) == 1 or _uniform_step(shape, out._strides) == 1:
                return out._base, shape
        base = _gather(tape, 0, _positions(out._base, shape, out._strides).reshape(-1))
        return base, shape
    if isinstance(out, (tuple, list)):
        raise TraceError("the traced function must return one tensor (stack several outputs "
                         "with tj.stack or tj.concatenate)")
    # an output that does not depend on the inputs: a constant block
    value = np.asarray(out._value if isinstance(out, Tensor) else _as_float_array(out), np.float64)
    offset = tape.add_consts(value)
    base = tape.emit(OP.const, value.size, b=offset)
    tape.values[base: base + value.size] = value.reshape(-1)
    return base, value.shape


@contextmanager
def _collector_paused():
    """Recording creates tens of thousands of short-lived tensors, none in a reference
    cycle; Python's cycle collector would still walk every live one, again and again
    (about a tenth of recording the W graph)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def trace(fn: Callable, *example_args, params: Sequence = (), optimize: bool = True,
          compile: Optional[bool] = None) -> Function:
    """Record ``fn(*example_args, *params)`` once and return a replayable Function.

    ``example_args`` are the differentiable inputs (arrays or floats); ``params`` are
    inputs that can change at replay (``f.grad(x, params=...)``) without re-recording
    and are not differentiated (CppAD's dynamic parameters). The tape is optimized
    (constant folding, identities, common subexpressions, dead code) unless
    ``optimize=False``.

    ``compile``: None (the default) compiles the Function's own kernel for batch values
    and gradients in the background once it runs hot (tapejit.cpu.tier; ``f.tier``); True
    compiles it now, before returning (``f.compile()``); False never does."""
    if not example_args:
        raise TapejitError("trace needs at least one example input")
    with _collector_paused():
        f = _record(fn, example_args, params, optimize)
    if compile:
        return f.compile()
    if compile is False:
        f._tier.policy = "never"
    return f


def _record(fn: Callable, example_args: tuple, params: Sequence, optimize: bool) -> Function:
    tape = Tape()
    previous = _state.trace
    _state.trace = tape
    _refresh_active()
    try:
        inputs = [_input_tensor(tape, a) for a in example_args]
        param_ts = [_input_tensor(tape, p) for p in params]
        out = fn(*inputs, *param_ts)
        out_block = _output_block(tape, out)
    finally:
        _state.trace = previous
        _refresh_active()
    f = Function(tape.arrays(), [(t._base, t._shape) for t in inputs],
                 [(t._base, t._shape) for t in param_ts],
                 [_as_float_array(p) for p in params], out_block, tape.guards, fn=fn,
                 _validate=not optimize)      # the optimized Function validates its own tape
    f.locations = dict(tape.locations)
    return f.optimize() if optimize else f


# ------------------------------------------------------------------------------------------
# JAX-style sugar
# ------------------------------------------------------------------------------------------
class _Traced:
    """Traces ``fn`` on the first call per input shapes, then replays; a branch change
    retraces at that point and remembers the new trace too."""

    def __init__(self, fn: Callable, with_value: bool):
        self.fn = fn
        self.with_value = with_value
        self.cache: dict = {}
        self.__wrapped__ = fn
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *xs):
        key = tuple(np.shape(x) for x in xs)
        candidates = self.cache.setdefault(key, [])
        for f in candidates:
            try:
                return self._apply(f, xs)
            except BranchChangedError:
                continue
        f = trace(self.fn, *xs)
        candidates.append(f)
        return self._apply(f, xs)

    def _apply(self, f: Function, xs):
        value, grad = f.value_and_grad(*xs)
        return (value, grad) if self.with_value else grad


def grad(fn: Callable) -> Callable:
    """``grad(fn)(x)``: the gradient of a scalar function, traced once per input shape."""
    return _Traced(fn, with_value=False)


def value_and_grad(fn: Callable) -> Callable:
    """``value_and_grad(fn)(x)`` -> (value, gradient), traced once per input shape."""
    return _Traced(fn, with_value=True)


def load(path, max_slots: int = tape_io.MAX_SLOTS) -> Function:
    """Read a Function written by ``Function.save``. Any malformed file, or one from another
    opcode table, raises TapeFormatError naming the problem; nothing in it is executed."""
    pieces = tape_io.read(path, max_slots)
    try:
        return Function(**pieces)
    except InvalidTapeError as err:
        raise TapeFormatError(f"invalid tape: {err}") from None
    except Exception as err:        # the layout does not fit the tape
        raise TapeFormatError(f"inconsistent layout: {err}") from None
