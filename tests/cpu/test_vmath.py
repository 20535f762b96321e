"""tapejit.cpu._vmath against numpy (the C library): ulp error over the whole double range,
and C99's special values bit for bit."""
import numpy as np
import pytest
from numba import njit

from scipy.special import erf as scipy_erf

from tapejit.cpu import _vmath

# the largest error, in ulps of numpy's result, that each function may have
BOUNDS = {"exp": 1.0, "expm1": 2.0, "log": 1.0, "log1p": 1.0, "tanh": 2.0, "atan": 1.0, "erf": 2.0,
          "sin": 1.0, "cos": 1.0, "tan": 1.0, "asin": 1.0, "acos": 1.0, "sinh": 1.0, "cosh": 1.0}
REFERENCE = {"exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "tanh": np.tanh, "atan": np.arctan,
             "erf": scipy_erf, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
             "sinh": np.sinh, "cosh": np.cosh}
#: how often the result must be numpy's (scipy's) double exactly: their tanh and erf are off
#: by an ulp on many points themselves (see the mpmath test below); erf agrees on 78%
EXACT = {"tanh": 0.85, "erf": 0.75, "asin": 0.8, "acos": 0.75, "sinh": 0.8, "cosh": 0.8}
SPECIAL = np.array([
    0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-310, -1e-310, 1e-300, 1e-17, -1e-17,
    -1.0, -1.0 + 2.0**-53, np.nextafter(-1.0, -2.0), 0.5, -0.5, 1.0, 2.0,
    709.782712893384, 709.7827128933841, 710.0, -745.1332191019411, -745.2, -708.4, -708.3964185322641,
    1.7976931348623157e308, -1.7976931348623157e308, -37.5, -50.0, -51.0, 0.34657359027997264, 0.3466,
    0.625, np.nextafter(0.625, 0.0), -0.625, 22.0, -22.0, 19.06, -19.06, 1000.0, -1000.0,
    0.66, np.nextafter(0.66, 1.0), 2.414213562373095, 2.4142135623730954, -2.414213562373095,
    np.pi / 4, np.nextafter(np.pi / 4, 1.0), np.pi / 2, np.pi, 2.0**52, 2.0**105, 2.0**1023, 1e22,
    0.6744, -0.6744, 0.999999, -0.999999, 1.0000001, -1.5, 710.4758600739439, 710.48, -710.47,
])


def _loop(fn):
    @njit(error_model="numpy")
    def run(x, out):
        for k in range(x.shape[0]):
            out[k] = fn(x[k])
    return run


KERNELS = {name: _loop(getattr(_vmath, name)) for name in BOUNDS}


def _ulps(got, want):
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    with np.errstate(invalid="ignore"):
        err = np.abs(got - want) / np.spacing(np.maximum(np.abs(want), np.finfo(float).tiny))
    return np.where(same, 0.0, err)


def _points():
    rng = np.random.default_rng(7)
    magnitudes = np.exp(rng.uniform(-744.0, 709.0, 100_000))
    return np.concatenate([
        rng.uniform(-800.0, 800.0, 100_000), rng.standard_normal(100_000), rng.uniform(-1e-8, 1e-8, 20_000),
        magnitudes, -magnitudes, rng.uniform(-1.0, 0.0, 100_000), rng.uniform(-0.7, 0.7, 100_000),
        np.array([2.0**k for k in range(-1074, 1024)]), SPECIAL,
    ])


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_within_its_ulp_bound_over_the_double_range(name):
    x = _points()
    got = np.empty_like(x)
    KERNELS[name](x, got)
    with np.errstate(all="ignore"):
        want = REFERENCE[name](x)
    err = _ulps(got, want)
    worst = int(np.argmax(err))
    assert err[worst] <= BOUNDS[name], f"{name}({x[worst]!r}) = {got[worst]!r}, numpy {want[worst]!r}"
    # and not just within the bound: nearly always the same double
    assert np.mean(err == 0.0) > EXACT.get(name, 0.9)


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_special_values_as_c99(name):
    got = np.empty_like(SPECIAL)
    KERNELS[name](SPECIAL, got)
    with np.errstate(all="ignore"):
        want = REFERENCE[name](SPECIAL)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    assert np.all(_ulps(got[finite], want[finite]) <= BOUNDS[name])
    # signed zeros keep their sign (exp never returns zero for these, so this is log1p, expm1)
    zero = want == 0.0
    assert np.array_equal(np.signbit(got[zero]), np.signbit(want[zero]))


