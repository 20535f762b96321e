"""Vectorizable transcendental functions for the CPU sweeps: exp, expm1, log, log1p, sin,
cos, tan, asin, acos, atan, atan2, sinh, cosh, tanh and erf.

Numba lowers ``math.exp`` and friends to calls into the C library, one value per call:
a loop over a chunk of points that calls them cannot become SIMD code (llvmlite's
wheels have no vector math library), and a logistic loss spent most of its time in
``log1p(exp(...))``. These are fdlibm's and Cephes' algorithms (Cody-Waite reduction by
ln 2, Payne-Hanek reduction by pi/2, polynomials and rational forms, exponent arithmetic
on the bits) written without branches: every lane computes each form it might need and
selects its own (``select``), special values are selected at the end, and constants that
depend on the argument come out of select trees, not tables (see ``_piece_selector_source``),
so that every operation has a vector form. Those that call helpers are inlined by Numba
(``inline="always"``): left to LLVM's inliner, a large one stays a call and its loop scalar.

Accuracy (tests/cpu/test_vmath.py, random sweeps of the whole double range, numpy's worst
cases checked against mpmath at 120 bits): exp, log, log1p, atan within 1 ulp of numpy;
expm1 within 2 (its remainder's rounding, doubled when k = 1); tanh within 2 of numpy and 1
of mpmath; erf within 2 of scipy and of mpmath; sin, cos, tan, asin, acos, sinh, cosh and
atan2 within 1 of numpy and of mpmath (sin, cos and tan also at the double closest to a
multiple of pi/2, where numpy's cos is 8 ulp off). Special values (+-0, +-inf, NaN,
overflow, underflow, subnormals) as C99 says.

Only the CPU sweeps use them: CUDA's libdevice functions are already vector-friendly.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from ._select import select

# "contract" lets LLVM fuse each a * b + c into one FMA: the Cody-Waite steps and the
# polynomials get no less accurate (one rounding, not two), and exp runs 1.27x faster,
# the softplus partial 1.22x (tests/cpu/test_vmath.py keeps the same ulp bounds). It applies
# to these functions' own instructions only, also once inlined into the sweeps.
_INLINE = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})

_LOG2E = 1.4426950408889634
# ln 2 split in two: _LN2_HI has 32 trailing zero bits, so k * _LN2_HI is exact for |k| < 2**20
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = 1.4142135623730951
# 1.5 * 2**52: adding it to |t| < 2**51 rounds t to an integer held in the low bits of the
# sum. AVX2 has no vector conversion between double and int64: math.floor() to an int
# and float() back are done one lane at a time, the costliest part of exp and log
_ROUNDER = 6755399441055744.0
_ROUNDER_BITS = 0x4338000000000000
_MANTISSA = 0x000FFFFFFFFFFFFF
_ONE_BITS = 0x3FF0000000000000
# fdlibm's minimax coefficients for log(1 + f) = 2s + s*R(s*s), s = f / (2 + f)
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01


@intrinsic
def _float_from_bits(typingctx, bits):
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma: a vector instruction where the CPU has it),
    whatever fastmath flags the function it is inlined into has."""
    if not all(isinstance(t, types.Float) for t in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        x, y, z = (context.cast(builder, v, t, types.float64) for v, t in zip(args, signature.args))
        return builder.fma(x, y, z)
    return types.float64(a, b, c), codegen


@intrinsic
def _bits_of(typingctx, x):
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@njit(**_INLINE)
def _pow2(k):
    """2.0**k for a normal exponent, -1022 <= k <= 1023."""
    return _float_from_bits((k + 1023) << 52)


@njit(**_INLINE)
def _expm1_reduced(r):
    """expm1(r) for |r| <= ln(2)/2: Taylor to r**14 (truncation below 1e-17), the
    polynomial r + r**2 q(r) evaluated by Estrin's scheme: a third of Horner's dependency
    chain, which is what one value at a time waits for."""
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    p01 = 0.5 + r * (1.0 / 6.0)
    p23 = 1.0 / 24.0 + r * (1.0 / 120.0)
    p45 = 1.0 / 720.0 + r * (1.0 / 5040.0)
    p67 = 1.0 / 40320.0 + r * (1.0 / 362880.0)
    p89 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0)
    p1011 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0)
    q = (p01 + r2 * p23) + r4 * (p45 + r2 * p67) + r8 * ((p89 + r2 * p1011) + r4 * (1.0 / 87178291200.0))
    return r + r2 * q


@njit(**_INLINE)
def _reduce(x, lo, hi):
    """x clamped to [lo, hi] (NaN kept out: it becomes 0 and is selected back at the
    end), the nearest integer k to x / ln 2 (ties to even) and the remainder r = x - k ln 2."""
    xc = hi if x > hi else x
    xc = lo if xc < lo else xc
    xc = xc if xc == xc else 0.0
    rounded = xc * _LOG2E + _ROUNDER
    k = _bits_of(rounded) - _ROUNDER_BITS
    kf = rounded - _ROUNDER
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    return k, r


