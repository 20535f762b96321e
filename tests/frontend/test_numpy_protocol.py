"""numpy code on tapejit tensors: every ufunc in numpy's namespace either differentiates
(value vs numpy, gradient vs central differences, eagerly and traced) or raises a
TapejitError naming it; mixed ndarray/tensor operands never recurse; numpy never copies
a recording tensor's values silently."""
import math

import numpy as np
import pytest

import tapejit as tj
from tapejit.frontend import numpy_api as fn
from tapejit.frontend._numpy_protocol import NumpyUnsupportedError

from helpers import numeric_grad

UFUNCS = sorted({getattr(np, name).__name__ for name in dir(np) if isinstance(getattr(np, name), np.ufunc)})

#: ufuncs with no float64 meaning for tensors, or none worth differentiating: they raise
UNSUPPORTED = {"bitwise_count", "frexp", "gcd", "isnat", "lcm", "left_shift", "nextafter", "right_shift",
               "spacing"}
#: boolean or integer results, or inputs that only make sense as booleans: values only
NO_GRADIENT = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "isfinite", "isinf",
               "isnan", "signbit", "logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and",
               "bitwise_or", "bitwise_xor", "invert"}
#: gufuncs with matrix operands, tested on their own shapes below
SHAPED = {"matmul", "matvec", "vecmat", "vecdot"}

rng = np.random.default_rng(34)
X = rng.uniform(0.2, 0.8, 5)            # inside every domain used below
Y = rng.uniform(1.1, 1.9, 5)


def _operands(name):
    """(x, y) for the ufunc: values where it is smooth and numpy agrees to rounding."""
    x, y = X.copy(), Y.copy()
    if name == "arccosh":
        x = x + 1.5
    if name in ("mod", "remainder", "fmod", "floor_divide", "divmod", "floor", "ceil", "trunc", "rint",
                "modf"):
        x = x * 7.0 - 2.0                 # several integer cells, both signs
    if name == "ldexp":
        y = np.array([1, -2, 3, 0, 2])
    if name == "heaviside":
        x = x - 0.5
    if name in ("bitwise_and", "bitwise_or", "bitwise_xor", "invert"):
        x, y = x > 0.5, y > 1.5
    return x, y


def _differentiated(ufunc):
    if ufunc.__name__ in ("ldexp", "heaviside", "copysign"):
        return (0,)          # the other operand is an integer, a constant or a sign
    return tuple(range(ufunc.nin))


def _scalar_objective(ufunc, weights):
    """sum(weights * out) over every output, a function of numpy or tapejit operands."""
    def objective(*args):
        outs = ufunc(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return sum(np.sum(out * w) for out, w in zip(outs, weights))
    return objective


SUPPORTED = [u for u in UFUNCS if u not in UNSUPPORTED]


def test_every_ufunc_is_supported_or_refused_by_name(capsys):
    """The coverage table: the whole namespace, each one tried on a tensor."""
    rows = []
    for name in UFUNCS:
        ufunc = getattr(np, name)
        x, y = _operands(name)
        args = [tj.tensor(x, requires_grad=not x.dtype == bool)] + [y] * (ufunc.nin - 1)
        if name in SHAPED:
            continue
        if name in UNSUPPORTED:
            with pytest.raises(NumpyUnsupportedError, match=f"np.{name}"):
                ufunc(*args)
            rows.append((name, "raises TapejitError"))
        else:
            assert name in fn.UFUNCS, name
            ufunc(*args)
            rows.append((name, "value only" if name in NO_GRADIENT else "value and derivative"))
    rows += [(name, "value and derivative") for name in sorted(SHAPED)]
    with capsys.disabled():
        print(f"\nnumpy ufunc coverage: {sum(r[1] != 'raises TapejitError' for r in rows)} of {len(rows)} supported")
        for name, state in rows:
            print(f"  {name:22s} {state}")
    assert len(rows) == len(UFUNCS)


@pytest.mark.parametrize("name", [u for u in SUPPORTED if u not in SHAPED])
def test_ufunc_values_match_numpy(name):
    ufunc = getattr(np, name)
    x, y = _operands(name)
    args = (x, y)[: ufunc.nin]
    expected = ufunc(*args)
    got = ufunc(tj.tensor(x), *args[1:])
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g.numpy(), dtype=float), np.asarray(e, dtype=float),
                                   rtol=2e-15, atol=2e-15)
    if ufunc.nin == 2 and name not in ("ldexp",):
        # the tensor second: numpy hands the call to the tensor, which must not hand it back
        swapped = ufunc(x, tj.tensor(y))
        expected = ufunc(x, y)
        for e, g in zip(expected if isinstance(expected, tuple) else (expected,),
                        swapped if isinstance(swapped, tuple) else (swapped,)):
            np.testing.assert_allclose(np.asarray(g.numpy(), dtype=float), np.asarray(e, dtype=float),
                                       rtol=2e-15, atol=2e-15)


