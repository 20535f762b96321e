"""User primitives: elementwise functions whose value and derivatives are the user's
Numba kernels, recorded as one instruction and replayed in every CPU mode and engine.

    @tj.primitive
    def gammaln(x):
        return math.lgamma(x)
    gammaln.defderiv(lambda x, out: digamma(x))      # d out / d x, given x and out
    gammaln.defhess(lambda x, out: trigamma(x))      # d2 out / dx2, for hvp and Hessians

A primitive of two operands takes one rule per operand (``defderiv(da, db)``, each
``(a, b, out)``) and three second derivatives (``defhess(daa, dab, dbb)``). Second
derivatives are totals: what d/dx of the first derivative is, out's dependence on x
included.

Registering compiles the user's kernels (wrapped to return float64) and nothing else:
the sweeps call them through ``_primitive_calls.TABLE``. A rule that is not given is a
kernel that raises ``NotImplementedError`` naming the primitive and the rule, so a mode
that needs it fails with that message, never with a wrong number.

On the GPU the rules are compiled by numba-cuda from the user's Python (``device_kernel``)
into the tape's own device module, where ``prim1(c, a)`` and the others dispatch on the
number (``codegen.render_cuda_primitives``); a device function cannot raise, so a mode
whose rule is missing is refused before the launch (``require_gpu_rules``).

Block primitives (``tj.custom_vjp``, ``BlockPrimitive`` below) take and return whole
vectors: one ``block`` instruction per call, whose value, vjp and jvp kernels the sweeps
reach through ``_primitive_calls.BLOCK_TABLE``. Both kinds share one numbering (the
immediate of their instructions), one registry by name, and saved tapes' headers.
"""
from __future__ import annotations

import inspect
import math
import threading
import warnings
from typing import Callable, Optional

import numpy as np
from numba import float64, njit

from ..cpu import _block_kernels as blocks
from ..cpu import _primitive_calls as calls
from ..errors import InvalidTapeError, PrimitiveError, TapejitError
from .table import OP

_lock = threading.Lock()
#: registered primitives by number (the immediate of their instructions)
BY_NUMBER: list["Primitive"] = []
#: the latest primitive registered under each name (what loading a saved tape finds)
BY_NAME: dict[str, "Primitive"] = {}
PRIMITIVE_OPS = (OP.primitive1, OP.primitive2, OP.block)
#: records one elementwise instruction: (opcode, operands, immediate) -> Tensor. The front
#: end (tapejit.frontend.tensor, which records every operation) installs it when imported,
#: so that the table's package imports nothing above it
record_elementwise: Optional[Callable] = None
#: records one block instruction: (primitive, operands) -> Tensor (installed the same way)
record_block: Optional[Callable] = None

_FIRST = {1: ("d",), 2: ("da", "db")}
_SECOND = {1: ("d2",), 2: ("daa", "dab", "dbb")}
_ROLES = {"value": calls.VALUE, "d": calls.D_A, "d2": calls.D2, "da": calls.D_A, "db": calls.D_B,
          "daa": calls.D_AA, "dab": calls.D_AB, "dbb": calls.D_BB}


class PrimitiveWarning(RuntimeWarning):
    """A primitive's kernel returned NaN for inputs that are not NaN."""


def _float_kernel(fn, n_args: int, what: str):
    """fn compiled for n_args float64 arguments, returning float64 (wrapped, so that a user
    kernel returning an int or a float32 still fits the table's calling convention)."""
    # IEEE arithmetic, as in the sweeps: the batch engine's padding points and a/0 give
    # inf or nan, never ZeroDivisionError (a user's own dispatcher keeps its options)
    user = fn if hasattr(fn, "py_func") else njit(error_model="numpy")(fn)
    if n_args == 1:
        def kernel(x):
            return float(user(x))
    elif n_args == 2:
        def kernel(x, y):
            return float(user(x, y))
    else:
        def kernel(x, y, z):
            return float(user(x, y, z))
    dispatcher = njit(error_model="numpy")(kernel)
    signature = (float64,) * n_args
    try:
        dispatcher.compile(signature)
    except Exception as exc:      # Numba's typing errors are long: keep them, say whose they are
        raise PrimitiveError(f"{what} does not compile with Numba for {n_args} float64 argument(s): "
                             f"{type(exc).__name__}: {exc}") from exc
    return dispatcher, signature