@njit(**_INLINE)
def exp(x):
    # past these bounds exp is inf or 0; the clamp keeps 2**k in two normal factors
    k, r = _reduce(x, -746.0, 710.0)
    half = k >> 1
    y = ((1.0 + _expm1_reduced(r)) * _pow2(half)) * _pow2(k - half)
    return y if x == x else x


@njit(**_INLINE)
def expm1(x):
    # below -50, expm1 rounds to -1
    k, r = _reduce(x, -50.0, 710.0)
    em = _expm1_reduced(r)
    # k < 64: 2**k em + (2**k - 1), one rounding (two for k > 53, each under half an
    # ulp); beyond, expm1 is 2**k (1 + em) to the last bit, scaled in two steps so that
    # k = 1024 can round to the largest double
    small = k < 64
    t = _pow2(k if small else 0)
    near = t * em + (t - 1.0)
    half = k >> 1
    far = ((1.0 + em) * _pow2(0 if small else half)) * _pow2(0 if small else k - half)
    y = near if small else far
    # expm1(±0) = ±0; NaN stays NaN
    return x if (x == 0.0) | (x != x) else y


@njit(**_INLINE)
def _log_normal(u):
    """log(u) for a positive normal finite u (fdlibm's e_log.c without its branches)."""
    bits = _bits_of(u)
    e = (bits >> 52) - 1023
    m = _float_from_bits((bits & _MANTISSA) | _ONE_BITS)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    dk = _float_from_bits(e + _ROUNDER_BITS) - _ROUNDER
    return _log_reduced(m - 1.0, dk, dk * _LN2_LO)


@njit(**_INLINE)
def _log_reduced(f, dk, lo):
    """dk ln 2 + log(1 + f) for sqrt(2)/2 - 1 <= f <= sqrt(2) - 1: fdlibm's polynomial in
    s = f / (2 + f). lo is the low part, dk times ln 2's low bits plus any correction."""
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    R = t2 + t1
    hfsq = 0.5 * f * f
    return dk * _LN2_HI - ((hfsq - (s * (hfsq + R) + lo)) - f)


@njit(**_INLINE)
def log(x):
    # subnormals: scale into the normal range first
    tiny = x < 2.2250738585072014e-308
    u = x * 18014398509481984.0 if tiny else x
    y = _log_normal(u if u > 0.0 else 1.0)
    y = y - 37.42994775023704 if tiny else y                # 54 ln 2
    y = -math.inf if x == 0.0 else y
    y = math.nan if x < 0.0 else y
    return x if (x == math.inf) | (x != x) else y


@njit(**_INLINE)
def log1p(x):
    u = 1.0 + x
    ok = (u > 0.0) & (u < math.inf)
    us = u if ok else 1.0
    # u = 1 + x rounded; (x - (u - 1)) / u puts the rounding error back (fdlibm's c/u)
    y = _log_normal(us) + (x - (us - 1.0)) / us
    y = -math.inf if u == 0.0 else y
    y = math.nan if u < 0.0 else y
    # log1p(±0) = ±0, log1p(inf) = inf, NaN stays NaN
    return x if (x == 0.0) | (x == math.inf) | (x != x) else y


@njit(**_INLINE)
def log1p_unit(t):
    """log1p(t) for 0 <= t <= 1, or NaN: what softplus takes of exp(-|a|).

    There 1 + t lies in [1, 2], so log1p's reduction needs no exponent bits: 1 + t is
    1 + f or 2 (1 + f) with f exact, and k is 0 or 1. A loop of softplus over 4,096
    values went from 6.5 to 4.2 ns a value on the 2-core dev box."""
    u = 1.0 + t
    c = (t - (u - 1.0)) / u           # the rounding of 1 + t, put back as in log1p
    big = u > _SQRT2
    f = u * 0.5 - 1.0 if big else u - 1.0
    dk = 1.0 if big else 0.0
    return _log_reduced(f, dk, dk * _LN2_LO + c)


# Cephes' rational approximation of tanh on |x| < 0.625: x + x^3 P(x^2) / Q(x^2)
_TANH_P0 = -9.64399179425052238628e-01
_TANH_P1 = -9.92877231001918586564e+01
_TANH_P2 = -1.61468768441708447952e+03
_TANH_Q0 = 1.12811678491632931402e+02
_TANH_Q1 = 2.23548839060100448583e+03
_TANH_Q2 = 4.84406305325125486048e+03


@njit(**_INLINE)
def tanh(x):
    """Cephes' method without its branches: the rational form below 0.625, above it
    1 - 2 / (exp(2|x|) + 1) with the sign put back; past |x| = 22, tanh rounds to +-1.
    Both forms are base + num / den: the lanes select their terms, then divide once.
    select(), not ``a if c else b``: Numba lowers a conditional expression to branches,
    and LLVM then left the loops calling tanh scalar (1.08 ms over 115,008 values; 0.2 ms
    vectorized)."""
    ax = abs(x)
    z = x * x
    small = ax < 0.625
    e = exp(2.0 * select(ax < 22.0, ax, 22.0))
    num = select(small, x * z * ((_TANH_P0 * z + _TANH_P1) * z + _TANH_P2), -2.0)
    den = select(small, ((z + _TANH_Q0) * z + _TANH_Q1) * z + _TANH_Q2, e + 1.0)
    y = select(small, x, 1.0) + num / den
    y = select(small | (x > 0.0), y, -y)
    # tanh(+-0) = +-0 (the rational form gives +0 for -0); NaN stays NaN
    return select((x == 0.0) | (x != x), x, y)