@pytest.mark.parametrize("name", [u for u in SUPPORTED if u not in SHAPED | NO_GRADIENT])
def test_ufunc_gradients_match_central_differences(name):
    ufunc = getattr(np, name)
    x, y = _operands(name)
    operands = [x, y][: ufunc.nin]
    weights = [rng.uniform(0.5, 1.5, x.shape) for _ in range(ufunc.nout)]
    objective = _scalar_objective(ufunc, weights)
    for k in _differentiated(ufunc):
        def numpy_part(v, k=k):
            args = list(operands)
            args[k] = v
            return objective(*args)
        expected = numeric_grad(numpy_part, operands[k].astype(float))
        # eager, the tensor in position k
        args = [a for a in operands]
        leaf = tj.tensor(operands[k], requires_grad=True)
        args[k] = leaf
        objective(*args).backward()
        np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=1e-6, atol=1e-7)
        # traced, replayed at a second point
        f = tj.trace(lambda v, k=k: objective(*[v if j == k else a for j, a in enumerate(operands)]),
                     operands[k].astype(float))
        shifted = operands[k] + 1e-3
        np.testing.assert_allclose(f.grad(shifted), numeric_grad(numpy_part, shifted.astype(float)),
                                   rtol=1e-6, atol=1e-7)


def test_gufuncs_with_matrix_operands():
    a = rng.uniform(-1, 1, (3, 4))
    v = rng.uniform(-1, 1, 4)
    u = rng.uniform(-1, 1, 3)
    cases = {
        "matmul": (lambda A, w: np.matmul(A, w), a, v),
        "matvec": (lambda A, w: np.matvec(A, w), a, v),
        "vecmat": (lambda w, A: np.vecmat(w, A), u, a),
        "vecdot": (lambda w, z: np.vecdot(w, z), v, v[::-1].copy()),
    }
    for name, (f, p, q) in cases.items():
        weights = rng.uniform(0.5, 1.5, np.shape(f(p, q)))
        leaf = tj.tensor(p, requires_grad=True)
        out = f(leaf, q)
        np.testing.assert_allclose(out.numpy(), f(p, q), rtol=1e-13, atol=1e-15, err_msg=name)
        np.sum(out * weights).backward()
        expected = numeric_grad(lambda z: np.sum(f(z, q) * weights), p.copy())
        np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=1e-6, atol=1e-8, err_msg=name)


# -- mixed operands: numpy scalars and arrays on either side ------------------------------
BINARY = ["add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "arctan2", "hypot",
          "mod", "fmod", "floor_divide", "logaddexp", "fmax", "fmin", "less", "greater_equal"]


@pytest.mark.parametrize("name", BINARY)
def test_mixed_numpy_and_tensor_operands(name):
    ufunc = getattr(np, name)
    x, y = 0.7, 1.3
    xs = np.array([0.7, 0.4])
    t, ts = tj.tensor(y, requires_grad=True), tj.tensor(np.array([1.3, 1.7]), requires_grad=True)
    for got, expected in ((ufunc(np.float64(x), t), ufunc(x, y)), (ufunc(t, np.float64(x)), ufunc(y, x)),
                          (ufunc(xs, ts), ufunc(xs, ts.detach().numpy())),
                          (ufunc(ts, xs), ufunc(ts.detach().numpy(), xs)),
                          (ufunc(xs, ts[0]), ufunc(xs, 1.3))):
        np.testing.assert_allclose(np.asarray(got.detach().numpy(), dtype=float), expected, rtol=1e-15)


