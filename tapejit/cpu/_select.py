"""``select(cond, x, y)``: ``x if cond else y`` as one LLVM ``select`` instruction.

The CPU sweeps' SIMD loops write a zero adjoint's contribution as
``(g_o * partial) if g_o != 0.0 else 0.0``, and ``where`` as ``b if a != 0.0 else d``.
Numba lowers a conditional expression to branches; LLVM then sinks the operand loads into
the branch that uses them and, unable to prove the load safe on the other lanes, vectorizes
it as a masked load (``vmaskmovpd``). On a Zen 1 EPYC those masked loads doubled the time
of add_scaled_square's reverse loop (11.0 -> 5.5 ns a point with a select). A select
keeps both sides unconditional, so the loads stay plain vector loads; both sides are then
always computed, as a vectorized branch computes them anyway.
"""
from __future__ import annotations

from numba import types
from numba.extending import intrinsic


@intrinsic
def select(typingctx, cond, if_true, if_false):
    """float64 ``if_true`` where ``cond`` holds, else ``if_false``; both are evaluated."""
    numbers = (types.Float, types.Integer, types.Boolean)
    if not isinstance(cond, types.Boolean) or not all(isinstance(t, numbers) for t in (if_true, if_false)):
        return None
    sig = types.float64(cond, if_true, if_false)

    def codegen(context, builder, signature, args):
        flag, x, y = args
        x = context.cast(builder, x, signature.args[1], types.float64)
        y = context.cast(builder, y, signature.args[2], types.float64)
        return builder.select(flag, x, y)
    return sig, codegen
