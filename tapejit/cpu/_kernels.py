"""Opcode kernels compiled on first use and called through a table of pointers.

Each CPU sweep is a short loop (generated in ``_sweeps_cpu.py``) that calls, for every
instruction, the kernel of its opcode: one small jitted function per (sweep, opcode),
``forward_vector__add``, ``reverse_chunk__softplus``... A sweep compiled as one function
with a branch per opcode took LLVM 10-36 s per sweep (its time grows faster than the
function's size) and paid for all ~80 opcodes before the first gradient; now a cold start
compiles the loop (a fraction of a second) and the kernels of the opcodes the tape uses.

How a call finds its kernel: the sweep's machine code holds a table of pointers per
sweep, one per opcode, null when the process starts. The first instruction of an opcode
finds null and asks ``_resolve`` (a C callback into Python) for the kernel, which is
compiled then, or loaded from Numba's disk cache, and its address stored in the table.
So a sweep loaded from the disk cache never compiles a kernel it does not meet, and one
compiled in this process does not either: nothing is linked in at compile time.

Every kernel takes the same two arguments, the instruction's index and a pointer to the
sweep's *context*: the data pointers and shapes of the tape's and the workspace's arrays,
written once per sweep call on the sweep's stack. The kernel rebuilds the arrays it reads
from them (views, no copy, with the true shapes: NUMBA_BOUNDSCHECK=1 still checks
every access). Passing arrays as Numba's unpacked structs instead cost about 23 ns a call;
two scalars cost a few, which single-point sweeps over scalar tapes pay per instruction.
"""
from __future__ import annotations

import ctypes
import importlib
import threading
import traceback

from llvmlite import binding as ll
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..ops.table import OPS

#: the arrays a sweep hands its kernels, in context order; each takes three words
#: (data address, shape[0], shape[1] or 1), and the chunk width P comes last
ROLES = ("ins", "cv", "consts", "idx", "plan", "v", "dv", "g", "dg", "tmp")
P_WORD = 3 * len(ROLES)
CONTEXT_WORDS = P_WORD + 1
KERNEL_ARGS = (types.int64, types.CPointer(types.int64))
N_OPS = len(OPS)

#: Numba options of every kernel: no runtime (they allocate nothing; array views are then
#: not reference counted), IEEE division, cached on disk per kernel
KERNEL_JIT = dict(cache=True, nogil=True, error_model="numpy", _nrt=False, no_cpython_wrapper=True,
                  no_cfunc_wrapper=True)
_RESOLVER_SYMBOL = "tapejit_kernel_resolve"

_lock = threading.RLock()
_kernels: dict[tuple[str, str], object] = {}
_addresses: dict[tuple[str, str], int] = {}


def kernel_name(sweep: str, op: int) -> str:
    return f"{sweep}__{OPS[op].name}"


def _noop(i, ctx):
    """The kernel of an opcode with nothing to do in a sweep (an input's forward step)."""


def _jit(py_func):
    return njit(types.none(*KERNEL_ARGS), **KERNEL_JIT)(py_func)


def kernel(module: str, sweep: str, op: int):
    """The compiled kernel (a Numba dispatcher) of opcode ``op`` in ``module``'s ``sweep``;
    compiled or loaded from the disk cache on first request. An opcode with nothing to do
    in the sweep, or none at all, gets the shared empty kernel."""
    name = kernel_name(sweep, op) if 0 <= op < N_OPS else ""
    with _lock:
        if (module, name) not in _kernels:
            py_func = getattr(importlib.import_module(module), name, None) if name else None
            if py_func is None:
                if (__name__, "") not in _kernels:
                    _kernels[(__name__, "")] = _jit(_noop)
                _kernels[(module, name)] = _kernels[(__name__, "")]
            else:
                _kernels[(module, name)] = _jit(py_func)
        return _kernels[(module, name)]


def address(module: str, sweep: str, op: int) -> int:
    """The machine-code address of ``kernel(module, sweep, op)``."""
    key = (module, f"{sweep}:{op}")
    with _lock:
        if key not in _addresses:
            dispatcher = kernel(module, sweep, op)
            cres = dispatcher.overloads[KERNEL_ARGS]
            _addresses[key] = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        return _addresses[key]


def prepare(module: str, sweeps, codes) -> None:
    """Compile (or load) the kernels of these opcodes in these sweeps now, so that the
    first replay does not stop at each new opcode to call back into Python."""
    for sweep in sweeps:
        for op in codes:
            address(module, sweep, int(op))


def compiled_kernels() -> set[str]:
    """Names of the kernels this process has compiled or loaded, ``module.sweep__opname``."""
    with _lock:
        return {f"{module}.{name}" for (module, name), k in _kernels.items()
                if name and k is not _kernels.get((__name__, ""))}


@ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64)
def _resolve(key: bytes, op: int) -> int:
    """Address of the kernel of ``op`` in the sweep named by ``key`` (``module:sweep``), or
    0 if it cannot be compiled (the sweep then raises)."""
    try:
        module, sweep = key.decode("ascii").split(":")
        return address(module, sweep, op)
    except Exception:       # a C caller cannot take a Python exception: report, return 0
        traceback.print_exc()
        return 0


ll.add_symbol(_RESOLVER_SYMBOL, ctypes.cast(_resolve, ctypes.c_void_p).value)