def test_python_operators_from_numpy_scalars_and_arrays():
    t = tj.tensor(np.array([1.3, 2.1]), requires_grad=True)     # away from the jumps of % and //
    y = (np.ones(2) - t) + (np.float64(3.0) - t[0]) * (np.float64(2.0) / t[1]) + np.ones(2) % t + 5.0 // t
    y.sum().backward()
    def f(v):
        return np.sum((np.ones(2) - v) + (3.0 - v[0]) * (2.0 / v[1]) + np.ones(2) % v + 5.0 // v)
    np.testing.assert_allclose(t.grad.numpy(), numeric_grad(f, np.array([1.3, 2.1])), rtol=1e-7)


# -- ufunc methods and keywords -----------------------------------------------------------
def test_reduce_accumulate_outer():
    m = rng.uniform(0.5, 1.5, (3, 4))
    t = tj.tensor(m, requires_grad=True)
    checks = [
        (np.add.reduce(t), np.add.reduce(m)), (np.add.reduce(t, axis=1), np.add.reduce(m, axis=1)),
        (np.multiply.reduce(t, axis=None), np.multiply.reduce(m, axis=None)),
        (np.maximum.reduce(t, axis=1, keepdims=True), np.maximum.reduce(m, axis=1, keepdims=True)),
        (np.minimum.reduce(t), np.minimum.reduce(m)),
        (np.add.accumulate(t), np.add.accumulate(m)), (np.multiply.accumulate(t, axis=1),
                                                      np.multiply.accumulate(m, axis=1)),
        (np.multiply.outer(t[0], t[1]), np.multiply.outer(m[0], m[1])),
        (np.subtract.outer(m[0], t[1]), np.subtract.outer(m[0], m[1])),
    ]
    for got, expected in checks:
        np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-14)
    np.sum(np.multiply.accumulate(t, axis=1) * np.arange(12.0).reshape(3, 4)).backward()
    expected = numeric_grad(lambda v: np.sum(np.multiply.accumulate(v, axis=1) * np.arange(12.0).reshape(3, 4)), m)
    np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("call, words", [
    (lambda t, a: np.add(t, 1.0, out=a), "out="),
    (lambda t, a: np.add(a, t, out=a), "out="),
    (lambda t, a: a.__iadd__(t), "out="),
    (lambda t, a: np.sin(t, where=a > 0), "where="),
    (lambda t, a: np.add.at(t, [0], 1.0), "np.add.at"),
    (lambda t, a: np.add.reduceat(t, [0, 1]), "np.add.reduceat"),
    (lambda t, a: np.arctan2.reduce(t), "np.arctan2.reduce"),
    (lambda t, a: np.spacing(t), "np.spacing"),
    (lambda t, a: np.fft.fft(t), "np.fft.fft"),
    (lambda t, a: np.linalg.det(t.reshape(1, 2)), "np.linalg.det"),
    (lambda t, a: np.unwrap(t), "np.unwrap"),
])
def test_unsupported_numpy_calls_raise_naming_them(call, words):
    t = tj.tensor(np.array([0.5, 1.5]), requires_grad=True)
    a = np.ones(2)
    with pytest.raises(NumpyUnsupportedError, match=words.replace(".", r"\.")):
        call(t, a)
    np.testing.assert_array_equal(a, np.ones(2))     # nothing written


# -- copies out of a recording tensor -----------------------------------------------------
@pytest.mark.parametrize("copy", [
    lambda x: np.asarray(x), lambda x: np.array([x[0], x[1]]), lambda x: np.zeros(2).__setitem__(slice(None), x),
    lambda x: np.zeros((2, 2)).__setitem__(0, x),
    lambda x: np.asarray(x * 2.0), lambda x: np.concatenate([np.ones(1), np.asarray(x)]),
])
def test_numpy_refuses_to_copy_a_tensor_that_requires_grad(copy):
    x = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with pytest.raises(tj.TapejitError, match="lose its gradient"):
        copy(x)