def test_the_sweeps_use_them():
    # the generated CPU sweeps import these names from _vmath, not from math
    from tapejit.cpu import _sweeps as _sweeps_cpu
    for name in list(BOUNDS) + ["atan2"]:
        assert getattr(_sweeps_cpu, name) is getattr(_vmath, name)


def test_log1p_unit_over_its_interval():
    # softplus's log1p(exp(-|a|)): the argument is in [0, 1] or NaN
    rng = np.random.default_rng(11)
    t = np.concatenate([rng.uniform(0.0, 1.0, 200_000), np.exp(-rng.uniform(0.0, 745.0, 200_000)),
                        np.array([0.0, 5e-324, 1e-300, 2.0**-53, 2.0**-52, np.sqrt(2.0) - 1.0,
                                  np.nextafter(np.sqrt(2.0) - 1.0, 1.0), 0.5, 1.0, np.nan])])
    got = np.empty_like(t)
    _loop(_vmath.log1p_unit)(t, got)
    want = np.log1p(t)
    assert np.isnan(got[-1])
    err = _ulps(got, want)
    worst = int(np.argmax(err))
    assert err[worst] <= 1.0, f"log1p_unit({t[worst]!r}) = {got[worst]!r}, numpy {want[worst]!r}"
    assert np.mean(err == 0.0) > 0.9


def test_softplus_sweeps_use_log1p_unit_and_stay_accurate():
    from tapejit.cpu import _sweeps as _sweeps_cpu
    from tapejit.codegen import render as codegen
    assert _sweeps_cpu.log1p_unit is _vmath.log1p_unit
    assert "log1p_unit(exp(-abs(x_a)))" in codegen.render_cpu()
    # softplus of a batch (the chunk sweep's vector loop) against log(1 + e^a) in long double
    import tapejit as tj
    rng = np.random.default_rng(12)
    X = np.concatenate([rng.uniform(-750.0, 750.0, 4096), rng.uniform(-40.0, 40.0, 4096)]).reshape(-1, 8)
    f = tj.trace(lambda x: tj.softplus(x), np.zeros(8))
    got = f.batch(X)
    want = np.logaddexp(np.longdouble(0.0), X.astype(np.longdouble)).astype(np.float64)
    err = _ulps(got.ravel(), want.ravel())
    assert err.max() <= 2.0


@pytest.mark.parametrize("name, bound", [("tanh", 1.0), ("erf", 2.0), ("sin", 1.0), ("cos", 1.0), ("tan", 1.0),
                                         ("asin", 1.0), ("acos", 1.0), ("sinh", 1.0), ("cosh", 1.0)])
def test_within_bound_of_mpmath_where_numpy_and_ours_differ_most(name, bound):
    """numpy's tanh and scipy's erf are not correctly rounded either: on the points where
    ours is furthest from theirs, the correctly rounded value (mpmath, 120 bits) is
    within the bound of ours."""
    mpmath = pytest.importorskip("mpmath")
    x = np.concatenate([_points(), np.linspace(-30.0, 30.0, 600_001), np.linspace(0.6, 1.1, 50_001)])
    got = np.empty_like(x)
    KERNELS[name](x, got)
    with np.errstate(all="ignore"):
        far = x[np.argsort(_ulps(got, REFERENCE[name](x)))[-300:]]
    ours = np.empty_like(far)
    KERNELS[name](far, ours)
    with mpmath.workprec(120):
        exact = np.array([float(getattr(mpmath, name)(mpmath.mpf(float(v)))) for v in far])
    assert _ulps(ours, exact).max() <= bound


