"""Sparsity patterns, coloring and sparse Jacobians/Hessians against dense ones."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import rosen_hess

import tapejit as tj
from tapejit.analysis import sparsity
from tapejit.bench import workloads

rng = np.random.default_rng(13)


def test_rosenbrock_sparse_hessian_is_tridiagonal_with_three_colors():
    f = tj.trace(workloads.rosen, np.zeros(30))
    x = rng.standard_normal(30)
    H = f.hessian(x, sparse=True)
    assert isinstance(H, sp.csr_matrix)
    np.testing.assert_allclose(H.toarray(), rosen_hess(x), rtol=1e-12, atol=1e-10)
    pattern = f.hessian_sparsity()
    assert pattern.dtype == bool and pattern.nnz == 3 * 30 - 2
    assert sparsity.n_colors(f, "hessian") <= 3


def banded(x):
    n = x.shape[0]
    return x[2:-2] * x[:-4] + tj.sin(x[1:-3]) * x[3:-1] - x[4:] ** 2 + tj.exp(x[2:-2] / n)


def test_banded_jacobian_needs_five_colors():
    f = tj.trace(banded, np.zeros(40))
    x = rng.standard_normal(40)
    J = f.jacobian(x, sparse=True)
    np.testing.assert_allclose(J.toarray(), f.jacobian(x), rtol=1e-13, atol=1e-14)
    assert sparsity.n_colors(f, "jacobian") <= 5
    assert f.jacobian_sparsity().nnz == 36 * 5


def test_patterns_ignore_what_has_no_derivative():
    f = tj.trace(lambda x: tj.where(x[0] > x[1], x[2] * x[2], x[3]) + tj.sign(x[4]) * 0 + x[5], np.ones(6))
    J = f.jacobian_sparsity().toarray()
    np.testing.assert_array_equal(J, [[False, False, True, True, False, True]])
    H = f.hessian_sparsity().toarray()
    expected = np.zeros((6, 6), bool)
    expected[2, 2] = True
    np.testing.assert_array_equal(H, expected)


def random_sparse_problem(seed, n):
    r = np.random.default_rng(seed)
    pairs = r.integers(0, n, size=(n, 2))
    weights = r.uniform(0.5, 1.5, n)
    M = sp.random(3, n, density=0.3, random_state=seed).toarray()

    def fn(x):
        terms = tj.sin(x[pairs[:, 0]]) * x[pairs[:, 1]] * weights
        return tj.sum(terms) + tj.sum(tj.tanh(M @ x) ** 2) + tj.sum(x[::3] ** 3)

    def vec(x):
        return tj.concatenate([tj.sin(x[pairs[:, 0]]) * x[pairs[:, 1]], M @ x])
    return fn, vec


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 25))
def test_sparse_equals_dense_on_random_sparse_problems(seed, n):
    fn, vec = random_sparse_problem(seed, n)
    x = np.random.default_rng(seed + 1).standard_normal(n)
    f = tj.trace(fn, x)
    H_dense = f.hessian(x)
    H_sparse = f.hessian(x, sparse=True)
    np.testing.assert_allclose(H_sparse.toarray(), H_dense, rtol=1e-12, atol=1e-12)
    # the pattern contains every nonzero
    assert not np.any((np.abs(H_dense) > 0) & ~f.hessian_sparsity().toarray())
    g = tj.trace(vec, x)
    J_dense = g.jacobian(x)
    np.testing.assert_allclose(g.jacobian(x, sparse=True).toarray(), J_dense, rtol=1e-12, atol=1e-12)
    assert not np.any((np.abs(J_dense) > 0) & ~g.jacobian_sparsity().toarray())


def test_coloring_is_valid_distance_two():
    pattern = sp.random(60, 40, density=0.08, random_state=3, format="csr").astype(bool)
    colors = sparsity.coloring(pattern)
    dense = pattern.toarray()
    for row in dense:
        cols = np.flatnonzero(row)
        assert len(set(colors[cols])) == len(cols)


def test_patterns_are_cached_per_function():
    f = tj.trace(workloads.rosen, np.zeros(10))
    assert f.hessian_sparsity() is f.hessian_sparsity()
    assert f.jacobian_sparsity() is f.jacobian_sparsity()


def test_large_rosenbrock_sparse_hessian():
    n = 20_000
    f = tj.trace(workloads.rosen, np.zeros(n))
    x = rng.standard_normal(n)
    H = f.hessian(x, sparse=True)
    assert H.nnz == 3 * n - 2 and sparsity.n_colors(f) == 3
    v = rng.standard_normal(n)
    np.testing.assert_allclose(H @ v, f.hvp(x, v=v), rtol=1e-12, atol=1e-9)


# ------------------------------------------------------------------------------------------
# the propagation (affine runs, shared explicit sets, materialization) against a plain
# slot-by-slot reference with Python sets over the same tape
# ------------------------------------------------------------------------------------------
def reference_sets(f):
    """Input set of every slot, one Python set per slot, straight from the tape format."""
    a = f.arrays
    sets = [set() for _ in range(a.n_slots)]
    for j, slot in enumerate(f.in_pos):
        sets[slot] = {j}
    OP = sparsity.OP
    for i in range(len(a.ops)):
        op = int(a.ops[i])
        o, n, x, sx, y, sy, z, sz = (int(v) for v in a.ins[:, i])
        for k in range(n):
            s = set()
            if op == OP.input:
                continue
            if sparsity.ELEMENTWISE[op]:
                for t, (base, stride) in enumerate(((x, sx), (y, sy), (z, sz))):
                    if sparsity.DIFFERENTIABLE[op, t]:
                        s |= sets[base + k * stride]
            elif op == OP.gather:
                s = set(sets[x + int(a.idx[y + k])])
            elif op in (OP.sum, OP.amax):
                r, j = divmod(k, sy)
                for q in range(y):
                    s |= sets[x + (r * y + q) * sx + j]
            elif op == OP.affine:
                for j in range(sy):
                    if a.consts[y + k * sy + j] != 0.0:
                        s |= sets[x + j * sx]
            elif op == OP.matmul:
                r, j = divmod(k, sy)
                for q in range(sx):
                    s |= sets[x + r * sx + q] | sets[y + q * sy + j]
            elif op == OP.softmax:
                r = k // sy
                for q in range(sy):
                    s |= sets[x + r * sy + q]
            sets[o + k] = s
    return sets


def reference_hessian_pattern(f):
    a = f.arrays
    sets = reference_sets(f)
    reached = np.zeros(a.n_slots, bool)
    reached[f.out_pos[0]] = True
    entries = set()
    OP = sparsity.OP

    def products(s1, s2):
        entries.update((p, q) for p in sets[s1] for q in sets[s2])
        entries.update((q, p) for p in sets[s1] for q in sets[s2])
    for i in range(len(a.ops) - 1, -1, -1):
        op = int(a.ops[i])
        o, n, x, sx, y, sy, z, sz = (int(v) for v in a.ins[:, i])
        for k in range(n):
            if op == OP.input or not reached[o + k]:
                continue
            if sparsity.ELEMENTWISE[op]:
                slots = [base + k * stride for base, stride in ((x, sx), (y, sy), (z, sz))]
                for t in range(3):
                    if sparsity.DIFFERENTIABLE[op, t]:
                        reached[slots[t]] = True
                        for u in range(3):
                            if sparsity.DIFFERENTIABLE[op, u] and sparsity.NONLINEAR[op, t, u]:
                                products(slots[t], slots[u])
            elif op == OP.gather:
                reached[x + int(a.idx[y + k])] = True
            elif op in (OP.sum, OP.amax):
                r, j = divmod(k, sy)
                for q in range(y):
                    reached[x + (r * y + q) * sx + j] = True
            elif op == OP.affine:
                for j in range(sy):
                    if a.consts[y + k * sy + j] != 0.0:
                        reached[x + j * sx] = True
            elif op == OP.matmul:
                r, j = divmod(k, sy)
                for q in range(sx):
                    reached[x + r * sx + q] = reached[y + q * sy + j] = True
                    products(x + r * sx + q, y + q * sy + j)
            elif op == OP.softmax:
                r = k // sy
                for q in range(sy):
                    reached[x + r * sy + q] = True
                    for q2 in range(sy):
                        products(x + r * sy + q, x + r * sy + q2)
    dense = np.zeros((f.n_inputs, f.n_inputs), bool)
    for p, q in entries:
        dense[p, q] = True
    return dense


IDX = np.random.default_rng(5).integers(0, 24, 30)
PROGRAMS = {
    "rosenbrock (affine throughout)": workloads.rosen,
    "reversed and strided slices": lambda x: tj.sum(x[::-1] * x ** 2) + tj.sum(tj.sin(x[:39:3]) * x[1::3]),
    "a broadcast element": lambda x: tj.sum(tj.exp(x * x[0])) + tj.sum(x[1:] / x[3]),
    "gathers mixed with slices (materialized runs)": lambda x: tj.sum(tj.tanh(x[IDX] * x[:30]) * x[1:31] ** 2),
    "more families than kept (explicit fallback)":
        lambda x: tj.sum(sum(x[k: k + 12] for k in range(20)) ** 2),
    "part of a vector reaches the output": lambda x: tj.sum((x ** 3)[:7]) + x[10] * x[20],
    "reductions, matmul and softmax":
        lambda x: tj.sum(tj.softmax(x[:8] * x[8:16])) * tj.amax(x[16:24]) + tj.sum((np.ones((3, 8)) @ x[:8]) ** 2),
    "where and clip": lambda x: tj.sum(tj.where(x[:16] > 0, x[:16] * x[16:32], tj.clip(x[1:17], -1, 1) ** 2)),
    "a sum of squares of a sum (dense)": lambda x: tj.sum(x) ** 2 + tj.sum(tj.cos(x[5:9])),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_patterns_equal_a_slot_by_slot_reference(name):
    fn = PROGRAMS[name]
    x0 = rng.uniform(0.5, 1.5, 40)
    f = tj.trace(fn, x0)
    H = f.hessian_sparsity().toarray()
    np.testing.assert_array_equal(H, reference_hessian_pattern(f))
    # the sparse Hessian holds the dense one's values on that pattern
    x = rng.uniform(0.5, 1.5, 40)
    np.testing.assert_allclose(f.hessian(x, sparse=True).toarray(), f.hessian(x), rtol=1e-12, atol=1e-12)
    # and each slot's input set, through the Jacobian pattern of a vector function
    g = tj.trace(lambda x: tj.concatenate([tj.reshape(fn(x), (1,)), x[::-1] * x[2], x[IDX] ** 2]), x0)
    ref = reference_sets(g)
    expected = np.zeros((g.n_outputs, g.n_inputs), bool)
    for r, slot in enumerate(g.out_pos):
        expected[r, sorted(ref[slot])] = True
    np.testing.assert_array_equal(g.jacobian_sparsity().toarray(), expected)


def test_two_inputs_and_parameters_keep_their_own_families():
    def fn(x, y, w):
        return tj.sum(w * x[1:] * y[:-1] ** 2) + tj.sum(x * y)
    x0, y0, w0 = rng.standard_normal(12), rng.standard_normal(12), rng.standard_normal(11)
    f = tj.trace(fn, x0, y0, params=(w0,))
    np.testing.assert_array_equal(f.hessian_sparsity().toarray(), reference_hessian_pattern(f))
    H = f.hessian_sparsity().toarray()
    assert H[0, 12] and H[1, 12] and not H[0, 1]        # x0*y0; x1*y0**2; no x0*x1


def test_long_affine_tape_stores_no_per_slot_sets():
    n = 50_000
    f = tj.trace(workloads.rosen, np.zeros(n))
    run_o, run_n, run_inst, affine, *_, ind = sparsity._slot_patterns(f)
    # every elementwise run is affine; only the final sum holds an explicit set
    assert affine[run_inst[:-1]].all() and not affine[run_inst[-1]]
    assert ind.size == n


@pytest.mark.parametrize("offsets", [(1,), (1, 2), (2,), (1, 3)])
def test_banded_patterns_get_valid_colorings(offsets):
    # a full band is colored j mod (2b + 1); a band with gaps falls back to the greedy one
    def fn(x):
        return tj.sum(x ** 2) + sum(tj.sum(x[d:] * x[:-d]) for d in offsets)
    n = 60
    f = tj.trace(fn, np.ones(n))
    x = rng.standard_normal(n)
    H = f.hessian(x, sparse=True)
    np.testing.assert_allclose(H.toarray(), f.hessian(x), rtol=1e-12, atol=1e-12)
    colors = sparsity._cached_coloring(f, "hessian", f.hessian_sparsity())
    dense = f.hessian_sparsity().toarray()
    for row in dense:
        cols = np.flatnonzero(row)
        assert len(set(colors[cols])) == len(cols)
    if offsets in [(1,), (1, 2)]:           # full bands: as many colors as the longest row
        assert sparsity.n_colors(f) == max(row.sum() for row in dense)
