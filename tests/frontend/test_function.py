"""Record once, replay many: tj.trace, Function, the batch engine, guards."""
import pickle

import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der

import tapejit as tj
from helpers import numeric_grad, numeric_jacobian

rng = np.random.default_rng(2)


def rosen_tj(x):
    return tj.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def eager_value_and_grad(fn, x):
    t = tj.tensor(x, requires_grad=True)
    y = fn(t)
    y.backward()
    return y.item(), t.grad.numpy()


def test_replay_equals_eager_recording_at_new_points():
    def fn(x):
        return tj.sum(tj.sin(x) * tj.exp(-x ** 2) + tj.log1p(x * x)) / tj.norm(x)
    f = tj.trace(fn, np.ones(6))
    for _ in range(5):
        x = rng.standard_normal(6)
        value, grad = eager_value_and_grad(fn, x)
        assert f(x) == pytest.approx(value, rel=1e-14)
        np.testing.assert_allclose(f.grad(x), grad, rtol=1e-13, atol=1e-15)


def test_rosenbrock_against_scipy_and_sizes():
    f = tj.trace(rosen_tj, np.zeros(10))
    x = rng.standard_normal(10)
    assert f(x) == pytest.approx(rosen(x), rel=1e-14)
    v, g = f.value_and_grad(x)
    np.testing.assert_allclose(g, rosen_der(x), rtol=1e-13)
    assert f.n_inputs == 10 and f.n_outputs == 1 and len(f) > 0
    assert "square" in f.summary(file=open("/dev/null", "w"))


def test_batch_equals_loop_of_single_calls():
    f = tj.trace(rosen_tj, np.zeros(7))
    X = rng.standard_normal((3001, 7))
    vals, grads = f.batch_value_and_grad(X)
    assert vals.shape == (3001,) and grads.shape == (3001, 7)
    for i in range(0, 3001, 97):
        assert vals[i] == pytest.approx(f(X[i]), rel=1e-14)
        np.testing.assert_allclose(grads[i], f.grad(X[i]), rtol=1e-14)
    np.testing.assert_allclose(f.batch(X), vals)
    np.testing.assert_allclose(f.batch_grad(X), grads)


@pytest.mark.parametrize("B", [0, 1, 2, 9])
def test_small_batches(B):
    f = tj.trace(rosen_tj, np.zeros(4))
    X = rng.standard_normal((B, 4))
    vals, grads = f.batch_value_and_grad(X)
    assert vals.shape == (B,) and grads.shape == (B, 4)
    for i in range(B):
        np.testing.assert_allclose(grads[i], rosen_der(X[i]), rtol=1e-13)


def test_batch_with_structural_ops_matches_single_calls():
    M = rng.standard_normal((4, 6))

    def fn(x):
        z = M @ x
        s = tj.softmax(tj.reshape(x, (2, 3)), axis=1)
        m = tj.amax(tj.reshape(x, (3, 2)), axis=1)
        return tj.sum(tj.tanh(z)) + tj.sum(s * s) + tj.logsumexp(m) + tj.dot(x[::2], x[1::2]) \
            + tj.sum(tj.reshape(x, (2, 3)) @ tj.reshape(x, (3, 2)))
    f = tj.trace(fn, np.ones(6))
    X = rng.standard_normal((300, 6))
    vals, grads = f.batch_value_and_grad(X)
    for i in range(0, 300, 23):
        value, grad = eager_value_and_grad(fn, X[i])
        assert vals[i] == pytest.approx(value, rel=1e-13)
        np.testing.assert_allclose(grads[i], grad, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads[i], numeric_grad(lambda z: f(z), X[i].copy()), rtol=1e-6, atol=1e-8)