def _missing_kernel(name: str, rule: str, how: str, n_args: int):
    """A kernel that raises NotImplementedError naming the rule that was not given."""
    message = f"primitive {name!r} has no {rule} rule: give it with {name}.{how}(...)"
    if n_args == 2:
        def kernel(x, y):
            if x == x or x != x:        # always: a kernel that only raised would return none
                raise NotImplementedError(message)
            return 0.0
    else:
        def kernel(x, y, z):
            if x == x or x != x:
                raise NotImplementedError(message)
            return 0.0
    dispatcher = njit(kernel)
    signature = (float64,) * n_args
    dispatcher.compile(signature)
    return dispatcher, signature


def _operand_count(fn, kind: str, name: str, what: str) -> int:
    """How many operands fn takes (1 or 2), or a PrimitiveError naming the primitive."""
    try:
        arity = len(inspect.signature(getattr(fn, "py_func", fn)).parameters)
    except (TypeError, ValueError) as exc:
        raise PrimitiveError(f"{kind} {name!r}: cannot read the number of its arguments") from exc
    if arity not in (1, 2):
        raise PrimitiveError(f"{kind} {name!r} takes {arity} arguments; {kind}s take 1 or 2 {what}")
    return arity


def _numbered(p, register: Callable = lambda: None) -> None:
    """Give p the next number and its name in the registries (Primitive and BlockPrimitive
    share them), after ``register`` wrote its kernels (under the lock: numbers are dense)."""
    with _lock:
        if len(BY_NUMBER) >= calls.MAX_PRIMITIVES:
            raise PrimitiveError(f"at most {calls.MAX_PRIMITIVES} primitives per process")
        p.number = len(BY_NUMBER)
        calls.KERNELS.append([None] * calls.ROLES)
        register()
        BY_NUMBER.append(p)
        BY_NAME[p.name] = p
    p.__name__ = p.name
    p.__doc__ = getattr(p.fn, "__doc__", None)


class Primitive:
    """An elementwise function of one or two operands with user kernels (see the module)."""

    def __init__(self, fn: Callable, name: Optional[str] = None):
        self.name = name or getattr(fn, "__name__", "primitive")
        self.arity = _operand_count(fn, "primitive", self.name, "(scalars; the call broadcasts them over arrays)")
        self.fn = fn
        self.has_deriv = self.has_hess = self._ready = False
        self._python: dict = {}
        self._device: dict = {}
        _numbered(self, lambda: self._set("value", fn, self.arity))

    def ready(self) -> "Primitive":
        """Fill the rules not given with kernels that raise naming them: once, before the
        first instruction is recorded (most users give the rules right after the
        decorator, and compiling a stand-in first would be wasted)."""
        if not self._ready:
            with _lock:
                for rule in _FIRST[self.arity]:
                    if calls.KERNELS[self.number][_ROLES[rule]] is None:
                        self._set(rule, None, self.arity + 1, "first-derivative", "defderiv")
                for rule in _SECOND[self.arity]:
                    if calls.KERNELS[self.number][_ROLES[rule]] is None:
                        self._set(rule, None, self.arity + 1, "second-derivative", "defhess")
                self._ready = True
        return self

    def _set(self, rule: str, fn, n_args: int, kind: str = "", how: str = "") -> None:
        if fn is None:
            dispatcher, signature = _missing_kernel(self.name, f"{kind} ({rule})", how, n_args)
        else:
            dispatcher, signature = _float_kernel(fn, n_args, f"primitive {self.name!r}'s {rule} rule")
        cres = dispatcher.overloads[signature]
        role = _ROLES[rule]
        # the plain Python function, which the GPU compiles for itself (tapejit.cuda)
        self._python[role] = None if fn is None else getattr(fn, "py_func", fn)
        self._device.pop(role, None)
        # the dispatcher stays referenced (KERNELS): its machine code lives as long as it does
        calls.KERNELS[self.number][role] = dispatcher
        calls.set_entry(self.number, role, cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))

    def defderiv(self, *rules: Callable) -> "Primitive":
        """The partial derivative(s): one function per operand, each given the operands and
        the output, ``(x, out)`` or ``(a, b, out)``."""
        self._define(_FIRST[self.arity], rules, "defderiv")
        self.has_deriv = True
        return self

    def defhess(self, *rules: Callable) -> "Primitive":
        """The second derivatives, as totals, each given the operands and the output: ``d2``
        for one operand; ``daa, dab, dbb`` for two."""
        self._define(_SECOND[self.arity], rules, "defhess")
        self.has_hess = True
        return self

    def _define(self, names: tuple, rules: tuple, how: str) -> None:
        if len(rules) != len(names):
            raise PrimitiveError(f"primitive {self.name!r} has {self.arity} operand(s): {how} takes "
                                 f"{len(names)} rule(s) ({', '.join(names)})")
        for rule, fn in zip(names, rules):
            self._set(rule, fn, self.arity + 1)

    def __call__(self, *args):
        if len(args) != self.arity:
            raise TypeError(f"primitive {self.name!r} takes {self.arity} argument(s), got {len(args)}")
        if not self._ready:
            self.ready()
        code = OP.primitive1 if self.arity == 1 else OP.primitive2
        try:
            out = record_elementwise(code, args, float(self.number))
        except TapejitError:
            raise
        except Exception as exc:
            raise PrimitiveError(f"primitive {self.name!r} raised {type(exc).__name__}: {exc}") from exc
        _warn_nan(self, args, out)
        return out

    def __repr__(self) -> str:
        rules = ["value"] + (["derivative"] if self.has_deriv else [])
        rules += ["second derivative"] if self.has_hess else []
        return f"<tapejit primitive {self.name!r} of {self.arity} operand(s): {', '.join(rules)}>"


