"""The Python twins of the jitted passes give what the jitted passes give.

Small tapes run the optimizer passes, the adjoint plan and the sparsity analysis as
Python (tapejit/_runtime/twins.py) so that a first trace compiles no pass. Here every tape is
traced, planned and analysed twice, once per side, and the results must be identical.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapejit as tj
from tapejit._runtime import twins as _twins
from tapejit.passes import program as passes
from tapejit.analysis import sparsity
from tapejit.bench import workloads
from tapejit.analysis.adjoint_plan import plan_and_dirty

from test_passes import build, step


def _mlp(x):
    W = tj.reshape(x[:12], (3, 4))
    h = tj.tanh(np.arange(6.0).reshape(2, 3) / 5 @ W)
    return tj.sum(tj.softmax(h, axis=1) * np.array([1.0, -2.0, 0.5, 3.0])) + tj.amax(h)


def _python_sum(x):
    return sum(x[i] * x[(i + 1) % 6] for i in range(6)) + tj.stack([x[0], x[3], x[2]])[1] ** 2


def _banded(x):
    return tj.sum(workloads.banded(x) ** 2)


CASES = [(workloads.rosen, 8), (_banded, 12), (_mlp, 12), (_python_sum, 6)]


def _analysis(fn, x0):
    """Everything the twins compute for one function: the optimized tape, its adjoint plan,
    sparsity patterns and colorings."""
    f = tj.trace(fn, x0)
    a = f.arrays
    plan, dirty = plan_and_dirty(a, f.out_pos)
    jac, hess = f.jacobian_sparsity(), f.hessian_sparsity()
    return dict(ops=a.ops, ins=a.ins, cv=a.cv, consts=a.consts, idx=a.idx, n_slots=np.array(a.n_slots), plan=plan,
                dirty=dirty, jac=jac.toarray(), hess=hess.toarray(),
                jac_colors=sparsity.coloring(jac), hess_colors=sparsity.coloring(hess, symmetric=True),
                hessian=f.hessian(x0, sparse=True).toarray())


def _both(monkeypatch, fn, x0):
    results = {}
    for mode in ("python", "jit"):
        monkeypatch.setattr(_twins, "MODE", mode)
        results[mode] = _analysis(fn, x0)
    for key, value in results["jit"].items():
        np.testing.assert_array_equal(results["python"][key], value, err_msg=key)


@pytest.mark.parametrize("fn, n", CASES, ids=[c[0].__name__ for c in CASES])
def test_twins_equal_jitted_passes(monkeypatch, fn, n):
    _both(monkeypatch, fn, np.linspace(-0.9, 1.1, n))


@settings(max_examples=15, deadline=None)
@given(program=st.lists(step, min_size=1, max_size=20))
def test_twins_equal_jitted_passes_on_random_programs(program):
    with pytest.MonkeyPatch.context() as monkeypatch:
        _both(monkeypatch, build(program), np.array([0.3, -1.2, 0.8, 2.0]))


def test_a_twin_calls_twins():
    twin = _twins.python_twin(passes.depends_forward)
    # the table's generated read functions, imported from another module
    assert twin.__globals__["operand_reads"] is _twins.python_twin(passes.operand_reads)
    assert twin.__globals__["index_reads"] is _twins.python_twin(passes.index_reads)


def test_large_tapes_and_compiled_passes_use_the_jitted_version(monkeypatch):
    monkeypatch.setattr(_twins, "MODE", "auto")
    monkeypatch.setattr(_twins, "_twin_calls", {})
    ops = np.array([0, 0], np.uint8)
    ins = np.zeros((8, 2), np.int64)
    ins[1] = (_twins.SMALL_WORK, 1)
    small_ins = ins.copy()
    small_ins[1] = (1, 1)
    assert _twins.tape_work(ops, ins) > _twins.SMALL_WORK
    assert _twins.jit_or_python(passes.read_counts, _twins.tape_work(ops, ins)) is passes.read_counts
    work = _twins.tape_work(ops, small_ins)
    expected = passes.read_counts if passes.read_counts.signatures else _twins.python_twin(passes.read_counts)
    assert _twins.jit_or_python(passes.read_counts, work) is expected
    # a twin that runs often gives way to the jitted function
    for _ in range(_twins.HOT_CALLS):
        _twins.jit_or_python(passes.read_counts, work)
    assert _twins.jit_or_python(passes.read_counts, work) is passes.read_counts


def test_a_first_small_trace_compiles_no_pass():
    """Compile granularity: a fresh process that traces, differentiates and takes a sparse
    Hessian of a small function compiles sweep kernels only (and a small batch moves its
    points with the plain loops of move_plain, not the block transposes)."""
    script = """
import numpy as np
import tapejit as tj
from tapejit.passes import program as passes
from tapejit.analysis import adjoint_plan
from tapejit.analysis import sparsity
from tapejit.cpu import _transpose
from numba.core.dispatcher import Dispatcher
def rosen(x):
    return tj.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
f = tj.trace(rosen, np.full(10, 0.5))
f.grad(np.full(10, 0.5))
f.batch_grad(np.random.default_rng(0).uniform(-1, 1, (100, 10)))
f.hessian(np.full(10, 0.5), sparse=True)
compiled = [name for module in (passes, adjoint_plan, sparsity, _transpose) for name, value in vars(module).items()
            if isinstance(value, Dispatcher) and value.signatures and name != "move_plain"]
print(compiled)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy(),
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