def test_params_change_without_retracing():
    X0, y0 = rng.standard_normal((30, 5)), rng.standard_normal(30)

    def loss(w, X, y):
        r = X @ w - y
        return tj.sum(r * r)
    f = tj.trace(loss, np.zeros(5), params=(X0, y0))
    n_before = len(f)
    w = rng.standard_normal(5)
    X2, y2 = rng.standard_normal((30, 5)), rng.standard_normal(30)
    np.testing.assert_allclose(f.grad(w), 2 * X0.T @ (X0 @ w - y0), rtol=1e-12)
    np.testing.assert_allclose(f.grad(w, params=(X2, y2)), 2 * X2.T @ (X2 @ w - y2), rtol=1e-12)
    assert f(w, params=(X2, y2)) == pytest.approx(np.sum((X2 @ w - y2) ** 2))
    W = rng.standard_normal((50, 5))
    G = f.batch_grad(W, params=(X2, y2))
    np.testing.assert_allclose(G, 2 * (W @ X2.T - y2) @ X2, rtol=1e-11)
    assert len(f) == n_before
    with pytest.raises(tj.ShapeError):
        f.grad(w, params=(X2[:3], y2))


def test_one_point_calls_accept_any_input_layout_and_leave_no_adjoints_behind():
    """value_and_grad runs as one compiled call (tapejit.cpu.point): inputs in any layout or
    dtype, short and long runs, and repeated calls that each start from clean adjoints."""
    x = rng.standard_normal(12)
    for n in (12, 300):
        f = tj.trace(rosen_tj, np.zeros(n))
        base = rng.standard_normal(2 * n)
        for point in (base[:n], base[::2], np.asfortranarray(base[:n]), base[:n].tolist()):
            expected = rosen_der(np.asarray(point, dtype=float))
            for _ in range(2):                      # a second call sees no stale adjoints
                value, grad = f.value_and_grad(point)
                assert value == pytest.approx(rosen(np.asarray(point, dtype=float)), rel=1e-12)
                np.testing.assert_allclose(grad, expected, rtol=1e-13)
        frozen = base[:n].copy()
        frozen.flags.writeable = False
        np.testing.assert_allclose(f.grad(frozen), rosen_der(frozen), rtol=1e-13)
    f = tj.trace(rosen_tj, np.zeros(12))
    ints = np.arange(12) % 3
    np.testing.assert_allclose(f.grad(ints), rosen_der(ints.astype(float)), rtol=1e-13)
    with tj.debug_nans():                         # the checked, step-by-step path agrees
        np.testing.assert_allclose(f.grad(x), rosen_der(x), rtol=1e-13)


def test_a_flipped_guard_leaves_the_next_call_correct():
    """Every one-call path (value, gradient, vjp, jvp, hvp) checks the guards before its
    reverse or its result, and leaves the workspaces ready for the next point."""
    f = tj.trace(branchy, np.ones(3))
    flipped, x, t = np.array([-1.0, 1.0, 0.0]), np.array([2.0, 1.0, 3.0]), np.array([0.5, -1.0, 2.0])
    calls = (lambda z: f(z), lambda z: f.value_and_grad(z), lambda z: f.vjp(z, u=2.0),
             lambda z: f.jvp(z, t), lambda z: f.hvp(z, t))
    for call in calls:
        for _ in range(2):
            with pytest.raises(tj.BranchChangedError):
                call(flipped)
            value, grad = f.value_and_grad(x)                  # sum(x * x) on this branch
            assert value == pytest.approx(14.0)
            np.testing.assert_allclose(grad, 2 * x)
            np.testing.assert_allclose(f.vjp(x, u=2.0)[1], 4 * x)
            assert f.jvp(x, t)[1] == pytest.approx(2 * x @ t)
            np.testing.assert_allclose(f.hvp(x, t), 2 * t)


