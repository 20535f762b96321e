"""The chunk reverse sweep's adjoint plan: first contributions assign, rows accumulated into
are zeroed once read. Wrong plans show up as gradients that depend on the previous chunk
(a stale row added in) or lose a contribution (an assignment after an addition), so every
test runs many small chunks on two workers and compares with single-point gradients."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapejit as tj
from tapejit.cpu import batch
from tapejit.bench import workloads
from tapejit.analysis.adjoint_plan import adjoint_plan
from tapejit.codegen.render import ZERO_AFTER_READ
from tapejit.frontend.function import Function
from tapejit.ops.table import OP
from tapejit.tape.tape import Tape

UNARY = [tj.sin, tj.exp, tj.square, tj.softplus, lambda x: -x, lambda x: 2.5 * x, lambda x: 1.0 - x]
# runs of four taken from values of five, sharing slots in every way: the same run,
# shifted runs, reversed, a broadcast scalar, a gather, a sum
SHAPES = [lambda x: x[:4], lambda x: x[1:], lambda x: x[::-1][1:], lambda x: x[0] + 0.0 * x[1:],
          lambda x: x[np.array([2, 0, 1, 1])], lambda x: tj.sum(x) + 0.5 * x[:4]]
BINARY = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / (1.5 + y * y)]

step = st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))


def build(program):
    def fn(x):
        values = [x]
        for i, j, k, m in program:
            a = SHAPES[m % len(SHAPES)](values[i % len(values)])
            b = SHAPES[k % len(SHAPES)](values[j % len(values)])
            new = BINARY[k % len(BINARY)](UNARY[(i + m) % len(UNARY)](a), b)
            values.append(tj.concatenate([new, new[-1:] * 0.5]))
        return tj.sum(values[-1]) + tj.sum(values[len(values) // 2] * values[-1][0])
    return fn


def batch_grads(f, X, chunk):
    _, grads, _ = batch.run(f.arrays, f.in_pos, f.param_pos, f._flat_params(None), f.out_pos, f.guards, X,
                            batch.MODE_GRAD, chunk=chunk, threads=2)
    return grads


def textbook_batch_grads(f, X, chunk):
    """The chunk engine with a plan that never assigns and zeroes every row once read: the
    textbook reverse sweep (adjoints start at zero, every contribution adds), with the same
    arithmetic as the planned sweep, so the two agree exactly (an assignment is the first
    addition to a zero)."""
    textbook = lambda arrays, seeded: np.full(len(arrays.ops), ZERO_AFTER_READ, np.uint8)   # noqa: E731
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch, "_plan_for", textbook)
        mp.setattr(batch, "_rows_to_clear", lambda arrays, seeded, in_pos: in_pos)   # every input row
        return batch_grads(f, X, chunk)


@settings(max_examples=40, deadline=None)
@given(program=st.lists(step, min_size=1, max_size=12), seed=st.integers(0, 1000))
def test_batch_gradients_equal_the_textbook_sweep_on_random_programs(program, seed):
    rng = np.random.default_rng(seed)
    f = tj.trace(build(program), rng.standard_normal(5) * 0.5)
    X = rng.standard_normal((53, 5)) * 0.5
    # a stale row from the previous chunk or a dropped contribution changes the result;
    # the chunking does not change any point's arithmetic
    expected = textbook_batch_grads(f, X, 53)
    for chunk in (4, 8, 53):
        np.testing.assert_array_equal(batch_grads(f, X, chunk), expected)
    # and the engine against single points (the C library's exp there, tapejit.cpu._vmath's in
    # the chunks, within 2 ulp): random programs that chain exp into sin of 1e13 amplify that
    # into 1e-4 of the value (seen), so only well-conditioned ones are compared
    single = np.array([f.grad(x) for x in X])
    if np.all(np.isfinite(single)) and np.abs(single).max() < 1e3:
        np.testing.assert_allclose(expected, single, rtol=1e-8, atol=1e-10)


def test_rosenbrock_assigns_and_zeroes_only_what_it_must():
    f = tj.trace(workloads.rosen, np.zeros(10))
    plan = adjoint_plan(f.arrays, f.out_pos)
    # after fusion: minus_square, square_rsub_c, add_scaled_square, sum. In reverse order
    # the sum (each term read once) and the fused terms are first contributions and assign;
    # minus_square adds to x[:-1] and x[1:], whose adjoints square_rsub_c started (but x[9])
    names = [tj.ops.table.OPS[o].name for o in f.arrays.ops]
    assigns = {names[i] for i in np.flatnonzero(plan & 7)}
    assert assigns == {"sum", "add_scaled_square", "square_rsub_c"}
    # so no row is accumulated into before an assignment: none is zeroed after use
    assert np.count_nonzero(plan & ZERO_AFTER_READ) == 0
    # of the inputs' rows only x[9] is added to (by minus_square) before anything assigns it: the
    # engine zeroes that one after each chunk and leaves the nine assigned rows alone
    np.testing.assert_array_equal(batch._rows_to_clear(f.arrays, f.out_pos, f.in_pos), f.in_pos[9:])
    X = np.random.default_rng(0).standard_normal((1001, 10))
    from scipy.optimize import rosen_der
    np.testing.assert_allclose(batch_grads(f, X, 16), np.array([rosen_der(x) for x in X]), rtol=1e-12, atol=1e-10)


def test_vector_jacobian_products_with_repeated_outputs():
    # two outputs are the same slot: both seeds must count
    def fn(x):
        y = x[1:] * x[:-1]
        return tj.stack([y[0], y[0], tj.sum(y)])
    f = tj.trace(fn, np.ones(4))
    X = np.random.default_rng(1).standard_normal((40, 4))
    U = np.random.default_rng(2).standard_normal((40, 3))
    _, got = f.batch_vjp(X, U=U)
    for x, u, g in zip(X, U, got):
        J = f.jacobian(x)
        np.testing.assert_allclose(g, u @ J, rtol=1e-12)


SUMS = {
    # each slot read once and first: assigns
    "plain": (lambda x: tj.sum(tj.sin(x) * x), True),
    "reversed view": (lambda x: tj.sum(tj.exp(x)[::-1]), True),
    # a later use (earlier in the reverse sweep) reached the terms first: must add
    "terms used again": (lambda x: (lambda y: tj.sum(y) * y[2])(tj.sin(x)), False),
}


@pytest.mark.parametrize("name", list(SUMS))
def test_a_sum_assigns_only_when_first_to_each_slot_once(name):
    fn, assigns = SUMS[name]
    f = tj.trace(fn, np.linspace(0.1, 0.9, 6))
    plan = adjoint_plan(f.arrays, f.out_pos)
    sums = np.flatnonzero(f.arrays.ops == tj.ops.table.OP.sum)
    assert bool(plan[sums[-1]] & 1) == assigns
    X = np.random.default_rng(4).standard_normal((37, 6))
    expected = textbook_batch_grads(f, X, 4)
    np.testing.assert_array_equal(batch_grads(f, X, 4), expected)
    np.testing.assert_allclose(expected, np.array([f.grad(x) for x in X]), rtol=1e-12, atol=1e-14)


def test_a_sum_that_reads_a_slot_repeatedly_adds():
    # sum of sin(x0) five times over (stride 0), then of sin(x): the reverse sweep meets
    # the repeated reads first, with no adjoint yet, and must still add them
    t = Tape()
    x = t.emit(OP.input, 3)
    s = t.emit(OP.sin, 3, a=x, sa=1)
    whole = t.emit(OP.sum, 1, a=s, sa=1, b=3, sb=1)
    repeated = t.emit(OP.sum, 1, a=s, sa=0, b=5, sb=1)
    out = t.emit(OP.add, 1, a=whole, b=repeated)
    f = Function(t.arrays(), [(x, (3,))], [], [], (out, ()), [])
    plan = adjoint_plan(f.arrays, f.out_pos)
    assert not plan[3] & 1      # reads s[0] five times: adds
    assert not plan[2] & 1      # s[0] has an adjoint from the repeated sum by then: adds
    X = np.random.default_rng(3).standard_normal((21, 3))
    expected = np.cos(X) * np.array([6.0, 1.0, 1.0])
    np.testing.assert_allclose(batch_grads(f, X, 4), expected, rtol=1e-14)
    np.testing.assert_array_equal(batch_grads(f, X, 4), textbook_batch_grads(f, X, 4))


def test_axis_sums_assign_and_match_single_points():
    def fn(x):
        m = tj.reshape(tj.sin(x), (2, 3))
        return tj.sum(tj.sum(m * m, axis=0) * tj.sum(m, axis=1)[0])
    f = tj.trace(fn, np.linspace(0.1, 0.9, 6))
    X = np.random.default_rng(6).standard_normal((29, 6))
    expected = textbook_batch_grads(f, X, 4)
    np.testing.assert_array_equal(batch_grads(f, X, 4), expected)
    np.testing.assert_allclose(expected, np.array([f.grad(x) for x in X]), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("B", [1, 7, 300])
def test_logistic_loss_batch_matches_single_points(B):
    X, y = workloads.logistic_data()
    f = tj.trace(workloads.logistic_loss(X, y), np.zeros(20))
    W = np.random.default_rng(B).standard_normal((B, 20))
    np.testing.assert_allclose(f.batch_grad(W), np.array([f.grad(w) for w in W]), rtol=1e-12, atol=1e-14)


def test_overlapping_operand_runs_go_row_by_row_and_stay_exact():
    # x[1:] * x[:-1]: the two operands' adjoint runs overlap, so the chunk reverse runs
    # them row by row (a flat loop would write one row through two views)
    f = tj.trace(lambda x: tj.sum(x[1:] * x[:-1]) + tj.sum(x[2:] - x[:-2]), np.ones(7))
    X = np.random.default_rng(8).standard_normal((261, 7))
    expected = np.zeros_like(X)
    expected[:, 1:] += X[:, :-1]
    expected[:, :-1] += X[:, 1:]
    expected[:, 2:] += 1.0
    expected[:, :-2] -= 1.0
    for chunk in (4, 64):
        np.testing.assert_allclose(batch_grads(f, X, chunk), expected, rtol=1e-15, atol=1e-15)
