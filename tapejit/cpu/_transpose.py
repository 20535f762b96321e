"""Moving a chunk of points between the caller's layout and the batch engine's.

The caller's arrays are point-major (``X[p, j]``: one row per point); the engine's
workspace is slot-major (``v[slot, p]``: one row per slot, so that every instruction is a
SIMD loop over points). Each chunk is transposed on the way in (inputs, seeds) and on the
way out (values, derivatives). Element by element, a transpose is a strided load or store
per value, about 4 cycles each; here it goes in 4 x 4 blocks held in registers: four
vector loads, eight shuffles, four vector stores for 16 values. Measured on the 2-core
box, B1's 80 MB of points went in at 4.7 ms instead of 5.8, and its 80 MB of gradients
out at 4.8 ms instead of 6.0 with streaming stores (8.2 without); one core alone: 7.8 ms
against 17.8 in, 8.1 against 11.7 out.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ..errors import ShapeError

# _nrt=False: nothing here allocates, so array arguments go without reference counts
# (atomic instructions; see tapejit/passes/program.py)
_JIT = dict(cache=True, nogil=True, error_model="numpy", _nrt=False)


@intrinsic
def _transpose4(typingctx, src, s0, s1, s2, s3, dst, d0, d1, d2, d3):
    """dst[d_k + r] = src[s_r + k] for r, k in 0..3, offsets counted in elements from
    the first of the C-contiguous arrays src and dst: four runs of four values each read
    as one vector and written as the four columns. The caller keeps every offset in
    bounds (Numba's bounds checks do not see inside an intrinsic)."""
    offsets = (s0, s1, s2, s3, d0, d1, d2, d3)
    if not all(isinstance(t, types.Integer) for t in offsets):
        return None
    # flat offsets from the first element are only right for C-contiguous arrays: other
    # layouts fail to compile instead of reading or writing the wrong memory
    if not all(isinstance(a, types.Array) and a.layout == "C" for a in (src, dst)):
        return None
    sig = types.void(src, s0, s1, s2, s3, dst, d0, d1, d2, d3)

    def codegen(context, builder, signature, args):
        vector = ir.VectorType(ir.DoubleType(), 4)
        argtypes = signature.args

        def pointer(array_at, offset_at):
            data = context.make_array(argtypes[array_at])(context, builder, args[array_at]).data
            offset = context.cast(builder, args[offset_at], argtypes[offset_at], types.intp)
            return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())

        rows = [builder.load(pointer(0, 1 + r), align=8) for r in range(4)]

        def shuffle(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 4), mask))

        # pairs of rows interleaved, then pairs of pairs: unpcklpd/unpckhpd and vperm2f128
        even01, odd01 = shuffle(rows[0], rows[1], [0, 4, 2, 6]), shuffle(rows[0], rows[1], [1, 5, 3, 7])
        even23, odd23 = shuffle(rows[2], rows[3], [0, 4, 2, 6]), shuffle(rows[2], rows[3], [1, 5, 3, 7])
        columns = (shuffle(even01, even23, [0, 1, 4, 5]), shuffle(odd01, odd23, [0, 1, 4, 5]),
                   shuffle(even01, even23, [2, 3, 6, 7]), shuffle(odd01, odd23, [2, 3, 6, 7]))
        for k in range(4):
            builder.store(columns[k], pointer(5, 6 + k), align=8)
        return context.get_dummy_value()
    return sig, codegen


@njit(**_JIT)
def _checked_sizes(v, rows, points, p0, P):
    """(columns, row width, points and columns in whole 4 x 4 blocks) of a move, once it
    is known to stay inside both arrays."""
    n = rows.shape[0]
    if n != points.shape[1] or p0 < 0 or P < 0 or p0 + P > points.shape[0] or P > v.shape[1]:
        raise ShapeError("a chunk does not fit the batch or the workspace")
    for j in range(n):
        if rows[j] < 0 or rows[j] >= v.shape[0]:
            raise ShapeError("a workspace row is out of range")
    return n, v.shape[1], P - P % 4, n - n % 4


@njit(inline="always", **_JIT)
def _points_to_rows_block(v, rows, X, n, width, p0, P4, j):
    """Columns j..j+3 of the chunk's first P4 points into their four rows."""
    r0, r1, r2, r3 = rows[j] * width, rows[j + 1] * width, rows[j + 2] * width, rows[j + 3] * width
    for p in range(0, P4, 4):
        s = (p0 + p) * n + j
        _transpose4(X, s, s + n, s + 2 * n, s + 3 * n, v, r0 + p, r1 + p, r2 + p, r3 + p)


