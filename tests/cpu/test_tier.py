"""Tiering (tapejit.cpu.tier): a hot Function's kernel compiles in the background and takes
over batch values and gradients with the interpreter's results, bit for bit where the
operations are the same; compile=False never tiers, compile=True compiles at once, and a
tape the kernel cannot take stays on the interpreter without troubling the caller."""
import numpy as np
import pytest
from scipy.optimize import rosen, rosen_der

import tapejit as tj
from tapejit.cpu import tier
from tapejit.bench import workloads

rng = np.random.default_rng(5)


@pytest.fixture
def hot_after(monkeypatch):
    def set_points(points):
        monkeypatch.setattr(tier, "HOT_POINTS", points)
        # no early look for a kernel on disk (an earlier test may have compiled it)
        monkeypatch.setattr(tier, "CACHED_FRACTION", 1)
    return set_points


def test_a_hot_function_moves_to_its_kernel_with_the_same_results(hot_after):
    hot_after(3000)
    f = tj.trace(workloads.rosen, np.zeros(10))
    X = rng.standard_normal((2000, 10))
    v0, g0 = f.batch_value_and_grad(X)            # 2,000 points served: not hot yet
    assert f.tier == "interpreter" and f._kernel is None
    v1, g1 = f.batch_value_and_grad(X)            # 4,000: hot, its kernel compiles
    assert f.tier in ("compiling", "compiled")
    assert f.wait_compiled(timeout=120) and f.tier == "compiled" and f.tier_error is None
    v2, g2 = f.batch_value_and_grad(X)
    # the kernel runs the interpreter's operations in its order: the same bits
    np.testing.assert_array_equal(v2, v0)
    np.testing.assert_array_equal(g2, g0)
    np.testing.assert_array_equal(g1, g0)
    np.testing.assert_array_equal(f.batch(X), v0)
    np.testing.assert_allclose(g2[7], rosen_der(X[7]), rtol=1e-12, atol=1e-10)
    assert v2[3] == pytest.approx(rosen(X[3]), rel=1e-13)


def test_guards_survive_the_tier_change(hot_after):
    hot_after(100)

    def branchy(x):
        return tj.sum(x * x) if x[0] > 0 else tj.sum(tj.sin(x))
    f = tj.trace(branchy, np.ones(3))
    X = rng.standard_normal((200, 3))
    before, valid_before = f.batch_grad(X, on_branch_change="mask")
    assert f.wait_compiled(timeout=120)
    after, valid = f.batch_grad(X, on_branch_change="mask")
    np.testing.assert_array_equal(valid, X[:, 0] > 0)
    np.testing.assert_array_equal(valid_before, valid)
    np.testing.assert_array_equal(after[valid], 2 * X[valid])
    np.testing.assert_array_equal(after[valid], before[valid])
    with pytest.raises(tj.BranchChangedError):
        f.batch_grad(X)


def test_compile_false_never_and_compile_true_at_once(hot_after):
    hot_after(10)
    never = tj.trace(workloads.rosen, np.zeros(4), compile=False)
    X = rng.standard_normal((500, 4))
    for _ in range(3):
        never.batch_grad(X)
    assert never.tier == "interpreter" and not never.wait_compiled(timeout=0)
    now = tj.trace(workloads.rosen, np.zeros(4), compile=True)
    assert now.tier == "compiled"
    np.testing.assert_array_equal(now.batch_grad(X), never.batch_grad(X))


def test_other_modes_do_not_count(hot_after):
    hot_after(100)
    f = tj.trace(workloads.rosen, np.zeros(4))
    X = rng.standard_normal((1000, 4))
    f.batch_hvp(X, V=X)
    f.batch_jvp(X, V=X)
    assert f.tier == "interpreter"


def test_a_tape_too_large_for_a_kernel_stays_on_the_interpreter(hot_after):
    hot_after(1)
    n = 6000                                     # 6,000 unrolled statements: over the limit
    f = tj.trace(lambda x: tj.sum(tj.sin(x) * x), np.zeros(n))
    X = rng.standard_normal((2, n))
    first = f.batch_grad(X)
    assert not f.wait_compiled(timeout=120)
    assert f.tier == "not compilable" and isinstance(f.tier_error, tj.NotCompilableError)
    np.testing.assert_array_equal(f.batch_grad(X), first)       # the interpreter goes on
    np.testing.assert_allclose(first, np.sin(X) + X * np.cos(X), rtol=1e-13, atol=1e-15)


def test_a_kernel_compiled_before_loads_long_before_the_function_is_hot(monkeypatch):
    tj.trace(workloads.rosen, np.zeros(6), compile=True)       # its kernel, now on disk
    monkeypatch.setattr(tier, "HOT_POINTS", 10 ** 9)
    f = tj.trace(workloads.rosen, np.zeros(6))
    X = rng.standard_normal((20_000, 6))
    f.batch_grad(X)                    # 2e4 points: the look for it on disk waits for 1e7
    assert f.tier == "interpreter" and not f._tier.probed
    monkeypatch.setattr(tier, "CACHED_FRACTION", 10 ** 5)      # now 1e4 points are enough
    f.batch_grad(X)
    assert f.wait_compiled(timeout=120) and f.tier == "compiled"
    assert f._tier.points < tier.HOT_POINTS
    np.testing.assert_allclose(f.batch_grad(X)[5], rosen_der(X[5]), rtol=1e-12, atol=1e-10)


def test_a_kernel_slower_than_the_interpreter_is_dropped(hot_after):
    # the choice, fed with made-up timings (tests never judge wall-clock time): a kernel
    # is scalar code per point, which loses to the SIMD interpreter on transcendental tapes
    hot_after(1000)
    f = tj.trace(lambda x: tj.sum(tj.sin(x) * tj.log1p(x * x)), np.zeros(4))
    X = rng.standard_normal((2000, 4))
    interpreted = f.batch_grad(X)
    assert f.wait_compiled(timeout=120)
    kernel = f._kernel
    f._tier.interpreter_time[1] = 10e-9
    for _ in range(tier.TRIALS - 1):
        tier.served(f, 2000, 1, 2000 * 30e-9, kernel)
    assert f.tier == "compiled"                    # not enough kernel calls yet
    tier.served(f, 2000, 1, 2000 * 30e-9, kernel)
    assert f.tier == "interpreter" and "dropped" in str(f.tier_error)
    for _ in range(3):
        np.testing.assert_array_equal(f.batch_grad(X), interpreted)
    assert f.tier == "interpreter"                 # for good


def test_a_faster_kernel_stays(hot_after):
    hot_after(1000)
    f = tj.trace(workloads.rosen, np.zeros(4))
    X = rng.standard_normal((2000, 4))
    f.batch_grad(X)
    assert f.wait_compiled(timeout=120)
    f._tier.interpreter_time[1] = 30e-9
    for _ in range(2 * tier.TRIALS):
        tier.served(f, 2000, 1, 2000 * 10e-9, f._kernel)
    assert f.tier == "compiled"