def test_sin_cos_tan_of_huge_arguments_against_mpmath():
    """The reduction by pi/2 of arguments up to the largest double: random magnitudes and
    the double closest to a multiple of pi/2 (6381956970095103 * 2^797, whose cosine is
    4.7e-19; numpy's is 8 ulp off there), against mpmath, which reduces exactly."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(21)
    x = np.concatenate([np.exp(rng.uniform(np.log(1e5), 709.0, 300)) * rng.choice([-1.0, 1.0], 300),
                        np.ldexp(rng.uniform(1.0, 2.0, 100), rng.integers(50, 1024, 100)),
                        np.array([6381956970095103 * 2.0**797, -6381956970095103 * 2.0**797,
                                  1.7976931348623157e308, 2.0**1023, 2.0**52, 2.0**53 - 1.0, 1e22])])
    for name in ("sin", "cos", "tan"):
        got = np.empty_like(x)
        KERNELS[name](x, got)
        with mpmath.workprec(120):
            exact = np.array([float(getattr(mpmath, name)(mpmath.mpf(float(v)))) for v in x])
        err = _ulps(got, exact)
        worst = int(np.argmax(err))
        assert err[worst] <= 1.0, f"{name}({x[worst]!r}) = {got[worst]!r}, mpmath {exact[worst]!r}"


def test_the_pieces_of_one_over_two_pi():
    mpmath = pytest.importorskip("mpmath")
    bits = 53 * _vmath._INVERSE_TWO_PI_PIECES
    with mpmath.workprec(bits + 64):
        exact = int(mpmath.floor(mpmath.ldexp(1 / (2 * mpmath.pi), bits)))
    assert _vmath._bits_of_inverse_two_pi(bits) == exact
    joined = 0
    for piece in _vmath._INVERSE_TWO_PI:
        joined = (joined << 53) | int(piece)
    assert joined == exact


@njit(error_model="numpy")
def _atan2_loop(y, x, out):
    for k in range(x.shape[0]):
        out[k] = _vmath.atan2(y[k], x[k])


def test_atan2_within_an_ulp_and_c99_special_cases():
    rng = np.random.default_rng(22)
    n = 200_000
    magnitudes = np.exp(rng.uniform(-700.0, 700.0, n)) * rng.choice([-1.0, 1.0], n)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 5e-324, -5e-324, 1e308, -3.0])
    sy, sx = (a.ravel() for a in np.meshgrid(special, special))
    y = np.concatenate([rng.standard_normal(n), magnitudes, rng.uniform(-1.0, 1.0, n), sy])
    x = np.concatenate([rng.standard_normal(n), rng.permutation(magnitudes), rng.uniform(-1e-3, 1e-3, n), sx])
    got = np.empty_like(x)
    _atan2_loop(y, x, got)
    want = np.arctan2(y, x)
    err = _ulps(got, want)
    worst = int(np.argmax(err))
    assert err[worst] <= 1.0, f"atan2({y[worst]!r}, {x[worst]!r}) = {got[worst]!r}, numpy {want[worst]!r}"
    assert np.mean(err == 0.0) > 0.75
    # signed zeros, +-pi, +-pi/2, +-pi/4 and +-3pi/4 on the grid of special values, as C99 says
    tail = slice(-sy.size, None)
    assert np.array_equal(np.isnan(got[tail]), np.isnan(want[tail]))
    number = ~np.isnan(want[tail])
    assert np.array_equal(np.signbit(got[tail][number]), np.signbit(want[tail][number]))
    assert np.all(err[tail] <= 1.0)
    # an infinite ratio gives pi/2 exactly (not pi plus atan's -pi/2, an ulp off)
    assert np.all(got[tail][(sx == 0.0) & (sy == 1.0)] == np.pi / 2)


MEDIUM = {name: _loop(getattr(_vmath, f"{name}_medium")) for name in ("sin", "cos", "tan")}


def _medium_points():
    """Arguments up to TRIG_MEDIUM: uniform, small magnitudes down to subnormals, the
    doubles nearest to multiples of pi/2 (where the reduction cancels most) and edges."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng(19)
    limit = _vmath.TRIG_MEDIUM
    magnitudes = np.exp(rng.uniform(-744.0, np.log(limit), 20_000))
    with mpmath.workprec(200):
        near = [float(mpmath.mpf(int(k)) * mpmath.pi / 2) for k in rng.integers(1, 2**19, 3_000)]
    near += [np.nextafter(v, 0.0) for v in near[:500]]
    return np.concatenate([rng.uniform(-limit, limit, 20_000), rng.uniform(-10.0, 10.0, 20_000), magnitudes,
                           -magnitudes, near, np.negative(near),
                           [0.0, -0.0, 5e-324, -5e-324, limit, -limit, np.pi / 4, np.pi / 2, 1e-8]])


