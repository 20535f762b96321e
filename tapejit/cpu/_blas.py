"""Matrix products of the one-point CPU sweeps through BLAS (``dgemm``).

The opcode table's ``matmul`` row names these calls for the one-point sweeps (its
``blas`` field); every other target runs the row's loops. Row-major matrices are
handed to the column-major BLAS as their transposes, as numba's own ``np.dot`` does:
C = A @ B is C^T = B^T @ A^T. The sweeps see the tape as one flat float64 array, so a
matrix is an (array, first slot) pair, addressed by :func:`at`.

The BLAS is SciPy's (``scipy.linalg.cython_blas``), reached through Numba's helper
``numba_xxgemm``, which looks it up on first call; that keeps the kernels cacheable on
disk (a ctypes pointer would bake an address into them). A nonzero status (no SciPy)
sends the caller back to the loops.

Below :data:`BLAS_MIN_WORK` multiply-adds the loops win: a dgemm call costs about
1 us of checks and packing, the loops a nanosecond per multiply-add or less.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: multiply-adds (p*q*r) from which a product goes to BLAS (16x16x16)
BLAS_MIN_WORK = 4096

_N, _T = ord("n"), ord("t")


@intrinsic
def at(typingctx, array, slot):
    """The address of ``array[slot]`` (a 1-D float64 array), as an integer."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.dtype == types.float64
            and isinstance(slot, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.ptrtoint(builder.gep(ary.data, [index]), ir.IntType(64))
    return types.int64(array, slot), codegen


@intrinsic
def _dgemm(typingctx, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Column-major C = op(A) @ op(B) + beta * C (alpha 1) on addresses; 0 on success."""
    ints = (transa, transb, m, n, k, a, lda, b, ldb, c, ldc)
    if not all(isinstance(t, types.Integer) for t in ints) or not isinstance(beta, types.Float):
        return None
    sig = types.int32(transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        char, i64, double = ir.IntType(8), ir.IntType(64), ir.DoubleType()
        voidptr = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char, i64, i64, i64, voidptr, voidptr, i64,
                                                voidptr, i64, voidptr, voidptr, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")

        def arg(k, ty):
            return context.cast(builder, args[k], signature.args[k], ty)
        alpha = cgutils.alloca_once_value(builder, ir.Constant(double, 1.0))
        beta_slot = cgutils.alloca_once_value(builder, arg(9, types.float64))
        call = [ir.Constant(char, ord("d")), builder.trunc(arg(0, types.int64), char),
                builder.trunc(arg(1, types.int64), char), arg(2, types.int64), arg(3, types.int64),
                arg(4, types.int64), builder.bitcast(alpha, voidptr),
                builder.inttoptr(arg(5, types.int64), voidptr), arg(6, types.int64),
                builder.inttoptr(arg(7, types.int64), voidptr), arg(8, types.int64),
                builder.bitcast(beta_slot, voidptr), builder.inttoptr(arg(10, types.int64), voidptr),
                arg(11, types.int64)]
        return builder.call(fn, call)
    return sig, codegen


_JIT = dict(cache=True, nogil=True, _nrt=False)


@njit(**_JIT)
def gemm_nn(out, x, y, p, q, r, beta):
    """out(p, r) = x(p, q) @ y(q, r) + beta * out (addresses of row-major blocks)."""
    return _dgemm(_N, _N, r, p, q, y, r, x, q, beta, out, r)


@njit(**_JIT)
def gemm_nt(out, x, y, p, q, r):
    """out(p, q) += x(p, r) @ y(q, r).T"""
    return _dgemm(_T, _N, q, p, r, y, r, x, r, 1.0, out, q)


@njit(**_JIT)
def gemm_tn(out, x, y, p, q, r):
    """out(q, r) += x(p, q).T @ y(p, r)"""
    return _dgemm(_N, _T, r, q, p, y, r, x, q, 1.0, out, r)