def _warn_nan(p: Primitive, args, out) -> None:
    """numpy's habit: a NaN from inputs that are not NaN is reported (here by name)."""
    value = np.asarray(getattr(out, "_value", out), dtype=np.float64)
    if not np.isnan(value).any():
        return
    inputs = [np.asarray(getattr(a, "_value", a), dtype=np.float64) for a in args]
    nan_in = np.zeros(value.shape, bool)
    for x in inputs:
        nan_in = nan_in | np.broadcast_to(np.isnan(x), value.shape)
    fresh = np.isnan(value) & ~nan_in
    if fresh.any():
        at = np.unravel_index(int(np.flatnonzero(fresh)[0]), value.shape) if value.shape else ()
        where = ", ".join(repr(float(np.broadcast_to(x, value.shape)[at])) for x in inputs)
        warnings.warn(f"primitive {p.name!r} returned nan at ({where}), an input that is not nan",
                      PrimitiveWarning, stacklevel=3)


def primitive(fn: Optional[Callable] = None, *, name: Optional[str] = None):
    """Register an elementwise primitive from Numba-compilable scalar code (a decorator,
    with or without ``name=``); its derivatives come with ``defderiv`` and ``defhess``."""
    if fn is None:
        return lambda f: Primitive(f, name)
    return Primitive(fn, name)


