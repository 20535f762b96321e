"""User primitives (tj.primitive): each rule against central differences or closed forms,
a primitive against the same function built from table ops in every mode and engine,
the refusals (missing rules, saved tapes, the GPU), and kernels that raise or return nan."""
import ctypes
import math
import warnings

import numpy as np
import pytest
import scipy.special as sp
from numba.extending import get_cython_function_address

import tapejit as tj
from tapejit.cpu import _kernels
from tapejit.cpu import _sweeps as _sweeps_cpu
from tapejit.codegen import render as codegen
from tapejit.ops import primitives

RNG = np.random.default_rng(7)


# a smooth unary primitive with all its rules, and the same function from table ops
def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


softplus_p = tj.primitive(lambda x: math.log1p(math.exp(x)), name="softplus_p")
softplus_p.defderiv(lambda x, o: 1.0 / (1.0 + math.exp(-x)))
softplus_p.defhess(lambda x, o: (1.0 / (1.0 + math.exp(-x))) * (1.0 - 1.0 / (1.0 + math.exp(-x))))


def softplus_ops(x):
    return tj.log1p(tj.exp(x))


# a binary one: hypot, with its partials from the output
@tj.primitive
def hypot_p(a, b):
    return math.sqrt(a * a + b * b)


hypot_p.defderiv(lambda a, b, o: a / o, lambda a, b, o: b / o)
hypot_p.defhess(lambda a, b, o: b * b / (o * o * o), lambda a, b, o: -a * b / (o * o * o),
                lambda a, b, o: a * a / (o * o * o))


def hypot_ops(a, b):
    return tj.sqrt(a * a + b * b)


def objective(prim):
    sp_, hy = (softplus_p, hypot_p) if prim else (softplus_ops, hypot_ops)

    def f(x):
        y = sp_(x) * tj.sin(x)
        return tj.sum(y) + tj.sum(hy(x[1:], x[:-1])) + tj.sum(hy(x, 0.5) ** 2)
    return f


N = 6
X0 = RNG.normal(size=N)
F_PRIM = tj.trace(objective(True), X0)
F_OPS = tj.trace(objective(False), X0)


def close(a, b, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def test_one_point_modes_match_the_table_ops():
    x, v = RNG.normal(size=N), RNG.normal(size=N)
    close(F_PRIM(x), F_OPS(x))
    close(F_PRIM.grad(x), F_OPS.grad(x))
    close(F_PRIM.jvp(x, v=v), F_OPS.jvp(x, v=v))
    close(F_PRIM.hvp(x, v=v), F_OPS.hvp(x, v=v), rtol=1e-10)
    close(F_PRIM.hessian(x), F_OPS.hessian(x), rtol=1e-10, atol=1e-10)
    close(F_PRIM.hessian(x, sparse=True).toarray(), F_OPS.hessian(x), rtol=1e-10, atol=1e-10)


def test_batch_modes_match_the_table_ops():
    X = RNG.normal(size=(3000, N))          # more than one chunk, on every worker thread
    V = RNG.normal(size=(3000, N))
    close(F_PRIM.batch(X), F_OPS.batch(X))
    close(F_PRIM.batch_grad(X), F_OPS.batch_grad(X))
    close(F_PRIM.batch_hvp(X, V=V), F_OPS.batch_hvp(X, V=V), rtol=1e-10, atol=1e-10)
    close(F_PRIM.batch_jvp(X, V=V), F_OPS.batch_jvp(X, V=V))


def test_compiled_kernel_matches_the_interpreter():
    f = tj.trace(objective(True), X0).compile()
    X = RNG.normal(size=(200, N))
    close(f.batch_grad(X), F_PRIM.batch_grad(X))


def test_eager_scalars_and_arrays():
    x = tj.tensor(0.3, requires_grad=True)
    y = softplus_p(x) * 2.0 + hypot_p(x, 4.0)
    y.backward()
    close(y.item(), 2 * math.log1p(math.exp(0.3)) + math.hypot(0.3, 4.0))
    close(x.grad.item(), 2 * _sig(0.3) + 0.3 / math.hypot(0.3, 4.0))
    a = tj.tensor(RNG.normal(size=(3, 4)), requires_grad=True)
    b = tj.tensor(RNG.normal(size=4), requires_grad=True)     # broadcast over the rows
    tj.sum(hypot_p(a, b)).backward()
    A, Bv = a.numpy(), b.numpy()
    r = np.hypot(A, Bv)
    close(a.grad.numpy(), A / r)
    close(b.grad.numpy(), (Bv / r).sum(axis=0))


def test_long_vectors_run_in_tiles():
    n = 1 << 20                            # past tiling.MIN_LENGTH: the tiled engine
    x = RNG.normal(size=n)
    f = tj.trace(lambda v: tj.sum(softplus_p(v) * tj.tanh(v)), x)
    expect = _sig_np(x) * np.tanh(x) + np.log1p(np.exp(x)) * (1 - np.tanh(x) ** 2)
    close(f.grad(x), expect, rtol=1e-11, atol=1e-14)
    t = tj.tensor(x, requires_grad=True)
    tj.sum(softplus_p(t) * tj.tanh(t)).backward()
    close(t.grad.numpy(), expect, rtol=1e-11, atol=1e-14)


def _sig_np(x):
    return 1 / (1 + np.exp(-x))


def test_values_without_gradients():
    x = RNG.normal(size=5)
    close(softplus_p(x).numpy(), np.log1p(np.exp(x)))
    close(hypot_p(x, 2.0).numpy(), np.hypot(x, 2.0))
    close(float(softplus_p(0.5)), math.log1p(math.exp(0.5)))


# --------------------------------------------------------------------------------------
# a special function from SciPy: log of the normal CDF, accurate deep in the left tail
# where log(ndtr(x)) from table ops would be log(0)
# --------------------------------------------------------------------------------------
_log_ndtr = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)(
    get_cython_function_address("scipy.special.cython_special", "__pyx_fuse_1log_ndtr"))
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

