"""tj.minimize, tj.multistart and scipy.optimize on tapejit Functions."""
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize
from scipy.optimize import rosen, rosen_der

import tapejit as tj
from tapejit.bench import workloads

rng = np.random.default_rng(19)


def test_scipy_integration():
    f = tj.trace(workloads.rosen, np.zeros(8))
    x0 = np.full(8, -0.5)
    a = scipy_minimize(f.value_and_grad, x0, jac=True, method="L-BFGS-B")
    b = scipy_minimize(rosen, x0, jac=rosen_der, method="L-BFGS-B")
    assert a.nit == b.nit and np.allclose(a.x, b.x, atol=1e-10)
    c = scipy_minimize(f, x0, jac=f.grad, hessp=f.hvp, method="trust-krylov")
    assert c.success and np.allclose(c.x, 1.0, atol=1e-6)


@pytest.mark.parametrize("method,kwargs", [
    ("lbfgs", {}), ("newton-cg", {}), ("gd", {"maxiter": 60_000}), ("adam", {"lr": 2e-2, "maxiter": 30_000}),
])
def test_methods_reach_the_minimum_of_rosenbrock(method, kwargs):
    res = tj.minimize(workloads.rosen, np.full(4, 0.3), method=method, gtol=1e-6, ftol=0.0, **kwargs)
    assert res.success, res.message
    np.testing.assert_allclose(res.x, np.ones(4), atol=1e-4)
    assert res.fun == pytest.approx(rosen(res.x), abs=1e-12)
    np.testing.assert_allclose(res.jac, rosen_der(res.x), atol=1e-9)
    assert len(res.history["fun"]) == res.nit + 1 and res.history["grad_norm"][-1] <= 1e-6
    assert np.all(np.diff(res.history["fun"][: 20]) <= 1e-12) or method == "adam"


def test_lbfgs_on_a_quadratic_matches_the_solution():
    A = rng.standard_normal((6, 6))
    A = A @ A.T + 6 * np.eye(6)
    b = rng.standard_normal(6)
    res = tj.minimize(lambda x: 0.5 * x @ (A @ x) - b @ x, np.zeros(6), gtol=1e-10, ftol=0.0)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), atol=1e-8)


def test_bounds_are_respected_and_give_the_projected_optimum():
    res = tj.minimize(lambda x: tj.sum((x - np.array([2.0, -3.0, 0.5])) ** 2), np.zeros(3),
                      bounds=(np.array([0.0, -1.0, 0.0]), np.array([1.0, 1.0, 1.0])))
    np.testing.assert_allclose(res.x, [1.0, -1.0, 0.5], atol=1e-6)
    res = tj.minimize(workloads.rosen, np.zeros(4), bounds=[(-1, 0.5)] * 4)
    assert np.all(res.x <= 0.5 + 1e-12) and np.all(res.x >= -1)
    ref = scipy_minimize(rosen, np.zeros(4), jac=rosen_der, method="L-BFGS-B", bounds=[(-1, 0.5)] * 4)
    assert res.fun == pytest.approx(ref.fun, rel=1e-6, abs=1e-9)


def test_bad_input_and_clean_stops():
    with pytest.raises(tj.TapejitError, match="NaN"):
        tj.minimize(workloads.rosen, np.array([np.nan, 1.0]))
    with pytest.raises(tj.TapejitError, match="scalar"):
        tj.minimize(lambda x: x * 2, np.ones(3))
    with pytest.raises(tj.TapejitError, match="method"):
        tj.minimize(workloads.rosen, np.ones(3), method="bfgs2")
    # the objective becomes NaN past x = 2: the run stops cleanly with the reason
    res = tj.minimize(lambda x: tj.sum(-x + tj.sqrt(2.0 - x) * 0.0 + tj.log(2.5 - x) * 0), np.zeros(2),
                      method="gd", maxiter=10_000)
    assert not res.success and res.status in (tj.apps.minimize.NONFINITE, tj.apps.minimize.LINESEARCH, tj.apps.minimize.MAXITER)
    assert "stopped" in res.message
    res = tj.minimize(workloads.rosen, np.zeros(3), maxiter=3, ftol=0.0, gtol=0.0)
    assert res.nit == 3 and res.message.endswith("maximum number of iterations reached")