# Cephes' atan: after reduction to |x| <= 0.66, atan(x) = x + x z P(z) / Q(z), z = x^2
_ATAN_P = (-8.750608600031904122785e-01, -1.615753718733365076637e+01, -7.500855792314704667340e+01,
           -1.228866684490136173410e+02, -6.485021904942025371773e+01)
_ATAN_Q = (2.485846490142306297962e+01, 1.650270098316988542046e+02, 4.328810604912902668951e+02,
           4.853903996359136964868e+02, 1.945506571482613964425e+02)
_T3P8 = 2.41421356237309504880          # tan(3 pi / 8)
_MOREBITS = 6.123233995736765886130e-17  # pi/2 - its double


@njit(**_INLINE)
def atan(x):
    """Cephes' method without its branches: |x| > tan(3 pi/8) reduces by pi/2 - atan(1/|x|),
    |x| > 0.66 by pi/4 + atan((|x| - 1) / (|x| + 1)); each lane selects its numerator and
    denominator, then divides once."""
    ax = abs(x)
    big = ax > _T3P8
    mid = (ax > 0.66) & ~big
    num = -1.0 if big else (ax - 1.0 if mid else ax)
    den = ax if big else (ax + 1.0 if mid else 1.0)
    r = num / den
    z = r * r
    p = (((_ATAN_P[0] * z + _ATAN_P[1]) * z + _ATAN_P[2]) * z + _ATAN_P[3]) * z + _ATAN_P[4]
    q = ((((z + _ATAN_Q[0]) * z + _ATAN_Q[1]) * z + _ATAN_Q[2]) * z + _ATAN_Q[3]) * z + _ATAN_Q[4]
    y = r * z * p / q + r
    base = 1.5707963267948966 if big else (0.7853981633974483 if mid else 0.0)
    extra = _MOREBITS if big else (0.5 * _MOREBITS if mid else 0.0)
    y = base + (y + extra)
    y = y if x >= 0.0 else -y
    # atan(+-0) = +-0, NaN stays NaN; atan(+-inf) = +-pi/2 comes out of the reduction
    return x if (x == 0.0) | (x != x) else y


# Cephes' erf: x T(x^2) / U(x^2) below |x| = 1, else 1 - exp(-x^2) P(|x|) / Q(|x|)
# (U and Q monic); past |x| = 6, erf rounds to +-1
_ERF_T = (9.60497373987051638749e+00, 9.00260197203842689217e+01, 2.23200534594684319226e+03,
          7.00332514112805075473e+03, 5.55923013010394962768e+04)
_ERF_U = (3.35617141647503099647e+01, 5.21357949780152679795e+02, 4.59432382970980127987e+03,
          2.26290000613890934246e+04, 4.92673942608635921086e+04)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-01, 7.46321056442269912687e+00,
           4.86371970985681366614e+01, 1.96520832956077098242e+02, 5.26445194995477358631e+02,
           9.34528527171957607540e+02, 1.02755188689515710272e+03, 5.57535335369399327526e+02)
_ERFC_Q = (1.32281951154744992508e+01, 8.67072140885989742329e+01, 3.54937778887819891062e+02,
           9.75708501743205489753e+02, 1.82390916687909736289e+03, 2.24633760818710981792e+03,
           1.65666309194161350182e+03, 5.57535340817727675546e+02)


# x T / U = x + x (T - U) / U: the quotient is then a small correction to x, and its
# rounding counts for less (Cephes' own form reached 3 ulp near 0; this one stays within 2)
_ERF_D = tuple(t - u for t, u in zip(_ERF_T, _ERF_U))


@njit(inline="always", **_INLINE)
def erf(x):
    """Cephes' erf without its branches: each lane selects the small or the large form's
    numerator and denominator, then divides once. Inlined by Numba (``inline="always"``):
    left to LLVM, whose inliner finds it too large once exp is inlined into it, the loops
    calling erf stayed scalar (0.89 ms over 115,008 values)."""
    ax = abs(x)
    small = ax < 1.0
    z = x * x
    # Horner with explicit FMAs: inlined, the function has its caller's fastmath flags
    # (none in the sweeps), and without fused steps the small form reached 3 ulp near 1
    D, U, P, Q = _ERF_D, _ERF_U, _ERFC_P, _ERFC_Q
    t = _fma(_fma(_fma(_fma(D[0] - z, z, D[1]), z, D[2]), z, D[3]), z, D[4])
    u = _fma(_fma(_fma(_fma(z + U[0], z, U[1]), z, U[2]), z, U[3]), z, U[4])
    a = select(ax < 6.0, ax, 6.0)
    p = P[0]
    p = _fma(_fma(_fma(_fma(p, a, P[1]), a, P[2]), a, P[3]), a, P[4])
    p = _fma(_fma(_fma(_fma(p, a, P[5]), a, P[6]), a, P[7]), a, P[8])
    q = _fma(_fma(_fma(_fma(a + Q[0], a, Q[1]), a, Q[2]), a, Q[3]), a, Q[4])
    q = _fma(_fma(_fma(q, a, Q[5]), a, Q[6]), a, Q[7])
    e = exp(-(a * a))
    r = select(small, x * t, e * p) / select(small, u, q)
    y = select(small, x + r, 1.0 - r)
    y = select(small | (x > 0.0), y, -y)
    # erf(+-0) = +-0, NaN stays NaN
    return select((x == 0.0) | (x != x), x, y)


