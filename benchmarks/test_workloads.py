"""The benchmark workloads under pytest-benchmark, grouped per workload so that each
table shows tapejit beside its baselines (run in the same process).

    pytest benchmarks/ --benchmark-only                # quick sizes
    TAPEJIT_BENCH_FULL=1 pytest benchmarks/ --benchmark-only
    pytest benchmarks/ --benchmark-disable             # each call once: a correctness smoke test

A baseline that is not installed is skipped (its row is absent); every implementation's
result is checked against tapejit's.
"""
import functools
import os

import numpy as np
import pytest

from tapejit.bench import harness as bench

FULL = os.environ.get("TAPEJIT_BENCH_FULL") == "1"
IMPLEMENTATIONS = {
    "eager": ["tapejit", "torch (eager)", "HIPS autograd", "numpy (closed form)"],
    "chain": ["tapejit", "torch (eager)", "python (hand-written)"],
    "eager-rosen": ["tapejit (eager)", "scipy rosen_der (numpy)", "torch (eager)"],
    "B1": ["tapejit", "tapejit f.compile()", "numba (hand-written)", "numpy (vectorized, by hand)", "jax.jit(vmap(grad))",
           "torch.func.vmap(grad)", "casadi (SX, map thread)"],
    "B2": ["tapejit", "numba (hand-written)", "numpy (vectorized, by hand)", "jax.jit(vmap(grad))",
           "torch.func.vmap(grad)"],
    "L1": ["tapejit (trace, f.grad)", "scipy rosen_der (numpy)", "jax.jit(grad)", "casadi (MX gradient)"],
    "W": ["tapejit (replay)", "numba (hand-written)", "torch (eager)"],
    "H1": ["tapejit (f.hvp)", "scipy rosen_hess_prod (numpy)", "jax.jit(jvp(grad))"],
    "H2": ["tapejit first f.hessian(sparse=True)", "tapejit f.hessian(sparse=True), cached",
           "numpy closed form (scipy.sparse)"],
    "J1": ["tapejit first f.jacobian(sparse=True)", "tapejit f.jacobian(sparse=True), cached",
           "5 batched jvps (f.batch_jvp) + scatter"],
    "D1": ["tapejit local engine (2 threads)", "tapejit.apps.dask, 2 workers"],
    "O1": ["tapejit (tj.minimize lbfgs)", "scipy L-BFGS-B (rosen, rosen_der)"],
    "O2": ["tapejit (tj.multistart lbfgs)", "scipy L-BFGS-B loop (200 starts)"],
}


@functools.lru_cache(maxsize=None)
def case(name):
    w = bench.WORKLOADS[name]
    return w.build(w.default_size if FULL else w.quick_size, "cpu")


@functools.lru_cache(maxsize=None)
def reference(name):
    c = case(name)
    first = c.impls[0]
    return np.asarray((first.result or (lambda r: r))(first.fn()), dtype=np.float64)


@pytest.mark.parametrize("workload,implementation",
                         [(w, i) for w, impls in IMPLEMENTATIONS.items() for i in impls])
def test_workload(benchmark, workload, implementation):
    c = case(workload)
    impl = next(i for i in c.impls if i.name == implementation)
    if impl.fn is None:
        pytest.skip(f"{implementation}: {impl.note}")
    benchmark.group = f"{workload} ({c.items:,} {c.unit} per call)"
    benchmark.extra_info["items_per_call"] = impl.items or c.items
    out = benchmark(impl.fn)
    value = np.asarray((impl.result or (lambda r: r))(out), dtype=np.float64)
    np.testing.assert_allclose(value, reference(workload), rtol=c.tolerance * 100, atol=c.tolerance)


def test_first_gradient_latency_in_a_fresh_process(benchmark):
    """Import tapejit and compute a first gradient in a new process (warm Numba cache)."""
    result = benchmark.pedantic(bench.first_call_latency, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["first_gradient_seconds"] > 0