log_ndtr = tj.primitive(lambda x: _log_ndtr(x), name="log_ndtr")
# d/dx log Phi(x) = phi(x) / Phi(x) = exp(-x^2/2 - out) / sqrt(2 pi); its derivative -r (x + r)
log_ndtr.defderiv(lambda x, o: _INV_SQRT_2PI * math.exp(-0.5 * x * x - o))
log_ndtr.defhess(lambda x, o: -(_INV_SQRT_2PI * math.exp(-0.5 * x * x - o))
                 * (x + _INV_SQRT_2PI * math.exp(-0.5 * x * x - o)))


def test_scipy_special_function_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    x = np.array([-35.0, -8.0, -1.5, 0.0, 0.7, 4.0])
    f = tj.trace(lambda v: tj.sum(log_ndtr(v)), x)

    def reference(order):
        return np.array([float(mpmath.diff(lambda t: mpmath.log(mpmath.ncdf(t)), mpmath.mpf(xi), order))
                         for xi in x])
    close(f(x), sp.log_ndtr(x).sum())
    close(f.grad(x), reference(1), rtol=1e-13)
    # -r (x + r) cancels at -35 (x + r = 0.03 from r = 35): 1e-11 is the formula's error
    close(np.diag(f.hessian(x)), reference(2), rtol=1e-10)
    # the same function from table ops is log(0) = -inf at -35, its gradient nan
    assert np.isfinite(f.grad(x)).all()


def test_probit_fit_with_minimize():
    X = RNG.normal(size=(400, 2))
    beta = np.array([1.5, -0.7])
    y = (X @ beta + RNG.normal(size=400) > 0).astype(float)
    s = 2 * y - 1

    def nll(b):
        return -tj.sum(log_ndtr(s * (tj.asarray(X) @ b)))
    res = tj.minimize(nll, np.zeros(2))
    # the gradient of the negative log-likelihood vanishes at the fit (closed form)
    z = s * (X @ res.x)
    score = (s * np.exp(-0.5 * z ** 2 - sp.log_ndtr(z)) * _INV_SQRT_2PI) @ X
    close(score, np.zeros(2), atol=1e-5)


# --------------------------------------------------------------------------------------
# refusals and reports
# --------------------------------------------------------------------------------------
def test_a_missing_rule_names_the_primitive_and_the_rule():
    value_only = tj.primitive(lambda x: x * x * x, name="cube_value_only")
    f = tj.trace(lambda v: tj.sum(value_only(v)), np.ones(3))
    close(f(np.array([1.0, 2.0, 3.0])), 36.0)
    with pytest.raises(NotImplementedError, match="'cube_value_only' has no first-derivative.*defderiv"):
        f.grad(np.ones(3))
    value_only.defderiv(lambda x, o: 3.0 * x * x)
    close(f.grad(np.array([1.0, 2.0, 3.0])), [3.0, 12.0, 27.0])         # given later, used at once
    with pytest.raises(NotImplementedError, match="'cube_value_only' has no second-derivative.*defhess"):
        f.hvp(np.ones(3), v=np.ones(3))
    x = tj.tensor(2.0, requires_grad=True)
    value_only(x).backward()
    close(x.grad.item(), 12.0)
    other = tj.primitive(lambda x: 2.0 * x, name="twice_value_only")
    y = tj.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(NotImplementedError, match="'twice_value_only' has no first-derivative"):
        tj.sum(other(y) * y).backward()
    other.defderiv(lambda x, o: 2.0)
    y2 = tj.tensor([1.0, 2.0], requires_grad=True)
    tj.sum(other(y2) * y2).backward()          # nothing left over from the sweep that raised
    close(y2.grad.numpy(), [4.0, 8.0])