@njit(**_INLINE)
def fmod(a, b):
    """C's fmod for the CPU sweeps, which cannot take math.fmod (Numba has no lowering for
    it): numpy's, which Numba lowers to LLVM's frem, the same exact remainder."""
    return np.fmod(a, b)


# --------------------------------------------------------------------------------------
# sinh and cosh
# --------------------------------------------------------------------------------------
# Taylor coefficients 1/(2k+1)! and 1/(2k)!, k >= 1: below |x| = 1 the series to x^17
# (sinh) and x^18 (cosh) is exact to 1e-17, and adds a small correction to x (or 1), so
# its rounding is under an ulp; (e -+ 1/e) / 2 there would carry exp's error twice.
_SINH_TAYLOR = tuple(1.0 / math.factorial(2 * k + 1) for k in range(1, 9))
_COSH_TAYLOR = tuple(1.0 / math.factorial(2 * k) for k in range(1, 10))


@njit(**_INLINE)
def _poly8(z, c):
    """c[0] + c[1] z + ... + c[7] z^7, Estrin's scheme."""
    z2 = z * z
    z4 = z2 * z2
    return ((c[0] + c[1] * z) + z2 * (c[2] + c[3] * z)) + z4 * ((c[4] + c[5] * z) + z2 * (c[6] + c[7] * z))


@njit(**_INLINE)
def _exp_pm(ax, sign):
    """(e^ax + sign e^-ax) / 2 for 1 <= ax, to sinh's and cosh's overflow at 710.48.

    e^ax = 2^k (hi + lo) with hi + lo = e^r to 2^-60 (hi = 1 + expm1(r) rounded, lo its
    rounding error), so the result is rounded once, in m: with e^ax and e^-ax rounded
    first, sinh reached 2 ulp (at 1.437, and past 709.78 where exp overflows)."""
    k, r = _reduce(ax, 0.0, 711.0)
    em = _expm1_reduced(r)
    hi = 1.0 + em
    lo = (1.0 - hi) + em
    # e^-ax relative to e^ax: 2^-2k / e^r, nothing once k > 40
    inverse = _pow2(-2 * (k if k < 40 else 40)) / hi
    m = (hi + sign * inverse) + lo
    half = (k - 1) >> 1
    return (m * _pow2(half)) * _pow2(k - 1 - half)


@njit(inline="always", **_INLINE)
def sinh(x):
    ax = abs(x)
    z = x * x
    small = x + x * z * _poly8(z, _SINH_TAYLOR)
    large = _exp_pm(select(ax < 1.0, 1.0, ax), -1.0)
    y = select(ax < 1.0, small, select(x < 0.0, -large, large))
    # sinh(+-0) = +-0 and NaN come out of the series; past 711 it overflows to +-inf
    return select(ax < 711.0, y, x * math.inf)


@njit(inline="always", **_INLINE)
def cosh(x):
    ax = abs(x)
    z = x * x
    small = 1.0 + z * (_COSH_TAYLOR[0] + z * _poly8(z, _COSH_TAYLOR[1:]))
    large = _exp_pm(select(ax < 1.0, 1.0, ax), 1.0)
    y = select(ax < 711.0, select(ax < 1.0, small, large), math.inf)
    return select(x != x, x, y)


