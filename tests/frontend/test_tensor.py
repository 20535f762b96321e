"""The eager, PyTorch-style API: values, gradients, broadcasting, indexing, semantics."""
import subprocess
import sys
import threading

import numpy as np
import pytest
import scipy.special as sp
from scipy.optimize import rosen, rosen_der

import tapejit as tj
from helpers import numeric_grad

rng = np.random.default_rng(1)


def test_seed_example_verbatim():
    code = (
        "import tapejit as tj\n"
        "x = tj.tensor(2.0, requires_grad=True)\n"
        "y = x**2 + 3*x + 1\n"
        "y.backward()\n"
        'print(f"Gradient at x=2: {x.grad.item()}")\n'
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "Gradient at x=2: 7.0\n"


def test_rosenbrock_gradient_matches_scipy():
    w0 = rng.standard_normal(1000)
    w = tj.tensor(w0, requires_grad=True)
    loss = tj.sum(100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2)
    loss.backward()
    assert loss.item() == pytest.approx(rosen(w0), rel=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), rosen_der(w0), rtol=1e-11, atol=1e-9)


def grad_check(fn, *shapes, seed=0):
    """Gradient of sum(fn(tj, *xs)) against finite differences of fn(np, *xs)."""
    r = np.random.default_rng(seed)
    xs = [r.uniform(0.5, 1.5, s) for s in shapes]
    ts = [tj.tensor(x, requires_grad=True) for x in xs]
    out = tj.sum(fn(tj, *ts))
    out.backward()
    assert out.item() == pytest.approx(float(np.sum(fn(np, *xs))), rel=1e-12)
    for k, (x, t) in enumerate(zip(xs, ts)):
        def f(xk, k=k):
            args = list(xs)
            args[k] = xk
            return float(np.sum(fn(np, *args)))
        np.testing.assert_allclose(t.grad.numpy(), numeric_grad(f, x.copy()), rtol=1e-6, atol=1e-8)


def test_broadcasting_gradients():
    grad_check(lambda m, a, b: m.sin(a) * b, (3, 1), (1, 4))
    grad_check(lambda m, a, b: a / b + a, (2, 3, 4), (4,))
    grad_check(lambda m, a, b: m.maximum(a, b) - m.minimum(a, 2 * b), (5,), (1,))
    grad_check(lambda m, a, b, c: m.where(a > 1.0, b, c), (3, 4), (4,), (3, 1))


def test_mixing_python_scalars_and_numpy_arrays_on_either_side():
    c = rng.uniform(1, 2, 4)
    grad_check(lambda m, a: (2.0 - a) * c + c / a - a ** 1.5 + 2 ** a, (4,))
    grad_check(lambda m, a: c * a + a * c - c - a + 3 / a, (4,))
    x = tj.tensor(c, requires_grad=True)
    assert isinstance(c * x, tj.Tensor) and isinstance(c + x, tj.Tensor) and isinstance(c @ x, tj.Tensor)


@pytest.mark.parametrize("key", [
    3, -1, slice(1, None), slice(None, -1), slice(None, None, 2), slice(None, None, -3),
    np.array([0, 2, 2, 5]), np.array([True, False] * 4), [1, 1, 7],
])
def test_indexing_gradients_1d(key):
    grad_check(lambda m, a: m.exp(a[key]) * 2.0, (8,))


@pytest.mark.parametrize("key", [
    (1,), (slice(None), 2), (slice(1, 3), slice(None, None, 2)), (Ellipsis, 1), (None, 0),
    (np.array([0, 2]), slice(None)), (slice(None), np.array([3, 0, 0])),
    (np.array([[True, False, True, False]] * 3),),
])
def test_indexing_gradients_2d(key):
    grad_check(lambda m, a: m.sin(a[key]), (3, 4))