# --------------------------------------------------------------------------------------
# block primitives: vectors in, a vector out
# --------------------------------------------------------------------------------------
class BlockPrimitive:
    """A function of one or two vectors returning a vector, whose value and derivatives
    are the user's Numba kernels (the ``block`` opcode):

        @tj.custom_vjp
        def solve(diag, rhs):                  # kernels take and return float64 vectors
            ...
        solve.defvjp(lambda res, g, diag, rhs: (g_diag, g_rhs))   # cotangents, given the
        solve.defjvp(lambda res, t_diag, t_rhs, diag, rhs: t_res) # result: reverse, forward

    A primitive of one operand takes ``vjp(res, g, x) -> g_x`` and ``jvp(res, t, x) -> t_res``.
    Every output may depend on every input (the sparsity passes assume so). Operands are
    flattened in C order; the result takes the shape the value kernel returns when the
    call is recorded, and must keep its length at every point. Each call copies the
    operands of one point into fresh vectors, so a kernel may work in place.

    Registering compiles the user's kernels and one adapter per rule
    (tapejit.cpu._block_kernels), whose addresses the sweeps find in
    ``_primitive_calls.BLOCK_TABLE``: nothing of the interpreter recompiles. The CPU
    runs them, single point and batch; the GPU target refuses such tapes, and a
    Hessian-vector product raises (a block primitive has no second-order rule)."""

    def __init__(self, fn: Callable, name: Optional[str] = None):
        self.name = name or getattr(fn, "__name__", "block_primitive")
        self.arity = _operand_count(fn, "block primitive", self.name, "vectors")
        self.fn = fn
        self.kernel = fn if hasattr(fn, "py_func") else njit(error_model="numpy")(fn)
        self.has_vjp = self.has_jvp = self._ready = False
        self._adapters: dict = {}
        _numbered(self, lambda: self._register(calls.BLOCK_VALUE, "value kernel", lambda: blocks.value_adapter(
            self.kernel, self.arity == 2, self.name)))

    @classmethod
    def from_adapters(cls, evaluate: Callable, arity: int, name: str, adapters: dict) -> "BlockPrimitive":
        """A block primitive whose adapters are built already (tapejit.frontend.checkpoint):
        ``evaluate`` computes the value in Python at recording, ``adapters`` maps roles
        (_primitive_calls.BLOCK_*) to compiled adapters; a role not given raises."""
        self = cls.__new__(cls)
        self.name, self.arity, self.fn, self.kernel = name, arity, evaluate, evaluate
        self.has_vjp = calls.BLOCK_VJP in adapters
        self.has_jvp = calls.BLOCK_JVP in adapters
        self._ready = False
        self._adapters = {}

        def register():
            for role, adapter in adapters.items():
                self._register(role, "adapter", lambda adapter=adapter: adapter)
        _numbered(self, register)
        return self.ready()

    def _register(self, role: int, what: str, build: Callable) -> None:
        """Compile an adapter (and the user kernel it calls) and write its address."""
        try:
            adapter = build()
        except Exception as exc:      # Numba's typing errors are long: keep them, say whose they are
            raise PrimitiveError(f"block primitive {self.name!r}'s {what} does not compile with Numba for "
                                 f"{self.arity} float64 vector(s): {type(exc).__name__}: {exc}") from exc
        self._adapters[role] = adapter     # referenced: its machine code lives as long as it does
        calls.set_block_entry(self.number, role, blocks.address(adapter))

    def defvjp(self, rule: Callable) -> "BlockPrimitive":
        """The reverse rule: ``rule(res, g, *operands)`` returns the operands' cotangents
        (a tuple for two operands), g being the result's adjoint."""
        user = rule if hasattr(rule, "py_func") else njit(error_model="numpy")(rule)
        self._register(calls.BLOCK_VJP, "vjp rule", lambda: blocks.vjp_adapter(user, self.arity == 2, self.name))
        self.has_vjp = True
        return self

    def defjvp(self, rule: Callable) -> "BlockPrimitive":
        """The forward rule: ``rule(res, *tangents, *operands)`` returns the result's tangent."""
        user = rule if hasattr(rule, "py_func") else njit(error_model="numpy")(rule)
        self._register(calls.BLOCK_JVP, "jvp rule", lambda: blocks.jvp_adapter(user, self.arity == 2, self.name))
        self.has_jvp = True
        return self

    def ready(self) -> "BlockPrimitive":
        """Fill the rules not given with adapters that raise naming them (once, before the
        first call is recorded)."""
        if not self._ready:
            with _lock:
                missing = {calls.BLOCK_VJP: ("vjp", "reverse-mode gradients, vjp and Jacobians need it",
                                             "defvjp"),
                           calls.BLOCK_JVP: ("jvp", "forward mode (jvp, jacobian(mode='forward')) needs it",
                                             "defjvp")}
                for role, (rule, why, how) in missing.items():
                    if role not in self._adapters:
                        message = f"block primitive {self.name!r} has no {rule} rule ({why}): give it with {self.name}.{how}(...)"
                        self._register(role, f"{rule} stand-in", lambda m=message, r=role: blocks.raising_adapter(
                            m, when_adjoints=r == calls.BLOCK_VJP))
                message = (f"block primitive {self.name!r} has no second-order rule: Hessian-vector products "
                           "and Hessians of a tape that calls it are not available")
                if calls.BLOCK_HVP not in self._adapters:
                    self._register(calls.BLOCK_HVP, "hvp stand-in", lambda: blocks.raising_adapter(message, True))
                self._ready = True
        return self

    def __call__(self, *args):
        if len(args) != self.arity:
            raise TypeError(f"block primitive {self.name!r} takes {self.arity} argument(s), got {len(args)}")
        if not self._ready:
            self.ready()
        return record_block(self, args)

    def evaluate(self, operands: list) -> np.ndarray:
        """The value kernel on float64 vectors, in Python (recording, and calls that record
        nothing), its failures reported with the primitive's name."""
        try:
            out = self.kernel(*operands)
        except TapejitError:
            raise
        except Exception as exc:
            raise PrimitiveError(f"block primitive {self.name!r} raised {type(exc).__name__}: {exc}") from exc
        out = np.asarray(out, dtype=np.float64)
        if out.size == 0:
            raise PrimitiveError(f"block primitive {self.name!r} returned an empty result")
        fresh = np.isnan(out).any() and not any(np.isnan(x).any() for x in operands)
        if fresh:
            warnings.warn(f"block primitive {self.name!r} returned nan for operands that hold none",
                          PrimitiveWarning, stacklevel=4)
        return out

    def __repr__(self) -> str:
        rules = ["value"] + (["vjp"] if self.has_vjp else []) + (["jvp"] if self.has_jvp else [])
        return f"<tapejit block primitive {self.name!r} of {self.arity} operand(s): {', '.join(rules)}>"


