"""exp, expm1, log, log1p, tanh, atan and erf that LLVM can vectorize, for the CPU sweeps.

Numba lowers ``math.exp`` and friends to calls into the C library, one value per call:
a loop over a chunk of points that calls them cannot become SIMD code (llvmlite's
wheels have no vector math library), and a logistic loss spent most of its time in
``log1p(exp(...))``. These are the same algorithms as fdlibm's (Cody-Waite reduction by
ln 2, a polynomial, exponent arithmetic on the bits), written without branches (special
values are selected at the end) so that every operation has a vector form. Accuracy:
within one ulp of the C library on the tests' sweeps of the whole double range; special
values (±0, ±inf, NaN, overflow, underflow, subnormals) as C99 says. Measured against
numpy over random sweeps of the whole range (tests/test_vmath.py): exp, log and log1p
within 1 ulp, expm1 within 2 ulp (its remainder's rounding, doubled when k = 1); tanh
within 2 ulp of numpy and 1 ulp of mpmath at 120 bits on numpy's worst cases; atan
within 1 ulp of numpy; erf within 2 ulp of scipy and of mpmath.

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
# the softplus partial 1.22x (tests/test_vmath.py keeps the same ulp bounds). It applies
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