@pytest.mark.parametrize("name", sorted(MEDIUM))
def test_medium_range_forms_within_an_ulp_of_mpmath(name):
    """sin/cos/tan_medium, which the sweeps' loops run when no argument exceeds
    TRIG_MEDIUM: within an ulp of the correctly rounded value (mpmath, 120 bits) on every
    point where they differ from the full-range functions, and on a sample of the rest."""
    mpmath = pytest.importorskip("mpmath")
    x = _medium_points()
    got, full = np.empty_like(x), np.empty_like(x)
    MEDIUM[name](x, got)
    KERNELS[name](x, full)
    differ = np.flatnonzero(got != full)
    check = np.unique(np.concatenate([differ, np.random.default_rng(3).choice(x.size, 3_000, replace=False),
                                      np.arange(x.size - 9, x.size)]))
    with mpmath.workprec(120):
        exact = np.array([float(getattr(mpmath, name)(mpmath.mpf(float(v)))) for v in x[check]])
    err = _ulps(got[check], exact)
    worst = int(np.argmax(err))
    assert err[worst] <= 1.0, f"{name}_medium({x[check][worst]!r}) = {got[check][worst]!r}, mpmath {exact[worst]!r}"
    # signs of zero as sin(+-0) = +-0, tan(+-0) = +-0; NaN stays NaN
    special = np.array([0.0, -0.0, np.nan])
    out = np.empty(3)
    MEDIUM[name](special, out)
    if name == "cos":
        assert out[0] == 1.0 and out[1] == 1.0
    else:
        assert np.array_equal(np.signbit(out[:2]), [False, True]) and np.all(out[:2] == 0.0)
    assert np.isnan(out[2])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # numpy's sin(inf)
@pytest.mark.parametrize("big", [1e10, np.inf, np.nan, -3e300])
def test_a_run_with_one_large_argument_takes_the_full_reduction(big):
    """The sweeps check a run's arguments before using the medium forms: one value past
    TRIG_MEDIUM (or not finite) in a run of small ones sends the whole run through the
    full reduction, and every value, and its derivative, stays within an ulp of numpy."""
    import tapejit as tj
    x = np.linspace(-20.0, 20.0, 101)
    x[37] = big
    for fn, ref, dref in ((tj.sin, np.sin, np.cos), (tj.cos, np.cos, lambda v: -np.sin(v)),
                          (tj.tan, np.tan, lambda v: 1.0 + np.tan(v) ** 2)):
        f = tj.trace(lambda v, fn=fn: fn(v), x)
        values = f(x)
        assert np.array_equal(np.isnan(values), np.isnan(ref(x)))
        finite = np.isfinite(ref(x))
        assert _ulps(values[finite], ref(x)[finite]).max() <= 1.0
        grads = tj.trace(lambda v, fn=fn: tj.sum(fn(v)), x).grad(x)
        np.testing.assert_allclose(grads[finite], dref(x)[finite], rtol=1e-13, atol=1e-15)
        # and the batch engine's chunk loops, one point per row
        batch = tj.trace(lambda v, fn=fn: tj.sum(fn(v)), x[:3]).batch_grad(x.reshape(-1, 1)[:99].repeat(3, 1))
        np.testing.assert_allclose(batch[finite[:99]], np.repeat(dref(x[:99])[finite[:99], None], 3, 1),
                                   rtol=1e-13, atol=1e-15)


def test_the_sweeps_check_arguments_before_the_medium_forms():
    from tapejit.cpu import _sweeps as _sweeps_cpu
    import inspect
    source = inspect.getsource(_sweeps_cpu.forward_chunk__sin) + inspect.getsource(_sweeps_cpu.reverse_vector__sin)
    assert "sin_medium(x_a)" in source and "cos_medium(x_a)" in source and "TRIG_MEDIUM" in source