# --------------------------------------------------------------------------------------
# sin, cos and tan
# --------------------------------------------------------------------------------------
def _bits_of_inverse_two_pi(count: int) -> int:
    """floor(2^count / (2 pi)): the first `count` bits of 1/(2 pi), from Machin's formula
    in integer arithmetic (64 guard bits; tests/cpu/test_vmath.py checks them against mpmath)."""
    guard = count + 64
    one = 1 << guard

    def arctan_inverse(n):           # arctan(1/n) * 2^guard
        total, term, k, sign = 0, one // n, 1, 1
        while term:
            total += sign * (term // k)
            term //= n * n
            k += 2
            sign = -sign
        return total
    pi = 16 * arctan_inverse(5) - 4 * arctan_inverse(239)
    return (one << count) // (2 * pi)


#: 1/(2 pi) in 53-bit pieces: piece i holds bits 53 i + 1 .. 53 i + 53 after the binary
#: point, as an integer-valued double (the value is piece * 2^-53(i+1))
_INVERSE_TWO_PI_PIECES = 24
_INVERSE_TWO_PI = tuple(
    float((_bits_of_inverse_two_pi(53 * _INVERSE_TWO_PI_PIECES) >> (53 * (_INVERSE_TWO_PI_PIECES - 1 - i)))
          & ((1 << 53) - 1))
    for i in range(_INVERSE_TWO_PI_PIECES))
#: pieces a reduction uses, from the first one whose product with the mantissa is not all
#: integer: 5 x 53 bits reach 2^-160 beyond the point, past the 2^-61 closest approach of
#: a double to a multiple of pi / 2 (Ng's table) and the 53 bits of the remainder after it
_PIECES_USED = 5


def _piece_selector_source() -> str:
    """Source of ``_pieces_from(b4, b3, b2, b1, b0)``: pieces i .. i + 4 of 1/(2 pi), i the
    number with those bits, as a barrel shifter of selects over the constants.

    The pieces are selected, not loaded from a table: a table load at a computed index is
    a gather, and in the sweeps' kernels, whose arrays arrive as integer addresses, LLVM
    cannot tell a gather from the kernel's own stores ("cannot identify array bounds")
    and left every loop calling sin scalar (20 ns a value; 51 selects cost less)."""
    names = [repr(v) for v in _INVERSE_TWO_PI]
    lines = ["def _pieces_from(b4, b3, b2, b1, b0):"]
    for bit, shift in zip(("b4", "b3", "b2", "b1", "b0"), (16, 8, 4, 2, 1)):
        # after this stage, the shifts left reach shift - 1 further, and 5 pieces are kept;
        # beyond the last piece: zeros, which no exponent reaches (it stops at 18 + 4)
        keep = shift - 1 + _PIECES_USED
        names += ["0.0"] * (keep + shift - len(names))
        new = [f"select({bit}, {names[j + shift]}, {names[j]})" for j in range(keep)]
        lines.append(f"    # shift by {shift} where {bit}")
        lines += [f"    s{shift}_{j} = {expr}" for j, expr in enumerate(new)]
        names = [f"s{shift}_{j}" for j in range(keep)]
    lines.append(f"    return {', '.join(names)}")
    return "\n".join(lines) + "\n"


exec(compile(_piece_selector_source(), "<tapejit.cpu._vmath piece selector>", "exec"))
_pieces_from = njit(inline="always", nogil=True, error_model="numpy")(_pieces_from)  # noqa: F821

_TWO_P52 = 4503599627370496.0
_TWO_PI_HI = 6.283185307179586
_TWO_PI_LO = 2.4492935982947064e-16
_PIO4 = 0.7853981633974483

# fdlibm's minimax polynomials for sin and cos on [-pi/4, pi/4] (k_sin.c, k_cos.c)
_S1, _S2, _S3 = -1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04
_S4, _S5, _S6 = 2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10
_C1, _C2, _C3 = 4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05
_C4, _C5, _C6 = -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11


@njit(**_INLINE)
def _round(v):
    """v rounded to an integer (ties to even), exactly, for any finite v."""
    c = select(v < 0.0, -_TWO_P52, _TWO_P52)
    return select(abs(v) < _TWO_P52, (v + c) - c, v)


@njit(**_INLINE)
def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(**_INLINE)
def _two_prod(a, b):
    p = a * b
    return p, _fma(a, b, -p)


@njit(inline="always", **_INLINE)
def _reduce_quarter(ax):
    """ax (>= 0, finite) as q pi/2 + (hi + lo), |hi + lo| <= pi/4 (to 2^-51 past it), hi + lo
    to about 2^-150 absolutely, and q modulo 4: Payne and Hanek's reduction, branch free.

    One method for every argument, so that a loop has no branch to keep it scalar: the
    products of the mantissa with the pieces of 1/(2 pi) are exact (two_prod), each integer
    part leaves as soon as it appears (exactly: _round), and the quadrant is taken from the
    leading part alone before the small ones join it, so that a remainder that cancels
    down to 2^-63 turns keeps its bits."""
    bits = _bits_of(ax)
    m = _float_from_bits((bits & _MANTISSA) | 0x4330000000000000)   # 2^52 + mantissa bits
    # |x| = m 2^(E - 52); pieces below first = (E - 52) // 53 give integers only
    e = (bits >> 52) - 1023
    above = select(e > 52, e - 52, 0.0)
    first = math.floor((above + 0.5) * (1.0 / 53.0))
    t = first
    b4 = t >= 16.0
    t = select(b4, t - 16.0, t)
    b3 = t >= 8.0
    t = select(b3, t - 8.0, t)
    b2 = t >= 4.0
    t = select(b2, t - 4.0, t)
    b1 = t >= 2.0
    p0, p1, p2, p3, p4 = _pieces_from(b4, b3, b2, b1, select(b1, t - 2.0, t) >= 1.0)
    # m times piece k's weight 2^-53(first + k + 1) and |x|'s 2^(E - 52), exactly
    first_int = _bits_of(first + _ROUNDER) - _ROUNDER_BITS
    m0 = m * _pow2(e - 52 - 53 * (first_int + 1))
    m1, m2 = m0 * 1.1102230246251565e-16, m0 * 1.232595164407831e-32      # 2^-53, 2^-106
    m3, m4 = m0 * 1.3684555315672042e-48, m0 * 1.5192908393215678e-64     # 2^-159, 2^-212
    h0, l0 = _two_prod(m0, p0)           # below 2^105
    h1, l1 = _two_prod(m1, p1)           # below 2^52
    h2, l2 = _two_prod(m2, p2)           # below 1/2
    h3, l3 = _two_prod(m3, p3)           # below 2^-54
    a = h0 - _round(h0)
    a, e0 = _two_sum(a, l0 - _round(l0))
    a = a - _round(a)
    a, e1 = _two_sum(a, h1 - _round(h1))
    a = a - _round(a)
    a, e2 = _two_sum(a, l1)
    a = a - _round(a)
    a, e3 = _two_sum(a, h2)
    a = a - _round(a)
    u, t1 = _two_sum(h3, l2)
    u, t2 = _two_sum(u, e3)
    u, t3 = _two_sum(u, e2)
    u, t4 = _two_sum(u, e1)
    u, t5 = _two_sum(u, e0)
    w = (((t1 + t2) + (t3 + t4)) + t5) + (l3 + m4 * p4)
    q = _round(4.0 * a)
    a = a - 0.25 * q
    hi, err = _two_sum(a, u)
    lo = err + w
    # turns to radians: (hi + lo) (2 pi as a double-double)
    rh, rl = _two_prod(hi, _TWO_PI_HI)
    rl = rl + (hi * _TWO_PI_LO + lo * _TWO_PI_HI)
    rh, rl = _two_sum(rh, rl)
    quadrant = q - 4.0 * math.floor(q * 0.25)
    # below pi/4 there is nothing to reduce
    small = ax < _PIO4
    return select(small, 0.0, quadrant), select(small, ax, rh), select(small, 0.0, rl)


@njit(**_INLINE)
def _kernel_sin(x, y):
    """sin(x + y) for |x + y| <= pi/4 (+ a little), y the low part: fdlibm's __kernel_sin."""
    z = x * x
    v = z * x
    r = _S2 + z * (_S3 + z * (_S4 + z * (_S5 + z * _S6)))
    return x - ((z * (0.5 * y - v * r) - y) - v * _S1)


@njit(**_INLINE)
def _kernel_cos(x, y):
    """cos(x + y) for |x + y| <= pi/4 (+ a little): fdlibm's __kernel_cos (FreeBSD's form)."""
    z = x * x
    w = z * z
    r = z * (_C1 + z * (_C2 + z * _C3)) + w * w * (_C4 + z * (_C5 + z * _C6))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + (z * r - x * y))