@njit(inline="always", **_JIT)
def _rows_to_points_block(out, v, rows, n, width, d, p, j):
    """Rows j..j+3 at points p..p+3 of the chunk into columns j..j+3 from flat offset d."""
    _transpose4(v, rows[j] * width + p, rows[j + 1] * width + p, rows[j + 2] * width + p,
                rows[j + 3] * width + p, out, d + j, d + n + j, d + 2 * n + j, d + 3 * n + j)


# Both moves index the 2-d arrays directly, never through flat views: a reshape costs a
# helper call (~16 ns), which at 128 points a chunk and three moves was ~1 ns a point.
@njit(**_JIT)
def points_to_rows(v, rows, X, p0, P):
    """v[rows[j], p] = X[p0 + p, j] for the chunk's P points, and the last point again in
    the rest of each row, so that the sweeps can always run whole rows, on inputs a user
    kernel accepts (a block primitive's solve raises on zeros). X is C-contiguous."""
    n, width, P4, n4 = _checked_sizes(v, rows, X, p0, P)
    for j in range(0, n4, 4):
        _points_to_rows_block(v, rows, X, n, width, p0, P4, j)
    if n4 < n and n >= 4:
        # the last, partial group of columns as a whole block ending at column n - 1:
        # it rewrites a few rows with the values they already hold
        _points_to_rows_block(v, rows, X, n, width, p0, P4, n - 4)
    else:
        for j in range(n4, n):
            r = rows[j]
            for p in range(P4):
                v[r, p] = X[p0 + p, j]
    for j in range(n):
        r = rows[j]
        for p in range(P4, P):
            v[r, p] = X[p0 + p, j]
        pad = X[p0 + P - 1, j] if P > 0 else 0.0
        for p in range(P, width):
            v[r, p] = pad


@njit(**_JIT)
def rows_to_points(out, v, rows, p0, P, clear):
    """out[p0 + p, j] = v[rows[j], p]; with ``clear`` the rows are zeroed after. ``out``
    is C-contiguous."""
    n, width, P4, n4 = _checked_sizes(v, rows, out, p0, P)
    # with n >= 4 the last, partial group of columns goes as a whole block ending at
    # column n - 1, rewriting a few results with the same values
    whole = n4 < n and n >= 4
    for p in range(0, P4, 4):
        d = (p0 + p) * n
        for j in range(0, n4, 4):
            _rows_to_points_block(out, v, rows, n, width, d, p, j)
        if whole:
            _rows_to_points_block(out, v, rows, n, width, d, p, n - 4)
    if not whole:
        for j in range(n4, n):
            r = rows[j]
            for p in range(P4):
                out[p0 + p, j] = v[r, p]
    for j in range(n):
        r = rows[j]
        for p in range(P4, P):
            out[p0 + p, j] = v[r, p]
    if clear:
        for j in range(n):
            r = rows[j]
            for p in range(width):
                v[r, p] = 0.0


# Plain loops, one function for both directions: a strided load or store per value,
# slower than the 4 x 4 blocks by about 0.1 ns a value (B1's 1e7 values in: 1.1 ms), but
# one small function to compile (0.2 s) where the block moves and their check are three
# (1.0 s of a first batch_grad's compilation on the 2-core box). Inlined in the drivers,
# their four call sites made the drivers' own compile 0.8-1 s longer. The batch engine
# takes the blocks for large batches and once it runs hot.
@njit(**_JIT)
def move_plain(v, rows, points, p0, P, into_rows, clear):
    """into_rows: points_to_rows(v, rows, points, p0, P); otherwise
    rows_to_points(points, v, rows, p0, P, clear); value by value."""
    n, width = rows.shape[0], v.shape[1]
    if n != points.shape[1] or p0 < 0 or P < 0 or p0 + P > points.shape[0] or P > width:
        raise ShapeError("a chunk does not fit the batch or the workspace")
    for j in range(n):
        r = rows[j]
        if r < 0 or r >= v.shape[0]:
            raise ShapeError("a workspace row is out of range")
        if into_rows:
            for p in range(P):
                v[r, p] = points[p0 + p, j]
            pad = points[p0 + P - 1, j] if P > 0 else 0.0
            for p in range(P, width):
                v[r, p] = pad
        else:
            for p in range(P):
                points[p0 + p, j] = v[r, p]
            if clear:
                for p in range(width):
                    v[r, p] = 0.0