def test_a_kernel_that_raises_is_reported():
    @tj.primitive
    def picky_sqrt(x):
        if x < 0.0:
            raise ValueError("picky_sqrt wants x >= 0")
        return math.sqrt(x)
    picky_sqrt.defderiv(lambda x, o: 0.5 / o)
    with pytest.raises(tj.PrimitiveError, match="'picky_sqrt' raised ValueError: picky_sqrt wants"):
        picky_sqrt(tj.tensor(-1.0, requires_grad=True))
    f = tj.trace(lambda v: tj.sum(picky_sqrt(v)), np.ones(2))
    X = np.abs(RNG.normal(size=(5000, 2)))
    close(f.batch_grad(X), 0.5 / np.sqrt(X))
    X[4321, 1] = -1.0
    with pytest.raises(ValueError, match="picky_sqrt wants") as info:
        f.batch_grad(X)
    assert "picky_sqrt" in " ".join(getattr(info.value, "__notes__", []))


def test_a_nan_from_a_number_is_reported_by_name():
    half = tj.primitive(lambda x: math.nan if x > 1.0 else x, name="nan_above_one")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        half(tj.tensor([0.5, np.nan], requires_grad=True))     # nan in, nan out: no report
        assert not caught
        half(tj.tensor([0.5, 2.0], requires_grad=True))
    assert len(caught) == 1 and issubclass(caught[0].category, tj.PrimitiveWarning)
    assert "'nan_above_one' returned nan at (2.0)" in str(caught[0].message)


def test_saved_tapes_name_their_primitives(tmp_path, monkeypatch):
    path = tmp_path / "f.npz"
    F_PRIM.save(path)
    x = RNG.normal(size=N)
    close(tj.load(path).grad(x), F_PRIM.grad(x))
    # a newer primitive under the same name is what a load finds (its own number)
    monkeypatch.delitem(primitives.BY_NAME, "hypot_p")
    with pytest.raises(tj.TapeFormatError, match="user primitive 'hypot_p', which is not registered"):
        tj.load(path)


def test_a_tape_naming_an_unknown_primitive_is_invalid():
    from tapejit.tape.tape import validate
    bad = F_PRIM.arrays
    cv = bad.cv.copy()
    cv[np.isin(bad.ops, primitives.PRIMITIVE_OPS)] = 10 ** 6
    with pytest.raises(tj.InvalidTapeError, match="primitive number"):
        validate(type(bad)(bad.ops, bad.ins, cv, bad.consts, bad.idx, bad.n_slots))


def test_the_gpu_refuses_a_mode_whose_rule_is_missing():
    # checked before anything is launched (a device kernel cannot raise): no GPU needed
    value_only = tj.primitive(lambda x: x * x, name="square_value_only_gpu")
    f = tj.trace(lambda v: tj.sum(value_only(v)), np.ones(2))
    with pytest.raises(NotImplementedError, match="'square_value_only_gpu' has no d rule.*GPU.*defderiv"):
        f.batch_grad(np.ones((4, 2)), device="cuda")
    value_only.defderiv(lambda x, o: 2.0 * x)
    with pytest.raises(NotImplementedError, match="has no d2 rule.*defhess"):
        f.batch_hvp(np.ones((4, 2)), V=np.ones((4, 2)), device="cuda")


def test_registration_errors():
    with pytest.raises(tj.PrimitiveError, match="takes 3 arguments"):
        tj.primitive(lambda a, b, c: a)
    with pytest.raises(tj.PrimitiveError, match="does not compile with Numba"):
        tj.primitive(lambda x: {"a": x}["b"] + object(), name="not_numba")
    with pytest.raises(tj.PrimitiveError, match="defderiv takes 2 rule"):
        hypot_p.defderiv(lambda a, b, o: 1.0)
    with pytest.raises(TypeError, match="takes 2 argument"):
        hypot_p(1.0)


def test_registering_compiles_no_interpreter_code():
    F_PRIM.grad(X0)                         # the sweeps and kernels this tape needs, ready
    kernels_before = dict(_kernels._kernels)
    overloads_before = {name: len(getattr(_sweeps_cpu, name).overloads) for name in codegen.CPU_SWEEPS}
    fresh = tj.primitive(lambda x: 2.0 * x + 1.0, name="affine_p").defderiv(lambda x, o: 2.0)
    f = tj.trace(lambda v: tj.sum(fresh(v) * softplus_p(v) + hypot_p(v, v)), X0)
    close(f.grad(X0), 2 * np.log1p(np.exp(X0)) + (2 * X0 + 1) * _sig_np(X0) + 2 * np.sign(X0) / np.sqrt(2))
    assert dict(_kernels._kernels) == kernels_before
    assert {name: len(getattr(_sweeps_cpu, name).overloads) for name in codegen.CPU_SWEEPS} == overloads_before