@njit(inline="always", **_INLINE)
def _reduced(x):
    """_reduce_quarter of |x| (of 0 where x is not finite), and whether x is finite."""
    ax = abs(x)
    finite = ax < math.inf
    q, hi, lo = _reduce_quarter(select(finite, ax, 0.0))
    return q, hi, lo, finite


@njit(inline="always", **_INLINE)
def _sin_cos(x):
    q, hi, lo, finite = _reduced(x)
    return q, _kernel_sin(hi, lo), _kernel_cos(hi, lo), finite


@njit(inline="always", **_INLINE)
def sin(x):
    q, s, c, finite = _sin_cos(x)
    y = select(q == 0.0, s, select(q == 1.0, c, select(q == 2.0, -s, -c)))
    y = select(_bits_of(x) < 0, -y, y)
    # sin(+-0) = +-0 (the kernel keeps it), sin(+-inf) = NaN, NaN stays NaN
    return select(finite, y, x - x)


@njit(inline="always", **_INLINE)
def cos(x):
    q, s, c, finite = _sin_cos(x)
    y = select(q == 0.0, c, select(q == 1.0, -s, select(q == 2.0, -c, s)))
    return select(finite, y, x - x)


# --------------------------------------------------------------------------------------
# sin, cos and tan of arguments up to 2^19 pi/2: the loops that checked their arguments
# --------------------------------------------------------------------------------------
#: the largest |x| for which the *_medium functions hold (fdlibm's medium range, 2^19 pi/2
#: rounded down). Loops whose arguments all lie below it (codegen checks the run first) use
#: them: Cody-Waite's three steps cost 1.9 ns a value against 9.2 for the reduction over
#: the whole double range (sin in a loop of 10^5, Zen 4 box)
TRIG_MEDIUM = 823549.0
_INV_PIO2 = 6.36619772367581382433e-01
# pi/2 in three pieces of at most 33 bits and the rest (fdlibm's e_rem_pio2.c): fn * piece
# is exact for fn < 2^20
_PIO2_1 = 1.57079632673412561417e+00
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_3, _PIO2_3T = 2.02226624871116645580e-21, 8.47842766036889956997e-32