def test_reductions_and_products():
    grad_check(lambda m, a: m.sum(a * a, axis=0), (3, 4))
    grad_check(lambda m, a: m.sum(a, axis=1, keepdims=True) * a, (3, 4))
    grad_check(lambda m, a: m.mean(m.exp(a), axis=(0, 2)), (2, 3, 4))
    grad_check(lambda m, a: m.amax(a, axis=1) + m.amin(a, axis=0).sum(), (3, 4))
    grad_check(lambda m, a, b: m.dot(a, b), (5,), (5,))
    grad_check(lambda m, a, b: a @ b, (3, 5), (5,))
    grad_check(lambda m, a, b: a @ b, (5,), (5, 2))
    grad_check(lambda m, a, b: m.matmul(a, b), (3, 5), (5, 2))
    grad_check(lambda m, a, b: (a.T @ b.T), (5, 3), (2, 5))
    M = rng.uniform(-1, 1, (4, 6))
    grad_check(lambda m, a: m.tanh(M @ a), (6,))
    grad_check(lambda m, a: m.tanh(a @ M.T), (6,))
    grad_check(lambda m, a: M @ a[::2], (12,))


def test_shape_functions():
    grad_check(lambda m, a: m.reshape(a, (6, 2)) * m.arange(2.0), (3, 4))
    grad_check(lambda m, a: m.transpose(a) * m.arange(3.0), (3, 4))
    grad_check(lambda m, a: a.T.reshape(-1) * m.arange(12.0), (3, 4))
    grad_check(lambda m, a, b: m.concatenate([a, b, a]) ** 2, (3,), (2,))
    grad_check(lambda m, a, b: m.stack([a, b], axis=1) ** 3, (3,), (3,))
    grad_check(lambda m, a, b: m.concatenate([a, b], axis=1) * 2, (2, 3), (2, 1))


def test_softmax_and_logsumexp_against_scipy():
    x0 = rng.standard_normal((3, 5)) * 10
    x = tj.tensor(x0, requires_grad=True)
    np.testing.assert_allclose(tj.softmax(x, axis=1).numpy(), sp.softmax(x0, axis=1), rtol=1e-13)
    np.testing.assert_allclose(tj.softmax(x, axis=0).numpy(), sp.softmax(x0, axis=0), rtol=1e-13)
    np.testing.assert_allclose(tj.logsumexp(x, axis=1).numpy(), sp.logsumexp(x0, axis=1), rtol=1e-13)
    np.testing.assert_allclose(tj.log_softmax(x).numpy(), sp.log_softmax(x0, axis=-1), rtol=1e-12, atol=1e-12)
    tj.logsumexp(x).backward()
    np.testing.assert_allclose(x.grad.numpy(), sp.softmax(x0), rtol=1e-12)
    w = rng.standard_normal((3, 5))
    grad_check(lambda m, a: (sp.softmax(a, axis=1) if m is np else m.softmax(a, axis=1)) * w, (3, 5))
    big = tj.tensor([1000.0, 1000.0], requires_grad=True)
    assert tj.logsumexp(big).item() == pytest.approx(1000 + np.log(2))


def test_grad_accumulates_until_reset():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    for k in range(1, 4):
        tj.sum(x * x).backward()
        np.testing.assert_allclose(x.grad.numpy(), 2 * k * np.array([1.0, 2.0]))
    x.grad = None
    tj.sum(x * 3).backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])


def test_backward_on_non_scalar_needs_gradient():
    x = tj.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    with pytest.raises(tj.BackwardError, match="needs a gradient"):
        y.backward()
    with pytest.raises(tj.ShapeError):
        y.backward(np.ones(3))
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 40.0])


def test_no_grad_records_nothing():
    x = tj.tensor(3.0, requires_grad=True)
    with tj.no_grad():
        y = x * x + 1
    assert not y.requires_grad and y.item() == 10.0
    with pytest.raises(tj.BackwardError):
        y.backward()


def test_consumed_tape_raises_and_retain_graph_keeps_it():
    x = tj.tensor(2.0, requires_grad=True)
    y = x * x
    z = y * 3
    z.backward()
    with pytest.raises(tj.TapeConsumedError):
        z.backward()
    with pytest.raises(tj.TapeConsumedError):
        _ = y + 1
    assert y.item() == 4.0                      # reading the value is still fine
    assert (y.detach() + 1).item() == 5.0       # and so is a detached copy
    x.grad = None
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0


