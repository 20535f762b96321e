"""How compiled sweeps call the kernels of user primitives (``tapejit.ops.primitives``).

The sweeps are compiled once for the whole opcode table, before any user primitive
exists, and cached on disk; so they cannot call a user's kernel by name. They call it
through ``TABLE``, an array of function pointers in this process's memory: the opcodes
``primitive1`` and ``primitive2`` carry the primitive's number in their immediate ``c``,
and ``prim1(c, a)`` loads entry ``c * ROLES + role`` and calls it with Numba's own
calling convention (the one ``_unlinked`` uses), so an exception raised in the user's
kernel reaches the caller as itself. Registering a primitive compiles its kernels and
writes their addresses here; nothing of the interpreter recompiles.

The table is a C array whose address is given to LLVM's linker as a symbol
(``ll.add_symbol``), so a sweep loaded from Numba's disk cache in another process reads
that process's table. An entry out of range or empty (a rule the user did not give)
raises in the sweep, never calls through a bad pointer.
"""
from __future__ import annotations

import ctypes

from llvmlite import binding as ll
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..ops.table import PRIMITIVE_NAMES

#: at most this many primitives in one process (each takes ROLES pointers: 48 KiB in all)
MAX_PRIMITIVES = 1024
#: the kernels of one primitive, by role. Unary: value(x), d(x, out), d2(x, out).
#: Binary: value(a, b), da, db, daa, dab, dbb, each (a, b, out). d2 and the second
#: derivatives are totals (out's dependence on the inputs included); only the
#: Hessian-vector sweeps call them.
ROLES = 6
VALUE, D_A, D_B, D_AA, D_AB, D_BB = range(ROLES)
D2 = D_B            # the unary second derivative takes the slot binary ops use for db

#: the opcode table's primitive names (opcodes.PRIMITIVE_NAMES): the role each calls, and
#: its arguments after the number c (a, b the operands, o the output). The CPU names
#: below, their Python versions, the GPU's dispatchers (codegen.render_cuda_primitives)
#: and its stubs (_cuda_math) all follow this.
RULES = {
    "prim1": (VALUE, ("a",)), "prim1_d": (D_A, ("a", "o")), "prim1_d2": (D2, ("a", "o")),
    "prim2": (VALUE, ("a", "b")), "prim2_da": (D_A, ("a", "b", "o")), "prim2_db": (D_B, ("a", "b", "o")),
    "prim2_daa": (D_AA, ("a", "b", "o")), "prim2_dab": (D_AB, ("a", "b", "o")),
    "prim2_dbb": (D_BB, ("a", "b", "o")),
}
assert tuple(RULES) == PRIMITIVE_NAMES, "opcodes.PRIMITIVE_NAMES and RULES name the same functions"

_SYMBOL = "tapejit_primitive_table"
TABLE = (ctypes.c_void_p * (MAX_PRIMITIVES * ROLES))()
ll.add_symbol(_SYMBOL, ctypes.addressof(TABLE))

_MISSING = ("a tapejit primitive has no kernel for this derivative (see the primitive's "
            "defderiv/defhess)",)


def _entry(context, builder, symbol: str, size: int, index, out_of_range: str):
    """The pointer at ``index`` of the C array of ``size`` pointers named ``symbol`` (an
    index past it raises IndexError, a null entry NotImplementedError, in the sweep)."""
    voidptr = ir.IntType(8).as_pointer()
    table = builder.module.globals.get(symbol)
    if table is None:       # declared, not defined: the linker finds the array
        table = ir.GlobalVariable(builder.module, ir.ArrayType(voidptr, size), symbol)
    with cgutils.if_unlikely(builder, builder.icmp_unsigned(">=", index, ir.Constant(index.type, size))):
        context.call_conv.return_user_exc(builder, IndexError, (out_of_range,))
    pointer = builder.load(builder.gep(table, [ir.Constant(ir.IntType(32), 0), index]))
    with cgutils.if_unlikely(builder, builder.icmp_unsigned("==", pointer, ir.Constant(voidptr, None))):
        context.call_conv.return_user_exc(builder, NotImplementedError, _MISSING)
    return pointer


def _caller(n_args: int):
    """An intrinsic ``call(entry, x1..xn)``: TABLE[entry](x1..xn) as float64."""
    argtypes = (types.float64,) * n_args

    @intrinsic
    def call(typingctx, entry, *args):
        packed = args[0] if len(args) == 1 and isinstance(args[0], types.StarArgTuple) else types.StarArgTuple(args)
        if len(packed.types) != n_args or not all(isinstance(t, (types.Float, types.Integer)) for t in packed.types):
            return None

        def codegen(context, builder, sig, llargs):
            index = context.cast(builder, llargs[0], sig.args[0], types.int64)
            pointer = _entry(context, builder, _SYMBOL, len(TABLE), index, "tapejit primitive number out of range")
            values = [context.cast(builder, v, t, types.float64)
                      for v, t in zip(cgutils.unpack_tuple(builder, llargs[1]), packed.types)]
            fnty = context.call_conv.get_function_type(types.float64, argtypes)
            status, result = context.call_conv.call_function(
                builder, builder.bitcast(pointer, fnty.as_pointer()), types.float64, argtypes, values)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return result
        return types.float64(entry, packed), codegen
    return call