@njit(inline="always", **_INLINE)
def _reduce_medium(ax):
    """ax (0 <= ax <= TRIG_MEDIUM, or NaN) as q pi/2 + (hi + lo), q modulo 4: Cody-Waite
    with pi/2 in 33-bit pieces (151 bits), every product exact and every subtraction's
    rounding error kept (two_sum). fdlibm's rounds drop that error when they go on to
    the next piece, which is right only after a cancellation; done on every lane they
    were 2 ulp off for tan(484833.62968060776)."""
    fn = (ax * _INV_PIO2 + _ROUNDER) - _ROUNDER
    r = ax - fn * _PIO2_1
    r, e2 = _two_sum(r, -(fn * _PIO2_2))
    r, e3 = _two_sum(r, -(fn * _PIO2_3))
    tail = (e2 + e3) - fn * _PIO2_3T
    hi = r + tail
    return fn - 4.0 * math.floor(fn * 0.25), hi, (r - hi) + tail


@njit(inline="always", **_INLINE)
def sin_medium(x):
    """sin(x) for |x| <= TRIG_MEDIUM (and NaN)."""
    q, hi, lo = _reduce_medium(abs(x))
    s, c = _kernel_sin(hi, lo), _kernel_cos(hi, lo)
    y = select(q == 0.0, s, select(q == 1.0, c, select(q == 2.0, -s, -c)))
    return select(_bits_of(x) < 0, -y, y)


@njit(inline="always", **_INLINE)
def cos_medium(x):
    """cos(x) for |x| <= TRIG_MEDIUM (and NaN)."""
    q, hi, lo = _reduce_medium(abs(x))
    s, c = _kernel_sin(hi, lo), _kernel_cos(hi, lo)
    return select(q == 0.0, c, select(q == 1.0, -s, select(q == 2.0, -c, s)))


# fdlibm's odd polynomial for tan on [0, 0.67434] (k_tan.c): x + T0 x^3 + ... + T12 x^27
_TAN_T = (3.33333333333334091986e-01, 1.33333333333201242699e-01, 5.39682539762260521377e-02,
          2.18694882948595424599e-02, 8.86323982359930005737e-03, 3.59207910759131235356e-03,
          1.45620945432529025516e-03, 5.88041240820264096874e-04, 2.46463134818469906812e-04,
          7.81794442939557092300e-05, 7.14072491382608190305e-05, -1.85586374855275456654e-05,
          2.59073051863633712884e-05)
_PIO4_LO = 3.06161699786838301793e-17
_HIGH_WORD = -4294967296               # ~0xFFFFFFFF: keeps a double's upper 32 bits


@njit(inline="always", **_INLINE)
def _kernel_tan(x, y, odd):
    """tan(x + y), or -1 / tan(x + y) where odd, for |x + y| <= pi/4 (+ a little): fdlibm's
    __kernel_tan with its three cases computed on every lane and selected. Above 0.6744 it
    works on pi/4 - x; -1/tan is one division corrected by a Newton step on split halves
    (sin / cos of the same reduction reached 2 ulp)."""
    T = _TAN_T
    big = abs(x) >= 0.6744
    negative = x < 0.0
    xs = select(negative, -x, x)
    ys = select(negative, -y, y)
    x = select(big, (_PIO4 - xs) + (_PIO4_LO - ys), x)
    y = select(big, 0.0, y)
    z = x * x
    w = z * z
    r = T[1] + w * (T[3] + w * (T[5] + w * (T[7] + w * (T[9] + w * T[11]))))
    v = z * (T[2] + w * (T[4] + w * (T[6] + w * (T[8] + w * (T[10] + w * T[12])))))
    s = z * x
    r = y + z * (s * (r + v) + y) + s * T[0]
    w = x + r
    sgn = select(odd, -1.0, 1.0)
    near_quarter = sgn - 2.0 * (x + (r - w * w / (w + sgn)))
    near_quarter = select(negative, -near_quarter, near_quarter)
    w0 = _float_from_bits(_bits_of(w) & _HIGH_WORD)
    v = r - (w0 - x)                     # w0 + v = x + r
    a = -1.0 / w
    a0 = _float_from_bits(_bits_of(a) & _HIGH_WORD)
    inverse = a0 + a * (1.0 + a0 * w0 + a0 * v)
    return select(big, near_quarter, select(odd, inverse, w))


@njit(inline="always", **_INLINE)
def tan(x):
    q, hi, lo, finite = _reduced(x)
    y = _kernel_tan(hi, lo, (q == 1.0) | (q == 3.0))
    # tan(+-0) = +-0 (the polynomial keeps +0), tan(+-inf) = NaN, NaN stays NaN
    y = select(_bits_of(x) < 0, -y, y)
    return select(finite, y, x - x)


@njit(inline="always", **_INLINE)
def tan_medium(x):
    """tan(x) for |x| <= TRIG_MEDIUM (and NaN)."""
    q, hi, lo = _reduce_medium(abs(x))
    y = _kernel_tan(hi, lo, (q == 1.0) | (q == 3.0))
    return select(_bits_of(x) < 0, -y, y)