def test_detach_cuts_the_gradient():
    x = tj.tensor(2.0, requires_grad=True)
    y = x * x.detach()
    y.backward()
    assert x.grad.item() == 2.0


def test_chain_of_a_million_operations():
    x = tj.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(1_000_000):
        y = y * 1.000001
    y.backward()
    assert x.grad.item() == pytest.approx(1.000001 ** 1_000_000, rel=1e-9)


def test_leaf_used_many_times_and_unused_leaf():
    x = tj.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x[0] * x[1] + x[1] * x[2] + x[2] * x[0]
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 4.0, 3.0])


def test_tensor_properties():
    a = np.arange(12.0).reshape(3, 4)
    t = tj.tensor(a, requires_grad=True)
    assert t.shape == (3, 4) and t.ndim == 2 and t.size == 12 and len(t) == 3
    assert t.T.shape == (4, 3) and t.reshape(2, 6).shape == (2, 6)
    np.testing.assert_array_equal(t.sum(axis=0).numpy(), a.sum(axis=0))
    assert t.mean().item() == pytest.approx(a.mean())
    assert t.requires_grad and t.is_leaf
    y = t * 2
    assert y.requires_grad and not y.is_leaf and not y.detach().requires_grad
    assert [row.shape for row in t] == [(4,)] * 3
    assert (t > 5).dtype == np.bool_ and (t > 5).numpy().sum() == 6
    assert tj.tensor([True, False]).dtype == np.bool_
    assert "requires_grad=True" in repr(t)


def test_numpy_functions_dispatch_to_tapejit():
    x0 = rng.uniform(0.5, 1.5, 6)
    x = tj.tensor(x0, requires_grad=True)
    y = np.sum(np.sin(x) * np.exp(x))
    assert isinstance(y, tj.Tensor)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.cos(x0) * np.exp(x0) + np.sin(x0) * np.exp(x0), rtol=1e-13)


def test_constants_compute_without_recording():
    a = tj.tensor([1.0, 4.0])
    b = tj.sqrt(a) + 1
    assert not b.requires_grad
    np.testing.assert_array_equal(b.numpy(), [2.0, 3.0])
    assert tj.sum(a).item() == 5.0 and (a @ a).item() == 17.0


def test_errors_name_the_problem():
    with pytest.raises(tj.ShapeError, match=r"shapes \(3,\) and \(4,\) do not broadcast"):
        tj.tensor(np.ones(3), requires_grad=True) + np.ones(4)
    with pytest.raises(tj.DTypeError, match="complex"):
        tj.tensor(np.ones(3, dtype=complex))
    with pytest.raises(tj.DTypeError):
        tj.tensor(["a", "b"])
    with pytest.raises(tj.ShapeError, match="do not align"):
        tj.tensor(np.ones((2, 3)), requires_grad=True) @ np.ones(4)
    with pytest.raises(IndexError):
        tj.tensor(np.ones(3), requires_grad=True)[5]
    with pytest.raises(tj.TapejitError, match="requires grad"):
        tj.tensor(np.ones(3), requires_grad=True)[0] = 1.0
    with pytest.raises(tj.ShapeError, match="ambiguous"):
        bool(tj.tensor(np.ones(3)))
    assert issubclass(tj.ShapeError, tj.TapejitError)


def test_recording_is_per_thread():
    x = tj.tensor(2.0, requires_grad=True)
    y = x * x
    results = {}

    def other():
        z = tj.tensor(5.0, requires_grad=True)
        w = z * z * z
        w.backward()
        results["grad"] = z.grad.item()
        try:
            y * 2
        except tj.TapejitError as err:
            results["error"] = str(err)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert results["grad"] == 75.0 and "another thread" in results["error"]
    y.backward()
    assert x.grad.item() == 4.0