_call1, _call2, _call3 = _caller(1), _caller(2), _caller(3)


# The names the opcode table's expressions use (opcodes.PRIMITIVE_NAMES); c is the
# primitive's number, a float immediate holding a small integer.
@njit(inline="always")
def prim1(c, a):
    return _call1(int(c) * ROLES + VALUE, a)


@njit(inline="always")
def prim1_d(c, a, o):
    return _call2(int(c) * ROLES + D_A, a, o)


@njit(inline="always")
def prim1_d2(c, a, o):
    return _call2(int(c) * ROLES + D2, a, o)


@njit(inline="always")
def prim2(c, a, b):
    return _call2(int(c) * ROLES + VALUE, a, b)


@njit(inline="always")
def prim2_da(c, a, b, o):
    return _call3(int(c) * ROLES + D_A, a, b, o)


@njit(inline="always")
def prim2_db(c, a, b, o):
    return _call3(int(c) * ROLES + D_B, a, b, o)


@njit(inline="always")
def prim2_daa(c, a, b, o):
    return _call3(int(c) * ROLES + D_AA, a, b, o)


@njit(inline="always")
def prim2_dab(c, a, b, o):
    return _call3(int(c) * ROLES + D_AB, a, b, o)


@njit(inline="always")
def prim2_dbb(c, a, b, o):
    return _call3(int(c) * ROLES + D_BB, a, b, o)


def set_entry(number: int, role: int, address: int) -> None:
    TABLE[number * ROLES + role] = address


#: the registered kernels as Numba dispatchers, by number, then role (None: not given);
#: the Python paths (eager scalars, constant folding) call them one value at a time
KERNELS: list[list] = []


def _python(role: int):
    def call(c, *args):
        kernel = KERNELS[int(c)][role]
        if kernel is None:
            raise NotImplementedError(_MISSING[0])
        return float(kernel(*args))
    return call


#: Python versions of the names above, for the table's expressions evaluated in Python
PYTHON_NAMES = {name: _python(role) for name, (role, _) in RULES.items()}


# --------------------------------------------------------------------------------------
# block primitives (opcode ``block``): one call per point runs a user kernel on vectors
# --------------------------------------------------------------------------------------
#: the adapters of one block primitive, by role (tapejit.cpu._block_kernels builds them): the
#: value, the reverse (vjp), the tangent (jvp) and the Hessian-vector sweep's step
BLOCK_ROLES = 4
BLOCK_VALUE, BLOCK_VJP, BLOCK_JVP, BLOCK_HVP = range(BLOCK_ROLES)
#: an adapter's arguments: the sweep kernel's context (the workspace arrays, see
#: tapejit.cpu._kernels), the primitive's number, then the instruction's o, n, a, sa, b, sb
BLOCK_ARGS = (types.CPointer(types.int64),) + (types.int64,) * 7

_BLOCK_SYMBOL = "tapejit_block_table"
BLOCK_TABLE = (ctypes.c_void_p * (MAX_PRIMITIVES * BLOCK_ROLES))()
ll.add_symbol(_BLOCK_SYMBOL, ctypes.addressof(BLOCK_TABLE))


@intrinsic
def block_call(typingctx, c, role, ctx, o, n, a, sa, b, sb):
    """BLOCK_TABLE[c * BLOCK_ROLES + role](ctx, c, o, n, a, sa, b, sb), in Numba's calling
    convention (an exception raised by the user's kernel reaches the sweep's caller)."""
    fields = (o, n, a, sa, b, sb)
    if not (isinstance(c, (types.Float, types.Integer)) and isinstance(role, types.Integer)
            and ctx == types.CPointer(types.int64) and all(isinstance(f, types.Integer) for f in fields)):
        return None

    def codegen(context, builder, sig, llargs):
        number = context.cast(builder, llargs[0], sig.args[0], types.int64)
        kind = context.cast(builder, llargs[1], sig.args[1], types.int64)
        index = builder.add(builder.mul(number, ir.Constant(number.type, BLOCK_ROLES)), kind)
        pointer = _entry(context, builder, _BLOCK_SYMBOL, len(BLOCK_TABLE), index,
                         "tapejit block primitive number out of range")
        values = [llargs[2], number] + [context.cast(builder, v, t, types.int64)
                                        for v, t in zip(llargs[3:], sig.args[3:])]
        fnty = context.call_conv.get_function_type(types.none, BLOCK_ARGS)
        status, _ = context.call_conv.call_function(
            builder, builder.bitcast(pointer, fnty.as_pointer()), types.none, BLOCK_ARGS, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()
    return types.none(c, role, ctx, o, n, a, sa, b, sb), codegen


def set_block_entry(number: int, role: int, address: int) -> None:
    BLOCK_TABLE[number * BLOCK_ROLES + role] = address
