"""Tape optimization passes keep results (values exactly, derivatives to rounding)."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapejit as tj
from tapejit.passes import program as passes
from tapejit.bench import workloads
from tapejit.ops.table import OP

UNARY = [tj.sin, tj.exp, tj.tanh, tj.square, tj.softplus, tj.sigmoid, tj.abs, lambda x: -x,
         lambda x: x * 1.0, lambda x: x / 1.0, lambda x: x ** 1, lambda x: x - 0.0, lambda x: x * 2.5,
         lambda x: 1.5 - x]
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


@settings(max_examples=15, deadline=None)
@given(program=st.lists(step, min_size=1, max_size=25), seed=st.integers(0, 1000))
def test_the_loops_for_large_tapes_optimize_as_numpy_does(program, seed):
    # the passes' per-slot helpers switch to jitted loops past LOOP_SLOTS slots: both sides
    # give the same program, instruction for instruction
    f = tj.trace(build(program), np.random.default_rng(seed).standard_normal(4), optimize=False)
    g = f.optimize()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passes, "LOOP_SLOTS", 0)
        h = f.optimize()
    for name in ("ops", "ins", "cv", "consts", "idx"):
        np.testing.assert_array_equal(getattr(g.arrays, name), getattr(h.arrays, name))
    assert g.n_slots == h.n_slots


@settings(max_examples=20, deadline=None)
@given(program=st.lists(step, min_size=1, max_size=20), seed=st.integers(0, 1000))
def test_each_pass_keeps_results(program, seed):
    from tapejit.frontend.function import Function
    f = tj.trace(build(program), np.ones(4), optimize=False)
    x = np.random.default_rng(seed).standard_normal(4)
    for single in (passes.fold_constants, passes.simplify, passes.eliminate_common, passes.one_operand,
                   passes.fuse_squares,
                   passes.eliminate_dead):
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
    from tapejit.cpu import _sweeps as sweeps
    from tapejit.tape.tape import validate
    f = tj.trace(build(program), np.ones(4), optimize=False)
    arrays, new_of = passes.compact_slots(f)
    validate(arrays, ssa=False)
    assert arrays.n_slots <= f.n_slots
    x = np.random.default_rng(seed).standard_normal(4)
    v = np.zeros(arrays.n_slots)
    v[new_of[f.in_pos]] = x
    sweeps.forward_vector(*arrays.sweep_args, v, 0, len(arrays))
    assert v[new_of[f.out_pos[0]]] == f(x)


def test_common_subexpressions_shrink_the_tape():
    def fn(x):
        return tj.sum(tj.sin(x) * tj.exp(x)) + tj.sum(tj.sin(x) * tj.exp(x)) + tj.sum(tj.sin(x))
    f = tj.trace(fn, np.ones(5), optimize=False)
    g = f.optimize()
    assert len(g) < len(f)
    assert sum(g.arrays.ops == tj.ops.table.OPCODE["sin"]) == 1
    same(f, g, np.linspace(-1, 1, 5))


def test_constants_fold_and_dead_code_goes():
    def fn(x):
        c = tj.exp(tj.tensor(1.0))       # a constant (not recorded at all)
        k = tj.stop_gradient(x * 0.0) + 1.0
        unused = tj.cos(x) * 3.0
        return tj.sum(x * c) + tj.sum(k)
    f = tj.trace(fn, np.ones(3), optimize=False)
    g = f.optimize()
    assert tj.ops.table.OPCODE["cos"] not in g.arrays.ops
    same(f, g, np.array([0.1, 0.2, 0.3]))


def test_identities_only_where_ieee_allows():
    f = tj.trace(lambda x: tj.sum((x + 0.0) * 0.0 + x * 1.0), np.ones(2), optimize=False)
    g = f.optimize()
    ops = [tj.ops.table.OPS[o].name for o in g.arrays.ops]
    assert "add_c" in ops and ops.count("mul_c") == 1      # x+0.0 and x*0 stay; x*1 goes
    x = np.array([-0.0, np.inf])
    np.testing.assert_array_equal(np.isnan([f(x)]), np.isnan([g(x)]))


def test_a_product_or_sum_of_a_run_with_itself_becomes_one_operand():
    from tapejit.frontend.function import Function
    # the pass alone: x * x and x + x give the same bits as square and 2 * x; each adjoint
    # contribution too (g * x + g * x is g * (2 * x) exactly), but it joins the others to
    # x's adjoint as one term instead of two, so sums of them may round differently
    f = tj.trace(lambda x: tj.sum(tj.sin(x * x) * (x + x) * x[::-1]), np.ones(4), optimize=False)
    prog = passes.one_operand(passes.Program.from_function(f))
    ops = [tj.ops.table.OPS[o].name for o in prog.ops]
    assert ops.count("square") == 1 and ops.count("mul_c") == 1 and ops.count("mul") == 2
    g = Function(prog.arrays(), f.inputs, [], [], f.output, f.guards)
    for x in (np.array([0.3, -1.2, 2.0, -0.0]), np.array([1e200, -1e-300, np.inf, np.nan])):
        np.testing.assert_array_equal(f(x), g(x))
        np.testing.assert_array_equal(np.isnan(f.grad(x)), np.isnan(g.grad(x)))
    X = np.random.default_rng(2).standard_normal((300, 4))
    expected = np.array([f.grad(x) for x in X])
    np.testing.assert_allclose(g.batch_grad(X), expected, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(np.array([g.grad(x) for x in X]), expected, rtol=1e-14, atol=1e-14)
    # in the whole optimizer it runs after CSE: sin(x) * sin(x) is one run by then
    h = tj.trace(lambda x: tj.sum(tj.sin(x) * tj.sin(x) + (tj.exp(x) + tj.exp(x))), np.ones(4))
    ops = [tj.ops.table.OPS[o].name for o in h.arrays.ops]
    assert "mul" not in ops and "mul_c" in ops
    np.testing.assert_allclose(h.batch_grad(X), 2 * np.sin(X) * np.cos(X) + 2 * np.exp(X), rtol=1e-13)


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


# -- scalar graphs: sums of Python scalars fuse, stacked neighbours stop being copied ----
SCALAR_STEP = st.tuples(st.integers(0, 5), st.integers(1, 60), st.integers(1, 60), st.integers(1, 60),
                        st.integers(2, 5))


def build_scalar(program):
    """A traced function of Python-level scalars, W-graph style: sum() of several earlier
    nodes (from 0, or from a float), products, softplus, softmax of the last nodes,
    partial sums read twice."""
    def fn(x):
        nodes = list(x)
        for kind, i, j, k, m in program:
            a, b = nodes[-min(i, len(nodes))], nodes[-min(j, len(nodes))]
            if kind == 0:
                nodes.append(sum(nodes[-min(k, len(nodes)):][:m]))
            elif kind == 1:
                nodes.append(sum(nodes[-min(k, len(nodes)):][:m], 0.75))
            elif kind == 2:
                nodes.append(a * b)
            elif kind == 3:
                nodes.append(tj.softplus(a))
            elif kind == 4:
                nodes.extend(tj.softmax(tj.stack(nodes[-m:])))
            else:
                partial = a + b                              # read twice: stays
                nodes.append(partial + nodes[-1])
                nodes.append(partial * 0.5)
        return nodes[-1] + 0.5 * nodes[len(nodes) // 2]
    return fn


@settings(max_examples=40, deadline=None)
@given(program=st.lists(SCALAR_STEP, min_size=1, max_size=30), seed=st.integers(0, 1000))
def test_scalar_graphs_keep_results_once_sums_fuse(program, seed):
    fn = build_scalar(program)
    rng = np.random.default_rng(seed)
    f = tj.trace(fn, rng.standard_normal(6), optimize=False)
    g = f.optimize()
    assert len(g) <= len(f)
    names = [tj.ops.table.OPS[o].name for o in g.arrays.ops]
    X = rng.standard_normal((5, 6))
    for x in X[:2]:
        same(f, g, x)
        v = rng.standard_normal(6)
        np.testing.assert_allclose(g.hvp(x, v=v), f.hvp(x, v=v), rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(g.jvp(x, v=v), f.jvp(x, v=v), rtol=1e-11, atol=1e-13)
    # the batch engine (chunks, adjoint plan) against the single-point replays; chunks call
    # the vectorizable exp and log1p (within 2 ulp of the C library's)
    vals, grads = g.batch_value_and_grad(X)
    np.testing.assert_allclose(vals, [f(x) for x in X], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(grads, [f.grad(x) for x in X], rtol=1e-12, atol=1e-14)
    if "gather_sum" in names:
        np.testing.assert_array_equal(g.hessian_sparsity().toarray(), f.hessian_sparsity().toarray())


def test_python_sum_of_scalars_becomes_one_gather_sum():
    def fn(x):
        s = sum([x[0], x[1] * x[2], x[3]])                    # ((0 + x0) + x1 x2) + x3
        t = sum([x[1], x[2]], 2.5)                              # (2.5 + x1) + x2
        u = x[0] + x[1]
        return s * t + (u + x[2]) * u                           # u is read twice: not fused
    x = np.array([0.3, -1.2, 0.7, 2.0])
    f = tj.trace(fn, x, optimize=False)
    g = f.optimize()
    names = [tj.ops.table.OPS[o].name for o in g.arrays.ops]
    assert names.count("gather_sum") == 2 and names.count("add_c") == 0
    assert names.count("add") == 3                              # u, u + x2, and the final sum
    s, t, u = x[0] + x[1] * x[2] + x[3], 2.5 + x[1] + x[2], x[0] + x[1]
    assert g(x) == s * t + (u + x[2]) * u
    expected = np.array([t + 2 * u + x[2], x[2] * t + s + 2 * u + x[2], x[1] * t + s + u, t])
    np.testing.assert_allclose(g.grad(x), expected, rtol=1e-14)
    # -0.0 stays -0.0: the fused sum adds its terms exactly as the chain did
    z = np.array([-0.0, 0.0, 0.0, -0.0])
    assert np.signbit(g(z)) == np.signbit(f(z))


def test_w_graph_tape_is_one_instruction_per_operation():
    n_ops = 400
    x = workloads.w_inputs()
    f = tj.trace(workloads.w_graph(n_ops), x)
    names = [tj.ops.table.OPS[o].name for o in f.arrays.ops]
    # softplus, sum() of four nodes, product, softmax of the four last nodes: the stack
    # of those neighbours is no copy once the partial sums are gone
    assert len(f) == n_ops + 1
    assert {n: names.count(n) for n in set(names)} == {"input": 1, "softplus": 100, "gather_sum": 100,
                                                        "mul": 100, "softmax": 100}
    v, g = np.zeros(100 + 7 * n_ops // 4), np.zeros(100 + 7 * n_ops // 4)
    value = workloads.w_graph_numba(x, n_ops, v, g)
    got_value, got_grad = f.value_and_grad(x)
    assert got_value == value
    np.testing.assert_allclose(got_grad, g[:100], rtol=1e-13, atol=1e-16)


def test_malformed_gather_sum_is_refused():
    from tapejit.errors import InvalidTapeError
    from tapejit.tape.tape import validate
    f = tj.trace(lambda x: sum([x[0], x[1], x[2]]), np.ones(3))
    arrays = f.arrays
    i = int(np.flatnonzero(arrays.ops == tj.ops.table.OPCODE["gather_sum"])[0])

    def broken(field, value, pool=None):
        ins = arrays.ins.copy()
        ins[field, i] = value
        idx = arrays.idx.copy() if pool is None else pool
        return dataclasses.replace(arrays, ins=ins, idx=idx)
    validate(arrays)
    with pytest.raises(InvalidTapeError, match="term count"):
        validate(broken(5, 0))
    with pytest.raises(InvalidTapeError, match="index range outside"):
        validate(broken(5, len(arrays.idx) + 1))
    first_term = int(arrays.ins[4, i])
    for slot, message in ((int(arrays.ins[0, i]), "reads slot"), (-5, "reads slot -5")):
        pool = arrays.idx.copy()
        pool[first_term] = slot                                 # a term at the output, or negative
        with pytest.raises(InvalidTapeError, match=f"gather_sum.*{message}"):
            validate(broken(5, int(arrays.ins[5, i]), pool))
    with pytest.raises(InvalidTapeError, match="field a is not used"):
        validate(broken(2, 1), canonical=True)                  # terms are absolute slots


def _names(f):
    return [tj.ops.table.OPS[o].name for o in f.arrays.ops]


def test_rosenbrock_squares_fuse_and_keep_their_bits():
    from scipy.optimize import rosen, rosen_der, rosen_hess_prod
    f = tj.trace(workloads.rosen, np.zeros(10), optimize=False)
    g = f.optimize()
    # 100 (x1 - x0**2)**2 + (1 - x0)**2: the difference, then one instruction per term
    assert sorted(_names(g)) == sorted(["input", "minus_square", "square_rsub_c", "add_scaled_square", "sum"])
    rng = np.random.default_rng(3)
    X = rng.standard_normal((37, 10))
    for x in X[:4]:
        assert g(x) == f(x)
        np.testing.assert_allclose(g(x), rosen(x), rtol=1e-14)
        np.testing.assert_allclose(g.grad(x), rosen_der(x), rtol=1e-13, atol=1e-12)
        v = rng.standard_normal(10)
        np.testing.assert_allclose(g.hvp(x, v=v), rosen_hess_prod(x, v), rtol=1e-12, atol=1e-11)
        value, tangent = g.jvp(x, v=v)
        assert value == f(x)
        np.testing.assert_allclose(tangent, rosen_der(x) @ v, rtol=1e-12, atol=1e-11)
    vals, grads = g.batch_value_and_grad(X)
    np.testing.assert_array_equal(vals, f.batch(X))
    np.testing.assert_allclose(grads, [rosen_der(x) for x in X], rtol=1e-13, atol=1e-12)


def test_squares_fuse_only_where_nothing_else_reads_them():
    x = np.array([0.5, -1.25, 2.0, 0.75])

    def shared(x):
        d = 1.0 - x                              # read twice: stays rsub_c and square
        return tj.sum(d ** 2) + tj.sum(d * x)

    def squared_shared(x):
        r = (1.0 - x) ** 2                       # the square is read twice, not its operand
        return tj.sum(r) + tj.sum(r * x)

    def broadcast(x):
        return tj.sum(x[0] ** 2 * 3.0 + x)       # a scalar square broadcast over the run

    def scalars(x):
        return (2.0 * x[0] ** 2 + x[1]) * x[2] + (x[3] - x[1]) ** 2

    def vector_output(x):
        return (x - 0.5) ** 2                    # the square is the output

    def minus(x):
        return tj.sum(x[::-1] - x ** 2)          # a - b**2

    def minus_shared(x):
        s = x ** 2                               # the square is read twice: stays square and sub
        return tj.sum(x[::-1] - s) + tj.sum(s * x)

    # x - 0.5 is recorded as x + (-0.5): its square is (0.5 - x)**2, the same bits
    expected_ops = {shared: {"rsub_c", "square"}, squared_shared: {"square_rsub_c"},
                    broadcast: {"square", "mul_c", "add"},
                    scalars: {"add_scaled_square", "sub", "mul"}, vector_output: {"square_rsub_c"},
                    minus: {"minus_square"}, minus_shared: {"square", "sub"}}
    for fn, present in expected_ops.items():
        f = tj.trace(fn, x, optimize=False)
        g = f.optimize()
        assert present <= set(_names(g)), fn.__name__
        if fn is minus_shared:
            assert "minus_square" not in _names(g)
        if fn is scalars:
            assert _names(g).count("add_scaled_square") == 2 and "square" not in _names(g)
        np.testing.assert_array_equal(g(x), f(x))
        if fn is not vector_output:
            np.testing.assert_allclose(g.grad(x), f.grad(x), rtol=1e-14)
    g = tj.trace(scalars, x)
    expected = [4 * x[0] * x[2], x[2] - 2 * (x[3] - x[1]), 2 * x[0] ** 2 + x[1], 2 * (x[3] - x[1])]
    np.testing.assert_allclose(g.grad(x), expected, rtol=1e-14)
    assert "rsub_c" not in _names(tj.trace(lambda x: tj.sum((2.0 - x) ** 2), x))


def test_structural_duplicates_merge_in_chains():
    pick = np.array([0, 2, 3])

    def fn(x):
        a = tj.sum(x[pick] * 2.0)                # a gather, then a sum of what it feeds
        b = tj.sum(x[pick] * 2.0)                # the same again: merged gather, then merged sum
        return a * b + tj.sum(tj.stack([x[3], x[1]]))
    x = np.array([0.5, -1.0, 2.0, 3.0])
    f = tj.trace(fn, x, optimize=False)
    g = f.optimize()
    assert _names(f).count("gather") == 3 and _names(g).count("gather") == 2
    assert _names(g).count("sum") == 2 and _names(g).count("mul_c") == 1
    s = 2.0 * (x[0] + x[2] + x[3])
    assert g(x) == f(x)
    np.testing.assert_allclose(g.grad(x), [4 * s, 1.0, 4 * s, 4 * s + 1.0], rtol=1e-14)


def test_sign_flips_fold_into_the_affine_block():
    from scipy.special import expit
    Xd, y = workloads.logistic_data()
    f = tj.trace(workloads.logistic_loss(Xd, y), np.zeros(20), optimize=False)
    g = f.optimize()
    assert "mul" in _names(f) and "const" in _names(f)
    assert sorted(_names(g)) == sorted(["input", "affine", "softplus", "sum"])
    assert len(g.arrays.consts) <= len(f.arrays.consts)               # X negated in place, not copied
    W = np.random.default_rng(5).standard_normal((300, 20))
    vals, grads = g.batch_value_and_grad(W)
    want_vals, want_grads = f.batch_value_and_grad(W)
    np.testing.assert_array_equal(vals, want_vals)
    np.testing.assert_array_equal(grads, want_grads)
    # closed form: d/dw sum log(1 + exp(-y Xw)) = -X^T (y * sigmoid(-y Xw))
    expected = -(y * expit(-y * (W @ Xd.T))) @ Xd
    np.testing.assert_allclose(grads, expected, rtol=1e-12, atol=1e-12)
    for w in W[:3]:
        assert g(w) == f(w)
        np.testing.assert_array_equal(g.grad(w), f.grad(w))


def test_sign_flips_fold_only_for_plus_or_minus_one_and_a_sole_reader():
    M = np.arange(12.0).reshape(3, 4) / 7.0 - 0.5
    x = np.array([0.3, -1.2, 0.8, 2.0])
    cases = {
        "halves": (lambda w: tj.sum(tj.exp(np.array([0.5, -1.0, 1.0]) * (M @ w))), True),
        "shared": (lambda w: tj.sum(tj.exp(np.array([1.0, -1.0, 1.0]) * (M @ w)) + M @ w), True),
        "signs": (lambda w: tj.sum(tj.exp((M @ w) * np.array([-1.0, -1.0, 1.0]))), False),
        "output": (lambda w: np.array([1.0, -1.0, -1.0]) * (M @ w), True),
    }
    for name, (fn, keeps_mul) in cases.items():
        f = tj.trace(fn, x, optimize=False)
        g = f.optimize()
        assert ("mul" in _names(g)) == keeps_mul, name
        np.testing.assert_array_equal(g(x), f(x))
        if name != "output":      # CSE merges the two M @ w of "shared": adjoints add in another order
            np.testing.assert_allclose(g.grad(x), f.grad(x), rtol=1e-14)


def test_chained_identities_alias_through_to_their_source():
    # each identity's target is the output of the previous one: simplify must follow the
    # chain in one go; the output itself (read from outside) keeps its slot
    def fn(x):
        y = (((x * 1.0) / 1.0) ** 1.0 + (-0.0)) * 1.0
        return tj.sum(y * y) + 3.0 * tj.sum(x * 1.0)
    x = np.array([0.25, -3.0, 1.5])
    f = tj.trace(fn, x, optimize=False)
    g = f.optimize()
    names = [tj.ops.table.OPS[o].name for o in g.arrays.ops]
    assert not {"div_c", "pow_c", "add_c"} & set(names) and names.count("mul_c") == 1     # the 3.0
    same(f, g, x)
    assert g(x) == np.sum(x * x) + 3.0 * np.sum(x)
    np.testing.assert_array_equal(g.grad(x), 2 * x + 3.0)
    out = tj.trace(lambda z: z * 1.0, x)                         # the output is the identity
    np.testing.assert_array_equal(out(x), x)
    np.testing.assert_array_equal(out.vjp(x, u=np.ones(3))[1], np.ones(3))


def test_rows_sharing_a_hash_include_every_duplicate():
    rng = np.random.default_rng(7)
    table = rng.integers(-5, 5, size=(3000, 9)).astype(np.int64)
    table[::37] = table[5]                                       # planted duplicates
    table[1000:1010] = table[2000:2010]
    found = set(passes._sharing_a_hash(table).tolist())
    rows = [tuple(r) for r in table.tolist()]
    counts = {}
    for r in rows:
        counts[r] = counts.get(r, 0) + 1
    duplicated = {i for i, r in enumerate(rows) if counts[r] > 1}
    assert duplicated <= found
    assert list(passes._sharing_a_hash(table)) == sorted(found)
    distinct = np.arange(5000 * 9, dtype=np.int64).reshape(5000, 9)
    assert passes._sharing_a_hash(distinct).size == 0


def test_the_structural_screen_keeps_every_pair_that_can_merge():
    """_structural_keys must be equal wherever _fields_read's keys are (before any
    remapping): then skipping the merge loop when no two keys share a hash loses nothing."""
    M = np.arange(6.0).reshape(2, 3) / 4.0

    def fn(x):
        s = tj.stack([x[0], x[2]])
        t = tj.stack([x[0], x[2]])             # the same gather, its own index block
        u = tj.stack([x[2], x[0]])             # the same slots in another order: not equal
        c1 = tj.exp(x[:2]) * np.array([1.5, -0.0])
        c2 = tj.exp(x[:2]) * np.array([1.5, -0.0])
        c3 = tj.exp(x[:2]) * np.array([1.5, 0.0])      # -0.0 and 0.0 differ in their bits
        a1, a2 = M @ x, M @ x                  # equal blocks at different offsets
        return (tj.sum(s * t) + tj.sum(u) + tj.sum(c1 + c2 + c3) + tj.sum(a1 * a2)
                + tj.sum(tj.softmax(s)) + tj.sum(tj.softmax(t)))
    x = np.array([0.5, -1.0, 2.0])
    f = tj.trace(fn, x, optimize=False)
    prog = passes.Program.from_function(f)
    rows = np.flatnonzero(~passes._ELEMENTWISE[prog.ops] & (prog.ops != OP.input))
    keys = passes._structural_keys(prog, rows)
    gathered = passes._gathered_slots(prog, rows)
    reference = [(int(prog.ops[i]), int(prog.ins[1, i]), int(prog.cv[i:i + 1].view(np.int64)[0]),
                  passes._fields_read(prog, int(i), int(prog.ops[i]), prog.ins[:, i].tolist(), None, gathered))
                 for i in rows]
    pairs_equal = 0
    for p in range(len(rows)):
        for q in range(p + 1, len(rows)):
            same_key = reference[p] == reference[q]
            pairs_equal += same_key
            if same_key:
                assert (keys[p] == keys[q]).all(), (reference[p], keys[p], keys[q])
            elif reference[p][0] == reference[q][0] and reference[p][0] in (OP.gather, OP.const, OP.affine):
                assert not (keys[p] == keys[q]).all(), reference[p]      # the hash tells them apart
    assert pairs_equal >= 3                    # the two stacks, consts and affine blocks
    g = f.optimize()
    assert _names(g).count("gather") < _names(f).count("gather")
    assert _names(g).count("affine") == 1 and _names(g).count("softmax") == 1
    np.testing.assert_allclose(g(x), f(x), rtol=1e-15)
    np.testing.assert_allclose(g.grad(x), f.grad(x), rtol=1e-14)


def test_no_structural_pair_can_merge_in_the_w_graph():
    f = tj.trace(workloads.w_graph(200), workloads.w_inputs(), optimize=False)
    prog = passes.Program.from_function(f)
    rows = np.flatnonzero(~passes._ELEMENTWISE[prog.ops] & (prog.ops != OP.input))
    assert rows.size >= 100
    assert passes._sharing_a_hash(passes._structural_keys(prog, rows)).size == 0
    assert passes._merge_structural(prog)[1] is False