def custom_vjp(fn: Optional[Callable] = None, *, name: Optional[str] = None):
    """Register a block primitive from a Numba-compilable kernel of one or two float64
    vectors (a decorator, with or without ``name=``); its rules come with ``defvjp`` and
    ``defjvp``. See BlockPrimitive."""
    if fn is None:
        return lambda f: BlockPrimitive(f, name)
    return BlockPrimitive(fn, name)


# --------------------------------------------------------------------------------------
# what tapes say about primitives: checks before a replay, names in saved files
# --------------------------------------------------------------------------------------
def numbers_used(ops: np.ndarray, cv: np.ndarray) -> list[int]:
    """The primitive numbers a tape's instructions call (sorted)."""
    mask = np.isin(ops, PRIMITIVE_OPS)
    return sorted({int(c) for c in cv[mask]}) if mask.any() else []


def names_of(numbers) -> dict[str, str]:
    """{number: name} for a saved file's header."""
    return {str(k): BY_NUMBER[k].name for k in numbers}


def check_numbers(ops: np.ndarray, cv: np.ndarray, ins: Optional[np.ndarray] = None) -> None:
    """Every primitive instruction names a registered primitive of its kind and arity
    (tape.validate calls this: the sweeps would raise, not misread, but a tape that cannot
    run is refused before it starts)."""
    mask = np.isin(ops, PRIMITIVE_OPS)
    if not mask.any():
        return
    c = cv[mask]
    bad = ~((c >= 0) & (c < len(BY_NUMBER)) & (c == np.floor(c)))
    if bad.any():
        raise InvalidTapeError(f"a primitive instruction names primitive number {c[bad][0]!r}, "
                               f"which is not registered in this process")
    rows = np.flatnonzero(mask)
    for i, k in zip(rows, c.astype(np.int64)):
        p, op = BY_NUMBER[k], int(ops[i])
        if (op == OP.block) != isinstance(p, BlockPrimitive):
            kind = "a block" if op == OP.block else "an elementwise"
            raise InvalidTapeError(f"instruction {i} is {kind} primitive call, but {p.name!r} is not one")
        if op == OP.block:
            n = 1 if ins is None or ins[5, i] == 0 else 2
            sizes = getattr(p, "sizes", None)        # (sa, sb, n) where the primitive fixes them
            if sizes is not None and ins is not None and tuple(int(ins[f, i]) for f in (3, 5, 1)) != sizes:
                raise InvalidTapeError(f"instruction {i} calls {p.name!r} with operand and result lengths "
                                       f"{tuple(int(ins[f, i]) for f in (3, 5, 1))}, it takes {sizes}")
        else:
            n = 1 if op == OP.primitive1 else 2
        if p.arity != n:
            raise InvalidTapeError(f"primitive {p.name!r} takes {p.arity} operand(s), "
                                   f"its instruction reads {n}")