# --------------------------------------------------------------------------------------
# asin, acos and atan2
# --------------------------------------------------------------------------------------
# Cephes' asin: x + x z P(z) / Q(z), z = x^2, up to |x| = 0.625; above it, with z = 1 - |x|,
# pi/2 - sqrt(2 z) (1 + z R(z) / S(z)) (Q and S monic)
_ASIN_P = (4.253011369004428248960e-03, -6.019598008014123785661e-01, 5.444622390564711410273e+00,
           -1.626247967210700244449e+01, 1.956261983317594739197e+01, -8.198089802484824371615e+00)
_ASIN_Q = (-1.474091372988853791896e+01, 7.049610280856842141659e+01, -1.471791292232726029859e+02,
           1.395105614657485689735e+02, -4.918853881490881290097e+01)
_ASIN_R = (2.967721961301243206100e-03, -5.634242780008963776856e-01, 6.968710824104713396794e+00,
           -2.556901049652824852289e+01, 2.853665548261061424989e+01)
_ASIN_S = (-2.194779531642920639778e+01, 1.470656354026814941758e+02, -3.838770957603691357202e+02,
           3.424398657913078477438e+02)


@njit(inline="always", **_INLINE)
def asin(x):
    """Cephes' method without its branches: both forms' numerators and denominators are
    evaluated, the lanes select theirs, then divide once."""
    P, Q, R, S = _ASIN_P, _ASIN_Q, _ASIN_R, _ASIN_S
    ax = abs(x)
    large = ax > 0.625
    z = select(large, 1.0 - ax, ax * ax)
    p_small = z * (((((P[0] * z + P[1]) * z + P[2]) * z + P[3]) * z + P[4]) * z + P[5])
    q_small = ((((z + Q[0]) * z + Q[1]) * z + Q[2]) * z + Q[3]) * z + Q[4]
    p_large = z * ((((R[0] * z + R[1]) * z + R[2]) * z + R[3]) * z + R[4])
    q_large = (((z + S[0]) * z + S[1]) * z + S[2]) * z + S[3]
    p = select(large, p_large, p_small) / select(large, q_large, q_small)
    # |x| > 1 takes the square root of a negative number: NaN, as C99 says
    s = math.sqrt(select(large, z + z, 0.0))
    y_large = (_PIO4 - s) - (s * p - _MOREBITS) + _PIO4
    y = select(large, y_large, ax * p + ax)
    y = select(x < 0.0, -y, y)
    # asin(+-0) = +-0; NaN stays NaN
    return select((x == 0.0) | (x != x), x, y)


@njit(inline="always", **_INLINE)
def acos(x):
    """Cephes' acos: 2 asin(sqrt((1 - x) / 2)) above 0.5, else pi/2 - asin(x) (pi/2 in two
    parts): one asin on the argument each lane selects."""
    upper = x > 0.5
    s = asin(select(upper, math.sqrt(select(upper, 0.5 - 0.5 * x, 0.0)), x))
    return select(upper, 2.0 * s, ((_PIO4 - s) + _MOREBITS) + _PIO4)


_PI_HI = 3.141592653589793
_PI_LO = 1.2246467991473532e-16


@njit(inline="always", **_INLINE)
def atan2(y, x):
    """atan(y / x), moved to the quadrant of (x, y) by pi (in two parts), and C99's special
    cases (signed zeros, infinities, NaN) selected at the end."""
    ratio = y / x
    t = atan(ratio)
    # the quotient's rounding, put back to first order: atan(ratio + d) = atan(ratio) +
    # d / (1 + ratio^2), d = (y - ratio x) / x exact by an FMA (without it: 2 ulp)
    c = _fma(-ratio, x, y) / (x + ratio * y)
    c = select(abs(c) < math.inf, c, t * 0.0)   # a zero of t's sign: atan2(-1, inf) is -0
    negative_y = _bits_of(y) < 0
    pi_hi = select(negative_y, -_PI_HI, _PI_HI)
    pi_lo = select(negative_y, -_PI_LO, _PI_LO)
    r = select(x < 0.0, (pi_hi + t) + (pi_lo + c), t + c)
    # x = +-0 or y / x beyond the doubles: +-pi/2 (adding pi to atan's -pi/2 is an ulp off)
    r = select(abs(ratio) == math.inf, 0.5 * pi_hi, r)
    # y = +-0: +-0 for x > 0 or x = +0, +-pi for x < 0 or x = -0
    zero_y = select(_bits_of(x) < 0, pi_hi, y)
    r = select(y == 0.0, zero_y, r)
    # both infinite: +-pi/4 or +-3pi/4
    ax, ay = abs(x), abs(y)
    both = (ax == math.inf) & (ay == math.inf)
    corner = select(x > 0.0, 0.7853981633974483, 2.356194490192345)
    r = select(both, select(negative_y, -corner, corner), r)
    return select((x != x) | (y != y), x + y, r)