def test_numpy_element_assignment_is_refused_but_explicit_conversions_work():
    x = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    g = np.zeros(2)
    # numpy reports a failed element conversion of a sequence-like object as its own
    # ValueError, with tapejit's error as the cause (shown first in the traceback)
    def one(): g[0] = x[0]                       # noqa: E704 (statements, as user code has them)
    def listed(): g[0:1] = [x[1] * 2.0]          # noqa: E704
    for assign in (one, listed):
        with pytest.raises((tj.GradientLostError, ValueError)) as caught:
            assign()
        error = caught.value if isinstance(caught.value, tj.GradientLostError) else caught.value.__cause__
        assert isinstance(error, tj.GradientLostError) and "lose its gradient" in str(error)
    np.testing.assert_array_equal(g, [0.0, 0.0])
    assert float(x[1] * 2.0) == 4.0 and np.float64(x[0]) == 1.0 and int(x[1]) == 2
    g[0] = x[0].detach()
    assert g[0] == 1.0

    def f(v):
        b = np.zeros(2)
        b[0] = v[0]
        return np.sum(b)
    with pytest.raises((tj.GradientLostError, ValueError)) as caught:
        tj.trace(f, np.ones(2))
    assert isinstance(caught.value, tj.GradientLostError) or isinstance(caught.value.__cause__, tj.GradientLostError)


def test_constant_tensors_still_convert():
    c = tj.tensor(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(np.asarray(c), [1.0, 2.0])
    x = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    np.testing.assert_array_equal(np.asarray(x.detach()), [1.0, 2.0])
    np.testing.assert_array_equal(x.detach().numpy(), [1.0, 2.0])


def test_copy_inside_a_trace_is_refused():
    def f(x):
        buf = np.zeros(2)
        buf[:] = x
        return np.sum(buf)
    with pytest.raises(tj.TapejitError):
        tj.trace(f, np.ones(2))


# -- conversions of comparisons inside a trace ---------------------------------------------
def test_float_of_a_comparison_in_a_trace_is_a_guard():
    def f(x):
        return x[0] * float(x[0] >= 0) + x[1] ** 2 * int(x[1] < 1.0)
    g = tj.trace(f, np.array([1.0, 0.5]))
    np.testing.assert_allclose(g.grad(np.array([2.0, 0.25])), [1.0, 0.5])
    with pytest.raises(tj.BranchChangedError):
        g.grad(np.array([-1.0, 0.5]))


# -- value-dependent selections ------------------------------------------------------------
def test_sort_argsort_argmax_follow_the_values_and_guard_the_trace():
    x0 = np.array([0.3, -1.2, 2.5, 0.9])
    w = np.array([1.0, 2.0, 3.0, 4.0])
    x = tj.tensor(x0, requires_grad=True)
    np.sum(np.sort(x) * w).backward()
    np.testing.assert_allclose(x.grad.numpy(), numeric_grad(lambda v: np.sum(np.sort(v) * w), x0), rtol=1e-7)
    assert np.array_equal(np.argsort(x), np.argsort(x0)) and np.argmax(x) == 2 and np.argmin(x) == 1
    f = tj.trace(lambda v: np.sum(np.sort(v) * w) + v[np.argmax(v)], x0)
    x1 = x0 + np.array([0.01, -0.02, 0.03, 0.0])
    expected = numeric_grad(lambda v: np.sum(np.sort(v) * w) + v[np.argmax(v)], x1)
    np.testing.assert_allclose(f.grad(x1), expected, rtol=1e-7)
    with pytest.raises(tj.BranchChangedError):
        f.grad(np.array([3.0, -1.2, 2.5, 0.9]))         # another order


def test_interp_diff_round_and_friends():
    xp, fp = np.array([0.0, 1.0, 2.5, 4.0]), np.array([1.0, -1.0, 2.0, 0.5])
    x0 = np.array([0.3, 1.7, 3.9, -0.6, 4.4])     # no ties of round, no bin edges
    cases = {
        "interp": lambda v: np.sum(np.interp(v, xp, fp) * np.arange(1.0, 6.0)),
        "diff": lambda v: np.sum(np.diff(v, n=2) ** 2) + np.sum(np.diff(v, prepend=1.0)),
        "round": lambda v: np.sum(np.round(v, 1) * v) + np.sum(np.around(v)),
        "trace_kron": lambda v: np.trace(np.kron(v[:2].reshape(2, 1) * v[2:4], np.eye(2))) + v[4],
        "polyval": lambda v: np.sum(np.polyval(v[:3], v[3:])),
        "take_along_axis": lambda v: np.sum(np.take_along_axis(v, np.array([4, 0, 0]), axis=0) ** 2),
        "meshgrid": lambda v: np.sum(np.meshgrid(v[:2], v[2:])[0] * np.meshgrid(v[:2], v[2:])[1] ** 2),
        "fix_sinc": lambda v: np.sum(np.fix(v) * v) + np.sum(np.sinc(v)),
    }
    for name, f in cases.items():
        x = tj.tensor(x0, requires_grad=True)
        y = f(x)
        np.testing.assert_allclose(y.item(), f(x0), rtol=1e-14, err_msg=name)
        y.backward()
        np.testing.assert_allclose(x.grad.numpy(), numeric_grad(f, x0.copy()), rtol=1e-6, atol=1e-8, err_msg=name)
        g = tj.trace(f, x0)
        x1 = x0 + 0.01
        np.testing.assert_allclose(g.grad(x1), numeric_grad(f, x1.copy()), rtol=1e-6, atol=1e-8, err_msg=name)


def test_rounding_opcodes_at_the_edges():
    """The arithmetic forms of rint/floor/ceil/trunc against numpy, ±0, ties, 2**52 and beyond,
    inf and nan, in every engine: eager (C or Python), traced replay, batch."""
    edges = np.array([0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -2.5, 0.3, -0.3, -0.7, 0.7, 2.0 ** 52 - 0.5,
                      -(2.0 ** 52) + 0.5, 2.0 ** 53 + 2, 1e300, -1e300, math.inf, -math.inf, math.nan,
                      5e-324, -5e-324, 3.0, -3.0, 2.9999999999999996])
    for name in ("rint", "floor", "ceil", "trunc"):
        ours, theirs = getattr(tj, name), getattr(np, name)
        scalar = np.array([ours(tj.tensor(v)).item() for v in edges])
        vector = ours(tj.tensor(edges)).numpy()
        f = tj.trace(lambda v: ours(v), edges)
        replay = f(edges)
        batch = f.batch(np.stack([edges, edges]))
        for got in (scalar, vector, replay, batch[0]):
            np.testing.assert_array_equal(got, theirs(edges), err_msg=name)
            # the sign of zero is kept; a nan's sign bit is not (IEEE leaves it to each
            # operation, and LLVM computes -a as 0 - a without its optimizer)
            numbers = ~np.isnan(edges)
            np.testing.assert_array_equal(np.signbit(got)[numbers], np.signbit(theirs(edges))[numbers], err_msg=name)


def test_array_function_arguments_tapejit_lacks_are_refused_by_name():
    t = tj.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    with pytest.raises(NumpyUnsupportedError, match=r"np\.sum\(\.\.\., where=\.\.\.\)"):
        np.sum(t, where=np.array([True, False, True]))
    with pytest.raises(NumpyUnsupportedError, match="dtype"):
        np.mean(t, dtype=np.float32)
    for name in ("cov", "percentile", "nansum"):
        with pytest.raises(NumpyUnsupportedError, match=f"np.{name}"):
            getattr(np, name)(t, 50) if name == "percentile" else getattr(np, name)(t)
    y = np.sum(t, axis=0, keepdims=True, out=None)     # numpy's defaults pass through
    y.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), [1.0, 1.0, 1.0])


