"""Tape optimization passes keep results (values exactly, derivatives to rounding)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapejit as tj
from tapejit import passes, workloads

UNARY = [tj.sin, tj.exp, tj.tanh, tj.square, tj.softplus, tj.sigmoid, tj.abs, lambda x: -x,
         lambda x: x * 1.0, lambda x: x / 1.0, lambda x: x ** 1, lambda x: x - 0.0, lambda x: x * 2.5]
BINARY = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, tj.maximum,
          lambda x, y: tj.where(x > y, x, y * 0.5)]

step = st.tuples(st.booleans(), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))


def build(program):
    """A traced function from a random program: each step applies a unary or a binary
    operation to earlier values; some values are recomputed, some never used."""
    def fn(x):
        values = [x, x[::-1], tj.tensor(np.array([0.5, -1.0, 2.0, 0.25])) * 3.0]
        for binary, i, j, k in program:
            a = values[i % len(values)]
            b = values[j % len(values)]
            if binary:
                values.append(BINARY[k % len(BINARY)](a, b))
            else:
                values.append(UNARY[k % len(UNARY)](a))
            if k % 5 == 0:                                   # a repeated subexpression
                values.append(UNARY[k % len(UNARY)](a))
        return tj.sum(values[-1] * values[len(values) // 2]) + tj.sum(values[-2])
    return fn


def same(f, g, x):
    # bit-equal values; NaN (log of a negative, say) must stay NaN in both
    np.testing.assert_array_equal(f(x), g(x))
    expected, got = f.grad(x), g.grad(x)
    # Past overflow the order of accumulation decides between inf and nan (inf - inf):
    # both must be non-finite in the same places, and the finite entries agree
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-12, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(program=st.lists(step, min_size=1, max_size=25), seed=st.integers(0, 1000))
def test_optimize_keeps_results_on_random_programs(program, seed):
    fn = build(program)
    x0 = np.random.default_rng(seed).standard_normal(4)
    f = tj.trace(fn, x0, optimize=False)
    g = f.optimize()
    assert len(g) <= len(f) and g.n_slots <= f.n_slots
    for k in range(3):
        same(f, g, np.random.default_rng(seed + k).standard_normal(4))


@settings(max_examples=20, deadline=None)
@given(program=st.lists(step, min_size=1, max_size=20), seed=st.integers(0, 1000))
def test_each_pass_keeps_results(program, seed):
    from tapejit.function import Function
    f = tj.trace(build(program), np.ones(4), optimize=False)
    x = np.random.default_rng(seed).standard_normal(4)
    for single in (passes.fold_constants, passes.simplify, passes.eliminate_common, passes.eliminate_dead):
        prog = single(passes.Program.from_function(f))
        if single is not passes.eliminate_dead:
            prog = passes.eliminate_dead(prog)        # renumber for a valid tape
        new_of = prog.slot_map
        g = Function(prog.arrays(), [(int(new_of[b]), s) for b, s in f.inputs], [], [],
                     (int(new_of[f.output[0]]), f.output[1]), new_of[f.guards])
        same(f, g, x)


@settings(max_examples=20, deadline=None)
@given(program=st.lists(step, min_size=1, max_size=25), seed=st.integers(0, 1000))
def test_compacted_forward_tape_gives_the_same_values(program, seed):
    from tapejit import _sweeps_cpu as sweeps
    from tapejit.tape import validate
    f = tj.trace(build(program), np.ones(4), optimize=False)
    arrays, new_of = passes.compact_slots(f)
    validate(arrays, ssa=False)
    assert arrays.n_slots <= f.n_slots
    x = np.random.default_rng(seed).standard_normal(4)
    v = np.zeros(arrays.n_slots)
    v[new_of[f.in_pos]] = x
    sweeps.forward_point(*arrays.sweep_args, v, 0, len(arrays))
    assert v[new_of[f.out_pos[0]]] == f(x)


def test_common_subexpressions_shrink_the_tape():
    def fn(x):
        return tj.sum(tj.sin(x) * tj.exp(x)) + tj.sum(tj.sin(x) * tj.exp(x)) + tj.sum(tj.sin(x))
    f = tj.trace(fn, np.ones(5), optimize=False)
    g = f.optimize()
    assert len(g) < len(f)
    assert sum(g.arrays.ops == tj.opcodes.OPCODE["sin"]) == 1
    same(f, g, np.linspace(-1, 1, 5))


def test_constants_fold_and_dead_code_goes():
    def fn(x):
        c = tj.exp(tj.tensor(1.0))       # a constant (not recorded at all)
        k = tj.stop_gradient(x * 0.0) + 1.0
        unused = tj.cos(x) * 3.0
        return tj.sum(x * c) + tj.sum(k)
    f = tj.trace(fn, np.ones(3), optimize=False)
    g = f.optimize()
    assert tj.opcodes.OPCODE["cos"] not in g.arrays.ops
    same(f, g, np.array([0.1, 0.2, 0.3]))


def test_identities_only_where_ieee_allows():
    f = tj.trace(lambda x: tj.sum((x + 0.0) * 0.0 + x * 1.0), np.ones(2), optimize=False)
    g = f.optimize()
    ops = [tj.opcodes.OPS[o].name for o in g.arrays.ops]
    assert "add_c" in ops and ops.count("mul_c") == 1      # x+0.0 and x*0 stay; x*1 goes
    x = np.array([-0.0, np.inf])
    np.testing.assert_array_equal(np.isnan([f(x)]), np.isnan([g(x)]))


def test_trace_optimizes_by_default_and_w_graph_sizes():
    f = tj.trace(workloads.w_graph(200), workloads.w_inputs())
    g = tj.trace(workloads.w_graph(200), workloads.w_inputs(), optimize=False)
    assert len(f) <= len(g)
    same(g, f, workloads.w_inputs())


def test_dead_elements_of_a_gather_do_not_break_the_tape():
    # the last element of the concatenation is never read, so its producer is dropped;
    # the gather still names that element and must read a valid slot instead
    def fn(x):
        return tj.sum(tj.concatenate([x[:4] * 1.0, x[-1:] * 0.5])[::-1][1:] ** 2)
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    f = tj.trace(fn, x)
    expected = np.array([0.2, 0.4, 0.6, 0.8, 0.0])
    assert f(x) == pytest.approx(np.sum(x[:4] ** 2), rel=1e-15)
    np.testing.assert_allclose(f.grad(x), expected, rtol=1e-15)
    np.testing.assert_allclose(f.batch_grad(np.tile(x, (3, 1))), np.tile(expected, (3, 1)), rtol=1e-15)