def test_abandoned_recordings_do_not_grow_the_tape():
    from tapejit.frontend.tensor import _state
    x = tj.tensor(np.ones(3), requires_grad=True)
    for _ in range(3000):
        y = tj.sum(x * 2.0)          # recorded, never differentiated, then dropped
    del y
    assert _state.tape.n_ins < 10_000


def test_numpy_named_functions_take_python_numbers():
    assert tj.sin(0.5).item() == np.sin(0.5)
    assert tj.exp(1).item() == np.exp(1.0)
    np.testing.assert_allclose(tj.log1p(np.array([0.5, 2.0])).numpy(), np.log1p([0.5, 2.0]), rtol=1e-15)


def test_a_loop_holding_the_last_tensors_reuses_two_tapes(monkeypatch):
    # at each iteration's first operation the previous x and y still hold the tape before
    module = sys.modules["tapejit.frontend.tensor"]
    made = []

    class CountedTape(module.Tape):
        def __init__(self, *args):
            made.append(args)
            super().__init__(*args)

    monkeypatch.setattr(module, "Tape", CountedTape)
    module._state.tape = module._state.spare = None
    tapes = set()
    for k in range(20):
        x = tj.tensor(0.1 * k, requires_grad=True)
        y = x * tj.sin(x) + x**2 * 3.0
        tapes.add(id(y._tape))
        y.backward()
        assert x.grad.item() == pytest.approx(np.sin(0.1 * k) + 0.1 * k * np.cos(0.1 * k) + 6 * 0.1 * k,
                                              rel=1e-14, abs=1e-15)
    assert len(tapes) == 2 and len(made) == 2


def test_leaves_bound_to_the_tape_record_on_every_path():
    # the first use binds a leaf; later uses (either side, with numbers, with tensors,
    # with itself) take the fast paths; a new recording binds it again
    for _ in range(2):
        x = tj.tensor(1.5, requires_grad=True)
        w = tj.tensor(-0.5, requires_grad=True)
        y = (x * w) + (2.0 - x) / w + x * x + tj.exp(w) * (w ** 3.0) - x / 4
        y.backward()
        gx = w.item() - 1 / w.item() + 2 * x.item() - 0.25
        gw = x.item() - (2.0 - x.item()) / w.item() ** 2 + np.exp(w.item()) * (w.item() ** 3 + 3 * w.item() ** 2)
        assert x.grad.item() == pytest.approx(gx, rel=1e-14)
        assert w.grad.item() == pytest.approx(gw, rel=1e-14)
    # a bound leaf under no_grad, or inside a trace, is a constant there
    x = tj.tensor(2.0, requires_grad=True)
    y = x * 3.0
    with tj.no_grad():
        z = x * 5.0 + x
    assert not z.requires_grad and z.item() == 12.0
    f = tj.trace(lambda u: u * x + x, np.ones(1))
    assert f.grad(np.array([4.0]))[0] == 2.0 and f(np.array([4.0])) == 10.0
    y.backward()
    assert x.grad.item() == 3.0
    # a leaf that stopped requiring grad after it was bound is a constant from then on
    x = tj.tensor(2.0, requires_grad=True)
    w = tj.tensor(3.0, requires_grad=True)
    y = x * w
    x.requires_grad = False
    y = y + x * 5.0
    y.backward()
    assert w.grad.item() == 2.0