def test_divmod_floor_divide_and_remainder_are_numpys_to_the_bit():
    """% and // follow numpy's divmod from the exact fmod: 1 // 0.1 is 9.0 (floor(1 / 0.1)
    would be 10.0), signs of zero and division by zero included."""
    a = np.concatenate([rng.normal(size=500) * 10, [1.0, -1.0, 0.0, -0.0, 5.0, np.inf, 3.0, -3.0, 1e300, 0.3, 7.0]])
    b = np.concatenate([rng.normal(size=500), [0.1, 0.1, -3.0, 3.0, 0.0, 2.0, np.inf, np.inf, 1e-300, 0.1, 0.7]])

    def same(got, want):
        return (np.array_equal(got, want, equal_nan=True)
                and np.array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)])))
    t = tj.tensor(a, requires_grad=True)
    with np.errstate(all="ignore"):
        q, r = divmod(t, b)
        nq, nr = np.divmod(a, b)
        assert same(q.numpy(), nq) and same(r.numpy(), nr)
        assert same((t // b).numpy(), np.floor_divide(a, b)) and same((t % b).numpy(), np.remainder(a, b))
        assert same(np.fmod(t, b).numpy(), np.fmod(a, b))
    assert (tj.tensor(1.0) // 0.1).item() == 9.0
