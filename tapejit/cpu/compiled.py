"""Per-function kernels: a small tape rendered as straight-line code per point.

The interpreter stores every instruction's result in the workspace and loads it back for
the next one: on the Zen 1 box B1's chunk sweeps sit at about 70% of the L1 store port's
peak, so no interpreter change gets them near code that keeps a point in registers.
``Function.compile()`` trades a compilation per function for that speed: the tape, with
its sizes, strides and constants known, is unrolled into one assignment per slot,

    v12 = (v3 - v2) * (v3 - v2)
    t40 = (g12 * (2.0 * (v3 - v2))) if g12 != 0.0 else 0.0

and Numba compiles the result as a loop over the batch's points. Nothing here defines an
opcode again: elementwise opcodes are rendered from their ``value`` and ``partials``
expressions, structural ones by running their forward and reverse templates (the same text
the sweeps are generated from) in Python over symbolic slots, which emits one statement
per operation. Adjoints follow the sweeps' rules: a zero adjoint contributes nothing,
even through an infinite partial.

The source goes to a file named by its hash in the kernel cache directory, so that
Numba's cache serves the compiled code to later processes: a second process pays an
import, not a compilation.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from .._runtime.threads import run_workers
from ..codegen.render import render_expr
from ..errors import NotCompilableError, ShapeError
from ..ops.table import BY_CODE, FIELDS, MATH_NAMES, PRIMITIVE_NAMES

#: kernels of more statements than this are refused. Numba compiles straight-line code at
#: about 2 ms a statement (Zen 1 box: B1's 300 in 1.5 s, B2's 6,300 in 14.6 s), and such a
#: tape's time goes to vector instructions the interpreter already runs as SIMD loops over
#: points, where the kernel is scalar per point: B2 ran 29 ms compiled, 19 interpreted
MAX_STATEMENTS = 5_000

_OPERANDS = (("a", "sa"), ("b", "sb"), ("d", "sd"))
_COMPARISONS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


# --------------------------------------------------------------------------------------
# symbolic values: running a template emits the statements it would execute
# --------------------------------------------------------------------------------------


class _Arithmetic:
    """Arithmetic on symbolic operands goes to the current emitter."""
    __slots__ = ()

    def _binary(self, other, op, reflected=False):
        return _Emitter.current.binary(other, self, op) if reflected else _Emitter.current.binary(self, other, op)

    def __add__(self, other): return self._binary(other, "+")
    def __radd__(self, other): return self._binary(other, "+", True)
    def __sub__(self, other): return self._binary(other, "-")
    def __rsub__(self, other): return self._binary(other, "-", True)
    def __mul__(self, other): return self._binary(other, "*")
    def __rmul__(self, other): return self._binary(other, "*", True)
    def __truediv__(self, other): return self._binary(other, "/")
    def __rtruediv__(self, other): return self._binary(other, "/", True)


class _Zero(_Arithmetic):
    """An adjoint that no instruction has reached: adding it changes nothing, and any
    product with it is zero (the sweeps' rule for zero adjoints)."""

    def __repr__(self):
        return "ZERO"

    def __neg__(self):
        return self

    def __bool__(self):
        return False


ZERO = _Zero()


class _Sym(_Arithmetic):
    """A value known only at run time: the name of the variable that will hold it."""
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __bool__(self):
        raise TypeError("a run-time value steers a template's Python control flow")

    def __neg__(self):
        return _Emitter.current.temp(f"-{self.name}")


def _literal(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "True" if x else "False"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "(-inf)"
    text = repr(x)
    return f"({text})" if x < 0 or text.startswith("-") else text


def _render(x) -> str:
    if isinstance(x, _Sym):
        return x.name
    if x is ZERO:
        return "0.0"
    return _literal(x)


def _concrete(x) -> bool:
    return not isinstance(x, _Sym) and x is not ZERO


class _SymbolicTemplate(ast.NodeTransformer):
    """Rewrites a template's comparisons, ``and``/``or`` and conditional expressions into
    calls, so that they can take symbolic operands (Python would ask for a bool)."""

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) != 1:
            raise NotImplementedError("chained comparison in a template")
        op = _COMPARISONS[type(node.ops[0])]
        return ast.copy_location(ast.Call(ast.Name("_compare", ast.Load()),
                                          [ast.Constant(op), node.left, node.comparators[0]], []), node)

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        name = "_and" if isinstance(node.op, ast.And) else "_or"
        return ast.copy_location(ast.Call(ast.Name(name, ast.Load()), node.values, []), node)

    def visit_IfExp(self, node):
        self.generic_visit(node)
        return ast.copy_location(ast.Call(ast.Name("_select", ast.Load()),
                                          [node.test, node.body, node.orelse], []), node)

    # a concrete `if` (on fields) stays an if; a symbolic one fails in _Sym.__bool__


_compiled_templates: dict[str, object] = {}


def _template_code(text: str):
    code = _compiled_templates.get(text)
    if code is None:
        tree = ast.fix_missing_locations(_SymbolicTemplate().visit(ast.parse(text)))
        code = _compiled_templates[text] = compile(tree, "<template>", "exec")
    return code


class _Slots:
    """V or G of a template: slot -> symbolic value, reads of unset slots give ``default``."""

    def __init__(self, prefix: str, default_zero: bool):
        self.values: dict[int, object] = {}
        self.prefix = prefix
        self.default_zero = default_zero

    def __getitem__(self, slot):
        slot = int(slot)
        if slot in self.values:
            return self.values[slot]
        return ZERO if self.default_zero else _Sym(f"{self.prefix}{slot}")

    def __setitem__(self, slot, value):
        slot = int(slot)
        if self.default_zero and _concrete(value) and value == 0.0:
            value = ZERO
        self.values[slot] = value


class _Emitter:
    current: "_Emitter"

    def __init__(self):
        self.lines: list[str] = []
        self.count = 0          # temporaries named so far
        self.statements = 0     # statements emitted, forward and reverse

    def emit(self, line: str) -> None:
        self.lines.append(line)
        self.statements += 1
        if self.statements > MAX_STATEMENTS:
            raise NotCompilableError(
                f"the tape needs more than {MAX_STATEMENTS} statements as straight-line code; "
                "the interpreter runs it (its vector instructions are SIMD loops already)")

    def temp(self, expr: str) -> _Sym:
        self.count += 1
        name = f"t{self.count}"
        self.emit(f"{name} = {expr}")
        return _Sym(name)

    def binary(self, x, y, op: str):
        if _concrete(x) and _concrete(y):
            # folded as the kernel would compute it: IEEE, 1/0 is inf (Python would raise)
            with np.errstate(all="ignore"):
                x, y = np.float64(x), np.float64(y)
                return float({"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op])
        if x is ZERO or y is ZERO:
            if op == "*":
                return ZERO
            if op == "+":
                return y if x is ZERO else x
            if op == "-":
                return x if y is ZERO else (-y if _concrete(y) else self.temp(f"-{_render(y)}"))
            if op == "/" and x is ZERO:
                return ZERO
        return self.temp(f"{_render(x)} {op} {_render(y)}")

    def compare(self, op, x, y):
        if _concrete(x) and _concrete(y):
            return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y, "==": x == y, "!=": x != y}[op]
        return self.temp(f"{_render(x)} {op} {_render(y)}")

    def logical(self, word, values):
        if all(_concrete(v) for v in values):
            result = values[0]
            for v in values[1:]:
                result = (result and v) if word == "and" else (result or v)
            return result
        return self.temp("(" + f" {word} ".join(_render(v) for v in values) + ")")

    def select(self, test, yes, no):
        if _concrete(test):
            return yes if test else no
        if (yes is ZERO or (_concrete(yes) and yes == 0.0)) and (no is ZERO or (_concrete(no) and no == 0.0)):
            return ZERO if (yes is ZERO and no is ZERO) else 0.0
        return self.temp(f"{_render(yes)} if {_render(test)} else {_render(no)}")

    def call(self, name, args):
        if all(_concrete(a) for a in args) and name not in PRIMITIVE_NAMES:
            try:
                return float(getattr(math, name)(*args) if name != "pow" else math.pow(*args))
            except (ValueError, OverflowError):
                pass    # log(0), exp(1000): left to the kernel, which gives IEEE's -inf, inf
        return self.temp(f"{name}({', '.join(_render(a) for a in args)})")


def _template_namespace(emitter, V, G, consts, idx, fields, c):
    ns = dict(fields)
    ns.update(V=V, G=G, consts=consts, idx=idx, c=c, range=range,
              _compare=emitter.compare, _select=emitter.select,
              _and=lambda *v: emitter.logical("and", v), _or=lambda *v: emitter.logical("or", v))
    for name in MATH_NAMES + PRIMITIVE_NAMES:
        ns[name] = (lambda nm: lambda *args: emitter.call(nm, args))(name)
    ns["abs"] = lambda x: emitter.call("abs", (x,)) if not _concrete(x) else abs(x)
    return ns


# --------------------------------------------------------------------------------------
# the renderer: elementwise opcodes from the table's expressions (with codegen's renaming
# of their operands), structural ones by running their templates
# --------------------------------------------------------------------------------------
class _Renderer:
    """Unrolls one tape into the statements of a per-point kernel."""

    def __init__(self, f):
        a = f.arrays
        self.ops, self.ins, self.cv, self.consts, self.idx = a.ops, a.ins, a.cv, a.consts, a.idx
        self.emitter = _Emitter()
        self.V = _Slots("v", default_zero=False)
        self.G = _Slots("g", default_zero=True)

    def _fields(self, i):
        return {name: int(self.ins[k, i]) for k, name in enumerate(FIELDS)} | {"o": int(self.ins[0, i])}

    def _run_template(self, text, fields, c):
        exec(_template_code(text), _template_namespace(self.emitter, self.V, self.G, self.consts, self.idx,
                                                       fields, c))

    def forward(self):
        _Emitter.current = self.emitter
        for i in range(len(self.ops)):
            op = BY_CODE[int(self.ops[i])]
            fields = self._fields(i)
            if op.elementwise:
                self._forward_elementwise(op, fields, float(self.cv[i]))
            elif op.forward:            # inputs have none: the kernel reads them from X
                self._run_template(op.forward, fields, float(self.cv[i]))

    def _operand_names(self, op, fields, k):
        names = {}
        for name, stride in _OPERANDS[: op.arity]:
            names[name] = _render(self.V[fields[name] + k * fields[stride]])
        return names

    def _forward_elementwise(self, op, fields, c):
        for k in range(fields["n"]):
            names = self._operand_names(op, fields, k)
            names["c"] = _literal(c)
            slot = fields["out"] + k
            self.emitter.emit(f"v{slot} = {render_expr(op.value, names)}")
            self.V[slot] = _Sym(f"v{slot}")

    def reverse(self, seed_slot: int):
        _Emitter.current = self.emitter
        self.G[seed_slot] = 1.0
        for i in range(len(self.ops) - 1, -1, -1):
            op = BY_CODE[int(self.ops[i])]
            fields = self._fields(i)
            if not op.differentiable:
                continue
            if op.elementwise:
                self._reverse_elementwise(op, fields, float(self.cv[i]))
            elif op.reverse:
                outputs = range(fields["out"], fields["out"] + fields["n"])
                if all(self.G[s] is ZERO for s in outputs):
                    continue
                self._run_template(op.reverse, fields, float(self.cv[i]))

    def _reverse_elementwise(self, op, fields, c):
        for k in range(fields["n"]):
            out = fields["out"] + k
            g_out = self.G[out]
            if g_out is ZERO:
                continue
            names = self._operand_names(op, fields, k)
            names["c"] = _literal(c)
            names["o"] = _render(self.V[out])
            for name, stride in _OPERANDS[: op.arity]:
                if name not in op.partials:
                    continue
                term = self._contribution(g_out, render_expr(op.partials[name], names))
                slot = fields[name] + k * fields[stride]
                self.G[slot] = self.emitter.binary(self.G[slot], term, "+")

    def _contribution(self, g_out, partial: str):
        """g_out * partial, and 0 where g_out is 0 whatever the partial (even inf or NaN).
        The test is left out where it cannot matter: a known nonzero adjoint (the seed)
        or a finite constant partial (the +-1 of sums and differences)."""
        try:
            constant = float(partial.strip("()"))
        except ValueError:
            constant = None
        if constant is not None and math.isfinite(constant):
            if constant == 1.0:
                return g_out
            if _concrete(g_out):
                return g_out * constant
            return self.emitter.temp(f"-{_render(g_out)}" if constant == -1.0 else f"{_render(g_out)} * {_literal(constant)}")
        if _concrete(g_out):
            return self.emitter.temp(f"{_literal(g_out)} * ({partial})" if g_out != 1.0 else f"{partial}")
        g = _render(g_out)
        return self.emitter.temp(f"({g} * ({partial})) if {g} != 0.0 else 0.0")


# --------------------------------------------------------------------------------------
# the kernel source
# --------------------------------------------------------------------------------------
_HEADER = """\
# generated by tapejit.cpu.compiled from one tape; see that module
from math import {math_names}, inf, nan
from numba import njit
from tapejit.cpu._vmath import {helpers}
from tapejit.cpu._primitive_calls import {primitive_names}


@njit(cache=True, nogil=True, error_model="numpy")
def values(worker, n_workers, X, params, vals, valid):
    B = X.shape[0]
    for b in range(worker * B // n_workers, (worker + 1) * B // n_workers):
{inputs}{forward}{outputs}{guards}

@njit(cache=True, nogil=True, error_model="numpy")
def value_and_grad(worker, n_workers, X, params, vals, grads, valid):
    B = X.shape[0]
    for b in range(worker * B // n_workers, (worker + 1) * B // n_workers):
{inputs}{forward}{outputs}{guards}{reverse}{gradient}
"""


def _indent(lines) -> str:
    return "".join(f"        {line}\n" for line in lines)


_render_lock = threading.Lock()


def render_source(f) -> str:
    """The kernel module of Function ``f`` (raises NotCompilableError when too large)."""
    with _render_lock:   # the symbolic values find their emitter in one shared place
        return _render_source(f)


def _render_source(f) -> str:
    host_only = sorted({BY_CODE[int(op)].name for op in np.unique(f.arrays.ops) if BY_CODE[int(op)].cpu_only})
    if host_only:
        # a block primitive's kernels are reached through the sweeps' pointer table only
        raise NotCompilableError(f"the tape calls {', '.join(host_only)} instructions (block primitives), "
                                 "which only the interpreter runs")
    renderer = _Renderer(f)
    renderer.forward()
    forward = list(renderer.emitter.lines)
    renderer.emitter.lines = []
    renderer.reverse(int(f.out_pos[0]))
    reverse = renderer.emitter.lines
    V, G = renderer.V, renderer.G
    inputs = [f"v{s} = X[b, {j}]" for j, s in enumerate(f.in_pos)]
    inputs += [f"v{s} = params[{j}]" for j, s in enumerate(f.param_pos)]
    outputs = [f"vals[b, {m}] = {_render(V[s])}" for m, s in enumerate(f.out_pos)]
    guards = [f"if {_render(V[s])} != 1.0:\n            valid[b] = False" for s in f.guards]
    gradient = [f"grads[b, {j}] = {_render(G[s])}" for j, s in enumerate(f.in_pos)]
    from ..codegen.render import CPU_HELPERS
    names = sorted(set(MATH_NAMES) - {"pow"} - set(CPU_HELPERS))
    return _HEADER.format(math_names=", ".join(names), helpers=", ".join(CPU_HELPERS),
                          primitive_names=", ".join(PRIMITIVE_NAMES), inputs=_indent(inputs),
                          forward=_indent(forward),
                          outputs=_indent(outputs), guards=_indent(guards), reverse=_indent(reverse),
                          gradient=_indent(gradient))


def cache_dir() -> Path:
    """Where kernel sources (and Numba's cache of them) live: $TAPEJIT_CACHE_DIR, else
    the user's cache directory."""
    configured = os.environ.get("TAPEJIT_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tapejit" / "kernels"


_modules: dict[str, object] = {}
_lock = threading.Lock()


def _module_name(source: str) -> str:
    return f"tapejit_kernel_{hashlib.sha256(source.encode()).hexdigest()[:20]}"


def on_disk(source: str) -> bool:
    """Whether a kernel of this source was written to the cache directory before (by this
    process or an earlier one): then Numba's cache most likely holds its compiled code."""
    name = _module_name(source)
    if name in _modules:
        return True
    try:
        return (cache_dir() / f"{name}.py").exists()
    except OSError:
        return False


def _load(source: str):
    name = _module_name(source)
    with _lock:
        if name in _modules:
            return _modules[name]
        try:
            directory = cache_dir()
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{name}.py"
            if not path.exists() or path.read_text() != source:
                # written whole under another name, then renamed: a concurrent process
                # never imports half a file
                fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
                with os.fdopen(fd, "w") as handle:
                    handle.write(source)
                os.replace(tmp, path)
        except OSError:
            # no writable cache: a private directory (compiled again in each process)
            directory = Path(tempfile.mkdtemp(prefix="tapejit-kernels-"))
            path = directory / f"{name}.py"
            path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
        _modules[name] = module
        return module


class Kernel:
    """The compiled per-point code of one Function: values, and values with the gradient
    of the first output, over the rows of a batch."""

    def __init__(self, f, source: Optional[str] = None):
        self.source = source or render_source(f)
        self.module = _load(self.source)
        self.n_inputs = len(f.in_pos)
        self.n_params = len(f.param_pos)
        self.n_outputs = len(f.out_pos)

    def prepare(self) -> None:
        """Compile (or load from Numba's cache) both entry points, for the argument types
        ``run`` passes, without running them (tapejit.cpu.tier does this in the background)."""
        from numba import typeof, types
        X, params = np.zeros((1, self.n_inputs)), np.zeros(self.n_params)
        vals, grads, valid = np.zeros((1, self.n_outputs)), np.zeros((1, self.n_inputs)), np.ones(1, np.bool_)
        workers = (types.int64, types.int64)
        self.module.values.compile(workers + tuple(typeof(a) for a in (X, params, vals, valid)))
        self.module.value_and_grad.compile(workers + tuple(typeof(a) for a in (X, params, vals, grads, valid)))

    def run(self, X, params, vals, grads, valid, with_gradient: bool, workers: int) -> None:
        # the kernel indexes with constants: every shape is checked here, before it runs
        B = X.shape[0]
        if X.dtype != np.float64 or X.ndim != 2 or X.shape[1] != self.n_inputs or not X.flags.c_contiguous:
            raise ShapeError(f"a compiled kernel needs float64 points of shape (B, {self.n_inputs})")
        if params.shape != (self.n_params,) or params.dtype != np.float64:
            raise ShapeError(f"a compiled kernel needs {self.n_params} float64 parameter values")
        if vals.shape != (B, self.n_outputs) or vals.dtype != np.float64 or valid.shape != (B,) \
                or valid.dtype != np.bool_:
            raise ShapeError("the values buffer does not match the batch")
        if with_gradient and (grads.shape != (B, self.n_inputs) or grads.dtype != np.float64):
            raise ShapeError("the gradient buffer does not match the batch")
        if with_gradient:
            run_workers(self.module.value_and_grad, workers, X, params, vals, grads, valid)
        else:
            run_workers(self.module.values, workers, X, params, vals, valid)