def test_vector_outputs_and_several_arguments():
    def fn(x, y):
        return tj.stack([tj.sum(x * y), tj.sum(x) * y[0], tj.exp(x[1])])
    f = tj.trace(fn, np.ones(3), np.ones(3))
    x, y = rng.standard_normal(3), rng.standard_normal(3)
    out = f(x, y)
    np.testing.assert_allclose(out, [np.sum(x * y), np.sum(x) * y[0], np.exp(x[1])], rtol=1e-14)
    assert f.output_shape == (3,)
    u = rng.standard_normal(3)
    _, (gx, gy) = f.vjp(x, y, u=u)
    J = numeric_jacobian(lambda z: f(z[:3], z[3:]), np.concatenate([x, y]))
    np.testing.assert_allclose(np.concatenate([gx, gy]), u @ J, rtol=1e-6, atol=1e-8)
    with pytest.raises(tj.TapejitError, match="scalar output"):
        f.grad(x, y)
    X, Y = rng.standard_normal((20, 3)), rng.standard_normal((20, 3))
    vals = f.batch(X, Y)
    assert vals.shape == (20, 3)
    np.testing.assert_allclose(vals[4], f(X[4], Y[4]))
    U = rng.standard_normal((20, 3))
    _, (GX, GY) = f.batch_vjp(X, Y, U=U)
    np.testing.assert_allclose(GX[7], f.vjp(X[7], Y[7], u=U[7])[1][0], rtol=1e-14)
    g = tj.trace(lambda a, b: tj.sum(a * b * b), np.ones(2), np.ones(2))
    ga, gb = g.grad(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    np.testing.assert_allclose(ga, [9.0, 16.0])
    np.testing.assert_allclose(gb, [6.0, 16.0])


def branchy(x):
    if x[0] > 0:
        return tj.sum(x * x)
    return tj.sum(tj.sin(x))


def test_guard_flip_raises_for_one_point():
    f = tj.trace(branchy, np.ones(3))
    assert f.grad(np.array([2.0, 1.0, 0.0])) == pytest.approx([4.0, 2.0, 0.0])
    with pytest.raises(tj.BranchChangedError):
        f.grad(np.array([-1.0, 1.0, 0.0]))


def test_guard_flips_in_a_batch_all_three_modes():
    f = tj.trace(branchy, np.ones(3))
    X = rng.standard_normal((200, 3))
    pos = X[:, 0] > 0
    expected = np.where(pos[:, None], 2 * X, np.cos(X))
    with pytest.raises(tj.BranchChangedError, match="different Python branch"):
        f.batch_grad(X)
    grads, valid = f.batch_grad(X, on_branch_change="mask")
    np.testing.assert_array_equal(valid, pos)
    np.testing.assert_allclose(grads[valid], expected[valid], rtol=1e-14)
    grads = f.batch_grad(X, on_branch_change="retrace")
    np.testing.assert_allclose(grads, expected, rtol=1e-14)
    vals = f.batch(X, on_branch_change="retrace")
    np.testing.assert_allclose(vals, np.where(pos, np.sum(X * X, axis=1), np.sum(np.sin(X), axis=1)), rtol=1e-14)


def test_python_scalars_of_traced_values_raise():
    for bad in (lambda x: float(x[0]), lambda x: x[0].item(), lambda x: x.numpy(), lambda x: int(x[1])):
        with pytest.raises(tj.TraceError, match="tj.where"):
            tj.trace(lambda x, bad=bad: tj.sum(x) * bad(x), np.ones(3))


def test_trace_leaves_the_cycle_collector_as_it_found_it():
    """Recording pauses Python's cycle collector; it must come back on, also when the
    traced function raises, and stay off for a caller who had turned it off."""
    import gc
    assert gc.isenabled()
    calls_seen = []

    def watch(x):
        calls_seen.append(gc.isenabled())
        return tj.sum(x * x)
    f = tj.trace(watch, np.ones(3))
    assert calls_seen == [False] and gc.isenabled()
    np.testing.assert_allclose(f.grad(np.arange(3.0)), 2 * np.arange(3.0))
    with pytest.raises(tj.TraceError):
        tj.trace(lambda x: float(x[0]) * x, np.ones(3))
    assert gc.isenabled()
    gc.disable()
    try:
        tj.trace(watch, np.ones(3))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_where_differentiates_through_a_branch_without_guards():
    f = tj.trace(lambda x: tj.sum(tj.where(x > 0, x * x, tj.sin(x))), np.ones(3))
    assert len(f.guards) == 0
    X = rng.standard_normal((50, 3))
    np.testing.assert_allclose(f.batch_grad(X), np.where(X > 0, 2 * X, np.cos(X)), rtol=1e-14)


def test_grad_sugar_traces_per_shape_and_retraces_on_branch_change():
    g = tj.grad(branchy)
    np.testing.assert_allclose(g(np.array([1.0, 2.0])), [2.0, 4.0])
    np.testing.assert_allclose(g(np.array([-1.0, 2.0])), np.cos([-1.0, 2.0]))
    np.testing.assert_allclose(g(np.array([1.0, 2.0, 3.0])), [2.0, 4.0, 6.0])
    value, grad = tj.value_and_grad(rosen_tj)(np.ones(5))
    assert value == 0.0 and np.all(grad == 0.0)


def test_bad_shapes_raise_clear_errors():
    f = tj.trace(rosen_tj, np.zeros(4))
    with pytest.raises(tj.ShapeError, match="shape"):
        f(np.zeros(5))
    with pytest.raises(tj.ShapeError, match=r"\(B, \*\(4,\)\)"):
        f.batch_grad(np.zeros((3, 5)))
    with pytest.raises(tj.ShapeError):
        f.batch(np.zeros(4))
    with pytest.raises(tj.TapejitError, match="on_branch_change"):
        f.batch(np.zeros((2, 4)), on_branch_change="ignore")
    with pytest.raises(tj.DTypeError):
        f(np.array(["a"] * 4))


def test_constant_output_and_pickle_round_trip():
    f = tj.trace(lambda x: tj.tensor(3.0), np.zeros(2))
    assert f(np.ones(2)) == 3.0 and np.all(f.grad(np.ones(2)) == 0.0)
    g = tj.trace(rosen_tj, np.zeros(5))
    h = pickle.loads(pickle.dumps(g))
    x = rng.standard_normal(5)
    assert h(x) == g(x) and np.array_equal(h.grad(x), g.grad(x))


def test_trace_inside_eager_code_does_not_touch_the_eager_tape():
    w = tj.tensor(2.0, requires_grad=True)
    y = w * w
    f = tj.trace(lambda x: tj.sum(x * w), np.ones(3))     # w is a constant inside the trace
    np.testing.assert_allclose(f.grad(np.zeros(3)), [2.0, 2.0, 2.0])
    y.backward()
    assert w.grad.item() == 4.0


def test_batch_results_into_caller_buffers():
    f = tj.trace(rosen_tj, np.zeros(6))
    X = rng.standard_normal((301, 6))
    vals, grads = f.batch_value_and_grad(X)
    v_out, g_out = np.full(301, np.nan), np.full((301, 6), np.nan)
    got = f.batch_value_and_grad(X, out=(v_out, g_out))
    assert got[0] is v_out and got[1] is g_out
    np.testing.assert_array_equal(v_out, vals)
    np.testing.assert_array_equal(g_out, grads)
    g2 = np.empty((301, 6))
    assert f.batch_grad(X, out=g2) is g2 and np.array_equal(g2, grads)
    v2 = np.empty(301)
    assert f.batch(X, out=v2) is v2 and np.array_equal(v2, vals)


@pytest.mark.parametrize("bad, message", [
    (np.empty((301, 6), np.float32), "float64"),
    (np.empty((6, 301)).T, "C-contiguous"),
    (np.empty((300, 6)), "shape"),
])
def test_bad_out_buffers_are_refused_before_any_work(bad, message):
    f = tj.trace(rosen_tj, np.zeros(6))
    X = rng.standard_normal((301, 6))
    with pytest.raises(tj.TapejitError, match=message):
        f.batch_grad(X, out=bad)
    with pytest.raises(tj.TapejitError, match="overlaps"):
        f.batch_grad(X, out=X)
    with pytest.raises(tj.TapejitError, match="CPU engine"):
        f.batch_grad(X, out=np.empty((301, 6)), device="cuda")


def test_one_worker_two_workers_and_out_buffers_agree():
    # two workers, each with a block of chunks, the last chunk partial (20,011 points):
    # results are bit-equal to one worker's, with fresh arrays or the caller's
    from tapejit._runtime.threads import limit_threads
    f = tj.trace(rosen_tj, np.zeros(7))
    X = rng.uniform(-2, 2, (20_011, 7))
    with limit_threads(1):
        serial = f.batch_value_and_grad(X)
        serial_values = f.batch(X)
    with limit_threads(2):
        np.testing.assert_array_equal(f.batch(X), serial_values)
        vals, grads = np.empty(len(X)), np.empty((len(X), 7))
        into = f.batch_value_and_grad(X, out=(vals, grads))
    np.testing.assert_array_equal(into[1], serial[1])
    np.testing.assert_array_equal(into[0], serial[0])
    np.testing.assert_allclose(grads[::1000], [rosen_der(x) for x in X[::1000]], rtol=1e-13)
    np.testing.assert_array_equal(f.batch_grad(X[:5]), serial[1][:5])