def test_callback_every_k_iterations_and_stop():
    seen = []

    def callback(intermediate):
        seen.append(intermediate.nit)
        return intermediate.nit >= 30

    res = tj.minimize(workloads.rosen, np.zeros(30), callback=callback, callback_every=10, ftol=0.0, gtol=0.0)
    assert seen[:3] == [10, 20, 30] and res.nit == 30 and "callback" in res.message


def test_branch_change_mid_run_is_retraced():
    def piecewise(x):
        if x[0] > 1.0:
            return tj.sum((x - 3.0) ** 2)
        return tj.sum((x - 3.0) ** 2) + 0.0 * x[0]
    res = tj.minimize(piecewise, np.zeros(2))
    np.testing.assert_allclose(res.x, [3.0, 3.0], atol=1e-5)
    assert res.success


def test_multistart_finds_the_global_minimum_of_a_multimodal_function():
    def rastrigin(x):
        return 10.0 * x.shape[0] + tj.sum(x * x - 10.0 * tj.cos(2 * np.pi * x))
    X0 = np.random.default_rng(0).uniform(-5.12, 5.12, (400, 2))
    best = tj.multistart(rastrigin, X0)
    assert best.fun == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(best.x, [0.0, 0.0], atol=1e-5)
    assert best.all.x.shape == (400, 2) and best.all.success.mean() > 0.9
    single = tj.minimize(rastrigin, X0[7])
    assert best.all.fun[7] == pytest.approx(single.fun, abs=1e-10)


def test_multistart_matches_scipy_per_start():
    X0 = rng.standard_normal((12, 5))
    best = tj.multistart(workloads.rosen, X0, gtol=1e-8, ftol=0.0)
    for b in range(0, 12, 5):
        ref = scipy_minimize(rosen, X0[b], jac=rosen_der, method="L-BFGS-B", options=dict(gtol=1e-8, ftol=0))
        assert best.all.fun[b] == pytest.approx(ref.fun, abs=1e-10)


def test_newton_cg_on_a_tiled_tape():
    """n = 30,000: Newton-CG's Hessian-vector products run through the tiled plan."""
    x0 = 1.0 + 0.2 * np.random.default_rng(5).standard_normal(30_000)
    res = tj.minimize(workloads.rosen, x0, method="newton-cg", gtol=1e-8, ftol=0.0)
    assert res.success
    assert np.abs(rosen_der(res.x)).max() <= 1e-8
    np.testing.assert_allclose(res.x, 1.0, atol=1e-6)


@pytest.mark.disk_cache
def test_the_compiled_loops_load_from_the_cache_in_a_fresh_process():
    # the loops once took the evaluator as a first-class function argument: Numba's cache
    # could not match that type in another process, so every new process (and every Dask
    # worker) recompiled them for 15-25 s, and a stale index entry could fail to pickle
    f = tj.trace(workloads.rosen, np.zeros(6))
    for method in ("lbfgs", "adam", "newton-cg"):
        tj.minimize(f, np.zeros(6), method=method, maxiter=3)       # compiled here, cached
    script = (
        "import numpy as np, tapejit as tj\n"
        "from tapejit.apps import minimize as o\n"
        "f = tj.trace(lambda x: tj.sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2), np.zeros(6))\n"
        "for method in ('lbfgs', 'adam', 'newton-cg'):\n"
        "    tj.minimize(f, np.zeros(6), method=method, maxiter=3)\n"
        "misses = sum(sum(d.stats.cache_misses.values()) for d in (o._lbfgs, o._first_order, o._newton_cg))\n"
        "hits = sum(sum(d.stats.cache_hits.values()) for d in (o._lbfgs, o._first_order, o._newton_cg))\n"
        "print(misses, hits)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    misses, hits = (int(v) for v in out.stdout.split())
    assert misses == 0 and hits == 3