# --------------------------------------------------------------------------------------
# intrinsics the generated code uses
# --------------------------------------------------------------------------------------
def _array_at(dtype, ndim: int):
    """An intrinsic ``(addr, *shape)``: the C-contiguous array of ``dtype`` at ``addr``
    (numba.carray's job, which Numba refuses in code without its runtime)."""
    arrty = types.Array(dtype, ndim, "C")

    @intrinsic
    def at(typingctx, addr, *shape):
        dims = shape[0].types if len(shape) == 1 and isinstance(shape[0], types.StarArgTuple) else shape
        if not isinstance(addr, types.Integer) or len(dims) != ndim or not all(
                isinstance(d, types.Integer) for d in dims):
            return None
        sig = arrty(addr, types.StarArgTuple(dims))

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            dims_in = cgutils.unpack_tuple(builder, args[1], ndim)
            dims_in = [context.cast(builder, d, t, types.int64) for d, t in zip(dims_in, signature.args[1].types)]
            itemsize = context.get_abi_sizeof(context.get_data_type(dtype))
            strides, stride = [], ir.Constant(i64, itemsize)
            for d in reversed(dims_in):
                strides.insert(0, stride)
                stride = builder.mul(stride, d)
            ary = context.make_array(arrty)(context, builder)
            data = builder.inttoptr(args[0], context.get_data_type(dtype).as_pointer())
            context.populate_array(ary, data=data, shape=cgutils.pack_array(builder, dims_in),
                                   strides=cgutils.pack_array(builder, strides),
                                   itemsize=ir.Constant(i64, itemsize), meminfo=None)
            return ary._getvalue()
        return sig, codegen
    at.__name__ = f"{dtype}_{ndim}d_at"
    return at


#: arrays rebuilt from the context's addresses and shapes
float64_at, float64_2d_at = _array_at(types.float64, 1), _array_at(types.float64, 2)
int32_at, int32_2d_at = _array_at(types.int32, 1), _array_at(types.int32, 2)
uint8_at = _array_at(types.uint8, 1)


@intrinsic
def context(typingctx, ins, cv, consts, idx, plan, v, dv, g, dg, tmp, P):
    """The kernels' context on the caller's stack: the arrays' addresses and shapes (C
    contiguous arrays only: the kernels index them as such) and P."""
    arrays = (ins, cv, consts, idx, plan, v, dv, g, dg, tmp)
    if not all(isinstance(a, types.Array) and a.layout == "C" and a.ndim in (1, 2) for a in arrays):
        return None
    if not isinstance(P, types.Integer):
        return None
    sig = types.CPointer(types.int64)(*arrays, P)

    def codegen(cgctx, builder, signature, args):
        i64 = ir.IntType(64)
        words = cgutils.alloca_once(builder, ir.ArrayType(i64, CONTEXT_WORDS), name="tapejit_kernel_context")

        def put(k, value):
            builder.store(value, builder.gep(words, [ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), k)]))
        for r, (ty, value) in enumerate(zip(signature.args[:-1], args[:-1])):
            ary = cgctx.make_array(ty)(cgctx, builder, value)
            shape = cgutils.unpack_tuple(builder, ary.shape, ty.ndim)
            put(3 * r, builder.ptrtoint(ary.data, i64))
            put(3 * r + 1, shape[0])
            put(3 * r + 2, shape[1] if ty.ndim == 2 else ir.Constant(i64, 1))
        put(P_WORD, cgctx.cast(builder, args[-1], signature.args[-1], types.int64))
        return builder.bitcast(words, i64.as_pointer())
    return sig, codegen


def kernel_caller(module: str, sweep: str):
    """An intrinsic ``call(op, i, ctx)`` for ``module``'s ``sweep``: runs the kernel of
    opcode ``op`` on instruction ``i`` through the sweep's table (resolved on first use;
    an opcode past the table does nothing, as validate() refuses such tapes)."""
    key = f"{module}:{sweep}"

    @intrinsic
    def call(typingctx, op, i, ctx):
        if not (isinstance(op, types.Integer) and isinstance(i, types.Integer)
                and ctx == types.CPointer(types.int64)):
            return None

        def codegen(context, builder, signature, args):
            i64, voidptr = ir.IntType(64), ir.IntType(8).as_pointer()
            code = context.cast(builder, args[0], signature.args[0], types.int64)
            index = context.cast(builder, args[1], signature.args[1], types.int64)
            table = cgutils.add_global_variable(builder.module, ir.ArrayType(voidptr, N_OPS),
                                                f"tapejit_kernels.{key}")
            table.linkage = "internal"
            table.initializer = ir.Constant(ir.ArrayType(voidptr, N_OPS), None)
            fnty = context.call_conv.get_function_type(types.none, KERNEL_ARGS)
            null = ir.Constant(voidptr, None)
            with builder.if_then(builder.icmp_unsigned("<", code, ir.Constant(i64, N_OPS)), likely=True):
                slot = builder.gep(table, [ir.Constant(i64, 0), code])
                with builder.if_then(builder.icmp_unsigned("==", builder.load_atomic(slot, "monotonic", 8), null),
                                     likely=False):
                    resolver = cgutils.get_or_insert_function(
                        builder.module, ir.FunctionType(voidptr, [voidptr, i64]), _RESOLVER_SYMBOL)
                    found = builder.call(resolver, [context.insert_const_string(builder.module, key), code])
                    with builder.if_then(builder.icmp_unsigned("==", found, null), likely=False):
                        context.call_conv.return_user_exc(builder, RuntimeError,
                                                          (f"tapejit could not compile a kernel of {key}",))
                    builder.store_atomic(found, slot, "monotonic", 8)
                fn = builder.bitcast(builder.load_atomic(slot, "monotonic", 8), fnty.as_pointer())
                status, _ = context.call_conv.call_function(builder, fn, types.none, KERNEL_ARGS,
                                                            [index, args[2]])
                with cgutils.if_unlikely(builder, status.is_error):
                    context.call_conv.return_status_propagate(builder, status)
            return context.get_dummy_value()
        return types.none(op, i, ctx), codegen

    call.__name__ = f"run_{sweep}"
    return call