#: the rules each GPU mode calls (tapejit.cuda's modes: values, grad, vjp, jvp, hvp)
_GPU_RULES = {0: ("value",), 1: ("value", "first"), 2: ("value", "first"), 3: ("value", "first"),
              4: ("value", "first", "second")}


def require_gpu_rules(ops: np.ndarray, cv: np.ndarray, mode: int) -> None:
    """Before a GPU launch: every primitive the tape calls has the rules this mode needs
    (a device kernel cannot raise, so a missing one is refused here, by name)."""
    for k in numbers_used(ops, cv):
        p = BY_NUMBER[k]
        if isinstance(p, BlockPrimitive):
            raise NotImplementedError(f"block primitive {p.name!r} runs on the CPU only: its kernels are "
                                      "compiled for the host (replay this tape on the CPU)")
        for kind in _GPU_RULES[mode]:
            rules = {"value": ("value",), "first": _FIRST[p.arity], "second": _SECOND[p.arity]}[kind]
            for rule in rules:
                if p._python.get(_ROLES[rule]) is None:
                    how = "defderiv" if kind == "first" else "defhess"
                    raise NotImplementedError(f"primitive {p.name!r} has no {rule} rule, which this GPU mode "
                                              f"needs: give it with {p.name}.{how}(...)")


def device_kernel(number: int, role: int):
    """The primitive's rule compiled for the GPU (a device function; numba-cuda compiles
    it, from the user's Python, when a kernel calling it first compiles)."""
    p = BY_NUMBER[number]
    if role not in p._device:
        from numba import cuda
        fn = p._python.get(role)
        if fn is None:         # never called: require_gpu_rules refuses the modes needing it
            fn = _nan_rule(p.arity + (0 if role == calls.VALUE else 1))
        p._device[role] = cuda.jit(device=True)(fn)
    return p._device[role]


def _nan_rule(n_args: int):
    def rule1(x):
        return x * math.nan

    def rule2(x, y):
        return x * math.nan

    def rule3(x, y, z):
        return x * math.nan
    return {1: rule1, 2: rule2, 3: rule3}[n_args]


def name_the_primitives(exc: BaseException, arrays) -> BaseException:
    """exc, raised by a replay, with a note naming the tape's primitives when it has any
    (an exception from a user kernel carries the user's message, not the primitive's name)."""
    used = numbers_used(arrays.ops, arrays.cv)
    named = any("user primitive" in note for note in getattr(exc, "__notes__", ()))
    if used and not named and not isinstance(exc, TapejitError):
        names = ", ".join(repr(BY_NUMBER[k].name) for k in used)
        exc.add_note(f"(raised while replaying a tape that calls the user primitive(s) {names})")
    return exc


def renumbered(ops: np.ndarray, cv: np.ndarray, saved: dict) -> np.ndarray:
    """cv of a loaded tape with its primitives' numbers made this process's, from the
    file's {number: name}; a name not registered here raises (nothing from the file runs)."""
    mask = np.isin(ops, PRIMITIVE_OPS)
    if not mask.any():
        return cv
    mapping = {}
    for key, name in saved.items():
        if name not in BY_NAME:
            raise KeyError(name)
        mapping[float(key)] = float(BY_NAME[name].number)
    out = cv.copy()
    for i in np.flatnonzero(mask):
        if float(cv[i]) not in mapping:
            raise ValueError(f"instruction {i} calls primitive number {cv[i]!r}, which the file does not name")
        out[i] = mapping[float(cv[i])]
    return out


__all__ = ["BlockPrimitive", "Primitive", "PrimitiveWarning", "custom_vjp", "primitive"]
