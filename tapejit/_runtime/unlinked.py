"""Calls from one jitted function to another that do not copy the callee into the caller.

Numba links a callee's whole LLVM module into every caller and optimizes and
code-generates it again there (``CPUCodeLibrary.finalize``): a small driver that calls
``reverse_chunk`` (100 s to compile) paid 15 s compiling it again, and every driver, tile
runner and optimizer loop paid that for each sweep it reaches, about 200 s of a cold test
run. ``unlinked(f)`` returns a callable for jitted code that calls ``f``'s compiled code
through a pointer instead, so the caller's module holds only the call.

The pointer is found when the call site first runs in a process, not when the caller is
compiled: a caller loaded from Numba's disk cache then calls the callee of this process,
whatever was compiled or loaded before it. Each call site keeps the pointer in a global of
its own module; while that is null the site asks ``resolve`` (a C callback into Python)
for it, passing the callee's module, name and argument types, pickled into a string
constant of the caller's code. A callee that fails to compile raises in the caller.

Typing a call needs the callee's return type. Given as ``restype``, the callee is not
compiled with the caller but when the call first runs, so a driver whose rarely taken
branch calls a large function (the tiled path of a short tape) does not pay for it; the
declared type is checked against the compiled one before the pointer is used.
"""
from __future__ import annotations

import ctypes
import importlib
import pickle
import traceback

from llvmlite import binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_RESOLVER_SYMBOL = "tapejit_unlinked_resolve"
_addresses: dict[bytes, int] = {}


def _compiled(module: str, name: str, argtypes: tuple, restype=None):
    """The callee's compile result for these argument types (compiled or loaded now);
    refused if it does not return ``restype`` (when given)."""
    dispatcher = getattr(importlib.import_module(module), name)
    dispatcher.compile(argtypes)
    cres = dispatcher.overloads[argtypes]
    if restype is not None and cres.signature.return_type != restype:
        raise TypeError(f"{module}.{name} returns {cres.signature.return_type}, its call sites expect {restype}")
    return cres


@ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
def _resolve(key: bytes) -> int:
    """The address of the callee named by ``key`` (hex of a pickle), or 0 if it cannot be
    compiled (the call site then raises)."""
    try:
        if key not in _addresses:
            cres = _compiled(*pickle.loads(bytes.fromhex(key.decode("ascii"))))
            _addresses[key] = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        return _addresses[key]
    except Exception:       # a C caller cannot take a Python exception: report, return 0
        traceback.print_exc()
        return 0


ll.add_symbol(_RESOLVER_SYMBOL, ctypes.cast(_resolve, ctypes.c_void_p).value)


def unlinked(dispatcher, restype=None):
    """A jitted-code callable that calls ``dispatcher`` without linking its code in;
    with ``restype`` (a Numba type), compiled only when a call first runs."""
    if not hasattr(dispatcher, "py_func"):     # NUMBA_DISABLE_JIT=1: plain Python calls
        return dispatcher
    module, name = dispatcher.py_func.__module__, dispatcher.py_func.__name__

    @intrinsic
    def call(typingctx, *args):
        # Numba hands a star parameter over as one tuple type, and its value as one tuple
        packed = args[0] if len(args) == 1 and isinstance(args[0], types.StarArgTuple) else types.StarArgTuple(args)
        argtypes = tuple(types.unliteral(a) for a in packed.types)
        returns = restype if restype is not None else _compiled(module, name, argtypes).signature.return_type

        def codegen(context, builder, sig, packed_value):
            llargs = [context.cast(builder, value, given, wanted) for value, given, wanted
                      in zip(cgutils.unpack_tuple(builder, packed_value[0]), packed.types, argtypes)]
            key = pickle.dumps((module, name, argtypes, returns)).hex()
            fnty = context.call_conv.get_function_type(returns, argtypes)
            pointer = _site_pointer(context, builder, key, f"{module}.{name}")
            fn = builder.bitcast(pointer, fnty.as_pointer())
            status, result = context.call_conv.call_function(builder, fn, returns, argtypes, llargs)
            with cgutils.if_unlikely(builder, status.is_error):
                context.call_conv.return_status_propagate(builder, status)
            return result
        return returns(packed), codegen

    call.__name__ = f"unlinked_{name}"
    return call


def _site_pointer(context, builder, key: str, what: str):
    """The callee's address: this call site's cached pointer, resolved on first use."""
    voidptr = ir.IntType(8).as_pointer()
    slot = cgutils.add_global_variable(builder.module, voidptr, f"tapejit_unlinked_site.{what}")
    slot.linkage = "internal"
    slot.initializer = ir.Constant(voidptr, None)
    with builder.if_then(builder.icmp_unsigned("==", builder.load_atomic(slot, "monotonic", 8),
                                               ir.Constant(voidptr, None)), likely=False):
        resolver = cgutils.get_or_insert_function(builder.module, ir.FunctionType(voidptr, [voidptr]),
                                                  _RESOLVER_SYMBOL)
        address = builder.call(resolver, [context.insert_const_string(builder.module, key)])
        with builder.if_then(builder.icmp_unsigned("==", address, ir.Constant(voidptr, None)), likely=False):
            context.call_conv.return_user_exc(builder, RuntimeError, (f"tapejit could not compile {what}",))
        builder.store_atomic(address, slot, "monotonic", 8)
    return builder.load_atomic(slot, "monotonic", 8)