def test_a_tape_reused_after_scalar_and_vector_recordings_differentiates_correctly():
    # reset() keeps a scalar-only recording's operand fields: a unary instruction recorded
    # over a binary one's row must not read them, on the plain and on the tiled reverse
    x0 = rng.uniform(0.5, 1.5, 4096)
    for _ in range(3):
        a = tj.tensor(0.7, requires_grad=True)
        b = tj.tensor(1.3, requires_grad=True)
        y = a * b + a / b - b * b
        tape = y._tape
        # the scalar records leave n and the strides to the rows' defaults
        assert (tape.ins[[1, 3, 5, 7], :tape.n_ins] == np.array([[1], [0], [0], [0]])).all()
        y.backward()
        del y, tape
        assert a.grad.item() == pytest.approx(1.3 + 1 / 1.3, rel=1e-15)
        a = tj.tensor(0.7, requires_grad=True)
        v = tj.tensor(x0, requires_grad=True)
        s = tj.sqrt(tj.sin(tj.exp(a)))                  # unary rows over the rows above
        loss = tj.sum(tj.exp(v * s) * v)
        loss.backward()
        sv = np.sqrt(np.sin(np.exp(0.7)))
        np.testing.assert_allclose(v.grad.numpy(), np.exp(x0 * sv) * (1 + x0 * sv), rtol=1e-13)
        ds = np.cos(np.exp(0.7)) * np.exp(0.7) / (2 * sv)
        assert a.grad.item() == pytest.approx(np.sum(np.exp(x0 * sv) * x0 * x0) * ds, rel=1e-12)


def test_stacked_scalars_and_vector_softmax_agree_with_the_general_paths():
    # stack of recorded scalars (axis 0) and softmax of a recorded contiguous vector have
    # fast paths; axis=-1 and a (1, n) softmax take the general ones
    x0 = np.array([0.3, -1.7, 2.2, 0.9])
    w = np.array([0.5, -2.0, 1.0, 3.0])

    def loss(fast):
        x = tj.tensor(x0, requires_grad=True)
        nodes = list(x * 1.5)                                   # scalars on the tape
        nodes = [nodes[0] * nodes[1], nodes[2], nodes[3] + 1.0, tj.exp(nodes[0])]
        v = tj.stack(nodes) if fast else tj.stack(nodes, axis=-1)
        s = tj.softmax(v) if fast else tj.reshape(tj.softmax(tj.reshape(v, (1, 4)), axis=1), (4,))
        assert isinstance(v.numpy(), np.ndarray) and v.shape == (4,)
        y = tj.sum(s * w)
        y.backward()
        return v.numpy(), s.numpy(), y.item(), x.grad.numpy()
    fast, general = loss(True), loss(False)
    for a, b in zip(fast, general):
        np.testing.assert_array_equal(a, b)
    u = 1.5 * x0
    v = np.array([u[0] * u[1], u[2], u[3] + 1.0, np.exp(u[0])])
    s = sp.softmax(v)
    np.testing.assert_allclose(fast[1], s, rtol=1e-14)
    dv = s * (w - s @ w)                                         # softmax's closed-form VJP
    dx = 1.5 * np.array([dv[0] * u[1] + dv[3] * np.exp(u[0]), dv[0] * u[0], dv[1], dv[2]])
    np.testing.assert_allclose(fast[3], dx, rtol=1e-13)


def test_stacks_and_softmaxes_off_the_fast_paths():
    x = tj.tensor([0.5, -1.0, 2.0, 4.0], requires_grad=True)
    a, b, c, d = x
    flags = tj.stack([a > 0, b > 0])                              # booleans stay booleans
    assert flags.numpy().dtype == bool and flags.numpy().tolist() == [True, False]
    mixed = tj.stack([a, 2.5, c])                                 # a Python number among scalars
    np.testing.assert_array_equal(mixed.numpy(), [0.5, 2.5, 2.0])
    strided = tj.softmax(x[::2])                                  # a strided view
    np.testing.assert_allclose(strided.numpy(), sp.softmax([0.5, 2.0]), rtol=1e-15)
    (tj.sum(mixed * strided[0]) + strided[1]).backward()
    s = sp.softmax([0.5, 2.0])
    # d/dx of s0 * (a + 2.5 + c) + s1, with s = softmax(a, c)
    total = 0.5 + 2.5 + 2.0
    ds = np.array([total, 1.0])
    da_dc = s * (ds - s @ ds)
    np.testing.assert_allclose(x.grad.numpy(), [s[0] + da_dc[0], 0.0, s[0] + da_dc[1], 0.0], rtol=1e-13)
    with pytest.raises(tj.TapejitError):
        tj.stack([])
