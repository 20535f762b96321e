"""The CUDA kernels against the CPU engine, on numba-cuda's simulator.

Run by tests/cuda/test_cuda_simulator.py in a separate process with NUMBA_ENABLE_CUDASIM=1."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_adjoint_plan import build, step

import tapejit as tj
from tapejit import cuda as tjcuda
from tapejit.bench import workloads

rng = np.random.default_rng(7)
M = rng.standard_normal((3, 5))


def _reuse(x):
    """Operands used twice in one instruction, outputs read by several later ones, a
    broadcast scalar: adjoints that the plan must accumulate, not assign."""
    y = x * x + tj.exp(x[0]) * x
    z = y[::-1] - tj.softplus(y) * y
    return tj.sum(z * z) + tj.sum(y)


def _scalar_sums(x):
    """Python sums of scalars (gather_sum once optimized) and a softmax of neighbours."""
    nodes = list(x)
    for _ in range(3):
        nodes.append(sum(nodes[-6:-1]))
        nodes.append(sum(nodes[-4:], 0.5) * nodes[-2])
        nodes.extend(tj.softmax(tj.stack(nodes[-3:])))
    return nodes[-1] + tj.softplus(nodes[-5])


PROGRAMS = {
    "rosenbrock": (lambda x: workloads.rosen(x), 5),
    "structural": (lambda x: tj.sum(tj.softmax(tj.reshape(x, (2, 3)), axis=1) * x[::-1].reshape(2, 3))
                   + tj.amax(x) + tj.sum(tj.tanh(M @ x[:5])) + tj.dot(x[:3], x[3:]), 6),
    "where and powers": (lambda x: tj.sum(tj.where(x > 0, x ** 1.5, tj.exp(x) - 1) / (1 + x * x)), 4),
    "matmul": (lambda x: tj.sum(tj.reshape(x, (2, 2)) @ tj.reshape(x, (2, 2)).T) + tj.erf(x[0]), 4),
    "reuse": (_reuse, 5),
    "scalar sums": (_scalar_sums, 6),
}


def test_available_under_the_simulator():
    assert tjcuda.is_available()


@pytest.mark.parametrize("name", PROGRAMS)
def test_float64_equals_cpu(name):
    fn, n = PROGRAMS[name]
    f = tj.trace(fn, np.ones(n) * 0.5)
    assert tjcuda.local_size(f.n_slots) > 0
    X = rng.standard_normal((37, n))
    cpu_v, cpu_g = f.batch_value_and_grad(X, on_branch_change="mask")[:2]
    gpu_v, gpu_g = f.batch_value_and_grad(X, device="cuda", on_branch_change="mask")[:2]
    np.testing.assert_allclose(gpu_v, cpu_v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gpu_g, cpu_g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f.batch(X, device="cuda", on_branch_change="mask")[0], cpu_v, rtol=1e-12)


def test_global_memory_kernel_for_larger_tapes_and_b2(monkeypatch):
    monkeypatch.setattr(tjcuda, "LOCAL_BYTES", 4 << 10)
    f = tj.trace(workloads.rosen, np.zeros(80))          # 397 slots: more than 256 fit in 4 KB
    assert tjcuda.local_size(f.n_slots) == 0
    X = rng.standard_normal((19, 80))
    cpu_v, cpu_g = f.batch_value_and_grad(X)
    gpu_v, gpu_g = f.batch_value_and_grad(X, device="cuda")
    np.testing.assert_allclose(gpu_v, cpu_v, rtol=1e-12)
    np.testing.assert_allclose(gpu_g, cpu_g, rtol=1e-12, atol=1e-12)
    Xd, yd = workloads.logistic_data(12, 6)
    f2 = tj.trace(workloads.logistic_loss(Xd, yd), np.zeros(6))
    W = rng.standard_normal((9, 6))
    np.testing.assert_allclose(f2.batch_grad(W, device="cuda"), f2.batch_grad(W), rtol=1e-12, atol=1e-13)


def test_vjp_and_jvp_match_cpu():
    f = tj.trace(lambda x: tj.stack([tj.sum(x * x), tj.sin(x[0]) * x[1]]), np.ones(3))
    X = rng.standard_normal((11, 3))
    U = rng.standard_normal((11, 2))
    V = rng.standard_normal((11, 3))
    np.testing.assert_allclose(f.batch_vjp(X, U=U, device="cuda")[1], f.batch_vjp(X, U=U)[1], rtol=1e-12)
    np.testing.assert_allclose(f.batch_jvp(X, V=V, device="cuda")[1], f.batch_jvp(X, V=V)[1], rtol=1e-12)


def test_nan_and_inf_land_in_the_same_places():
    f = tj.trace(lambda x: tj.sum(tj.log(x) + 1.0 / x), np.ones(2))
    X = np.array([[1.0, 2.0], [-1.0, 1.0], [0.0, 3.0], [np.nan, 1.0], [np.inf, 1.0]])
    cpu_v, cpu_g = f.batch_value_and_grad(X)
    gpu_v, gpu_g = f.batch_value_and_grad(X, device="cuda")
    np.testing.assert_array_equal(np.isnan(gpu_v), np.isnan(cpu_v))
    np.testing.assert_array_equal(np.isinf(gpu_v), np.isinf(cpu_v))
    np.testing.assert_array_equal(np.isnan(gpu_g), np.isnan(cpu_g))
    finite = np.isfinite(cpu_g)
    np.testing.assert_allclose(gpu_g[finite], cpu_g[finite], rtol=1e-12)


def test_float32_within_its_tolerance():
    f = tj.trace(workloads.rosen, np.zeros(6))
    X = rng.uniform(-1, 1, (23, 6))
    v32, g32 = f.batch_value_and_grad(X, device="cuda", dtype=np.float32)
    assert v32.dtype == np.float32 and g32.dtype == np.float32
    v64, g64 = f.batch_value_and_grad(X)
    np.testing.assert_allclose(v32, v64, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-3)


def test_device_arrays_stay_on_the_device():
    from numba import cuda
    f = tj.trace(workloads.rosen, np.zeros(4))
    X = rng.standard_normal((8, 4))
    Xd = cuda.to_device(X)
    vals, grads = f.batch_value_and_grad(Xd, device="cuda")
    assert tjcuda.is_device_array(vals) and tjcuda.is_device_array(grads)
    np.testing.assert_allclose(grads.copy_to_host(), f.batch_grad(X), rtol=1e-12)
    grads, valid = f.batch_grad(Xd, device="cuda", on_branch_change="mask")   # no guards: all valid
    assert tjcuda.is_device_array(valid) and valid.copy_to_host().tolist() == [True] * 8


def test_guards_on_the_gpu():
    def branchy(x):
        if x[0] > 0:
            return tj.sum(x * x)
        return tj.sum(tj.sin(x))
    f = tj.trace(branchy, np.ones(2))
    X = rng.standard_normal((16, 2))
    with pytest.raises(tj.BranchChangedError):
        f.batch_grad(X, device="cuda")
    grads, valid = f.batch_grad(X, device="cuda", on_branch_change="mask")
    np.testing.assert_array_equal(valid, X[:, 0] > 0)
    grads = f.batch_grad(X, device="cuda", on_branch_change="retrace")
    np.testing.assert_allclose(grads, np.where(X[:, :1] > 0, 2 * X, np.cos(X)), rtol=1e-12)


def test_bad_shapes_raise_before_any_launch():
    f = tj.trace(workloads.rosen, np.zeros(4))
    with pytest.raises(tj.ShapeError):
        f.batch_grad(np.zeros((3, 5)), device="cuda")
    with pytest.raises(tj.ShapeError):
        f.batch_value_and_grad(np.zeros((3, 4)), device="cuda", dtype=np.int32)
    with pytest.raises(tj.TapejitError):
        f.batch(np.zeros((3, 4)), device="tpu")


@pytest.fixture
def few_threads(monkeypatch):
    """One block of 4 threads per multiprocessor: every thread walks several points."""
    monkeypatch.setattr(tjcuda, "THREADS_PER_BLOCK", 4)
    monkeypatch.setattr(tjcuda, "BLOCKS_PER_SM", 1)


@pytest.fixture(params=["local arrays", "global workspace"])
def memory(request, monkeypatch):
    if request.param == "global workspace":
        monkeypatch.setattr(tjcuda, "LOCAL_BYTES", 0)
    return request.param


@pytest.mark.parametrize("name", PROGRAMS)
def test_programs_with_threads_walking_several_points(few_threads, memory, name):
    """Stale adjoints of an earlier point would show in a later one."""
    fn, n = PROGRAMS[name]
    f = tj.trace(fn, np.ones(n) * 0.5)
    X = rng.standard_normal((13, n))
    U = rng.standard_normal((13,) + f.output_shape)
    cpu_v, cpu_g = f.batch_value_and_grad(X, on_branch_change="mask")[:2]
    gpu_v, gpu_g = f.batch_value_and_grad(X, device="cuda", on_branch_change="mask")[:2]
    np.testing.assert_allclose(gpu_v, cpu_v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gpu_g, cpu_g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f.batch_vjp(X, U=U, device="cuda", on_branch_change="mask")[1],
                               f.batch_vjp(X, U=U, on_branch_change="mask")[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [5, 40])
def test_threads_walking_several_points_equal_cpu(few_threads, memory, n):
    f = tj.trace(lambda x: tj.sum(tj.sin(x[1:]) * x[:-1] ** 2) + workloads.rosen(x), np.ones(n))
    assert (tjcuda.local_size(f.n_slots) > 0) == (memory == "local arrays")
    X = rng.standard_normal((23, n))
    V = rng.standard_normal((23, n))
    cpu_v, cpu_g = f.batch_value_and_grad(X)
    gpu_v, gpu_g = f.batch_value_and_grad(X, device="cuda")
    np.testing.assert_allclose(gpu_v, cpu_v, rtol=1e-12)
    np.testing.assert_allclose(gpu_g, cpu_g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f.batch_hvp(X, V=V, device="cuda"), f.batch_hvp(X, V=V), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [5, 40])
def test_hessian_vector_products_equal_cpu(memory, n):
    f = tj.trace(lambda x: tj.sum(tj.exp(x[1:] * x[:-1])) + workloads.rosen(x), np.ones(n))
    X = rng.standard_normal((17, n)) * 0.5
    V = rng.standard_normal((17, n))
    expected = f.batch_hvp(X, V=V)
    np.testing.assert_allclose(f.batch_hvp(X, V=V, device="cuda"), expected, rtol=1e-12, atol=1e-12)
    h32 = f.batch_hvp(X, V=V, device="cuda", dtype=np.float32)
    np.testing.assert_allclose(h32, expected, rtol=1e-3, atol=1e-3)


def test_fused_scalar_sums_hvp_equal_cpu(memory):
    f = tj.trace(_scalar_sums, np.ones(6) * 0.5)
    assert tj.ops.table.OPCODE["gather_sum"] in f.arrays.ops
    X = rng.standard_normal((11, 6))
    V = rng.standard_normal((11, 6))
    np.testing.assert_allclose(f.batch_hvp(X, V=V, device="cuda"), f.batch_hvp(X, V=V), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f.batch_jvp(X, V=V, device="cuda")[1], f.batch_jvp(X, V=V)[1], rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("recycled", [False, True], ids=["fresh results", "recycled results"])
def test_numpy_batches_cross_in_slices(monkeypatch, recycled):
    from tapejit._runtime import recycle as _recycle
    if recycled:   # every result from the pool of recycled buffers (as large ones are)
        monkeypatch.setattr(_recycle, "MIN_BYTES", 0)
    f = tj.trace(workloads.rosen, np.zeros(4))
    monkeypatch.setattr(tjcuda, "HOST_SLICE_BYTES", 7 * (4 + 1 + 4) * 8)
    X = rng.standard_normal((30, 4))
    vals, grads = f.batch_value_and_grad(X, device="cuda")
    np.testing.assert_allclose(vals, f.batch(X), rtol=1e-12)
    np.testing.assert_allclose(grads, f.batch_grad(X), rtol=1e-12)
    np.testing.assert_allclose(f.batch(X, device="cuda"), f.batch(X), rtol=1e-12)
    owner = grads
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, _recycle._Owner) == recycled
    single = f.batch_grad(X[:5], device="cuda")   # one slice: copied straight into the result
    np.testing.assert_allclose(single, f.batch_grad(X[:5]), rtol=1e-12)


def test_local_memory_refused_falls_back_to_the_workspace(monkeypatch):
    """A driver that cannot reserve local memory for every thread: the call still succeeds."""
    kernel_for = tjcuda._kernel
    refused = []

    class Refusing:
        def __getitem__(self, config):
            def launch(*args):
                refused.append(config)
                raise RuntimeError("[CUDA_ERROR_OUT_OF_MEMORY] Call to cuLaunchKernel results in out of memory")
            return launch

    monkeypatch.setattr(tjcuda, "_kernel", lambda tape, mode, local: Refusing() if local else kernel_for(tape, mode, 0))
    f = tj.trace(workloads.rosen, np.zeros(6))
    X = rng.standard_normal((9, 6))
    np.testing.assert_allclose(f.batch_grad(X, device="cuda"), f.batch_grad(X), rtol=1e-12)
    np.testing.assert_allclose(f.batch_grad(X, device="cuda"), f.batch_grad(X), rtol=1e-12)
    assert len(refused) == 1     # tried once; the tape remembers


def test_other_launch_errors_are_not_swallowed(monkeypatch):
    class Broken:
        def __getitem__(self, config):
            def launch(*args):
                raise RuntimeError("CUDA_ERROR_ILLEGAL_ADDRESS")
            return launch

    monkeypatch.setattr(tjcuda, "_kernel", lambda tape, mode, local: Broken())
    f = tj.trace(workloads.rosen, np.zeros(6))
    with pytest.raises(RuntimeError, match="ILLEGAL_ADDRESS"):
        f.batch_grad(rng.standard_normal((3, 6)), device="cuda")


@settings(max_examples=12, deadline=None)
@given(program=st.lists(step, min_size=1, max_size=8), seed=st.integers(0, 1000), local=st.booleans())
def test_random_programs_equal_single_point_gradients(program, seed, local):
    """tests/analysis/test_adjoint_plan.py's random programs (runs that share slots in every way),
    4 threads walking 11 points: the kernels against the CPU's single-point sweeps."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tjcuda, "THREADS_PER_BLOCK", 4)
        mp.setattr(tjcuda, "BLOCKS_PER_SM", 1)
        if not local:
            mp.setattr(tjcuda, "LOCAL_BYTES", 0)
        rng = np.random.default_rng(seed)
        f = tj.trace(build(program), rng.standard_normal(5) * 0.5)
        X = rng.standard_normal((11, 5)) * 0.5
        vals, grads = f.batch_value_and_grad(X, device="cuda")
    single = np.array([f.grad(x) for x in X])
    np.testing.assert_array_equal(np.isfinite(grads), np.isfinite(single))
    finite = np.isfinite(single)
    np.testing.assert_allclose(grads[finite], single[finite], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(vals, [f(x) for x in X], rtol=1e-12)


def test_parameters_reach_every_point(few_threads, memory):
    """Parameters are written once per thread, before it walks its points."""
    def loss(w, A, y):
        return tj.sum((A @ w - y) ** 2) + tj.sum(tj.exp(0.1 * w))
    A0, y0 = rng.standard_normal((4, 3)), rng.standard_normal(4)
    f = tj.trace(loss, np.zeros(3), params=(A0, y0))
    W = rng.standard_normal((17, 3))
    A1, y1 = rng.standard_normal((4, 3)), rng.standard_normal(4)
    expected = np.array([2 * A1.T @ (A1 @ w - y1) + 0.1 * np.exp(0.1 * w) for w in W])
    np.testing.assert_allclose(f.batch_grad(W, params=(A1, y1), device="cuda"), expected, rtol=1e-12)
    np.testing.assert_allclose(f.batch_grad(W, device="cuda"), f.batch_grad(W), rtol=1e-12)


def test_user_primitives_run_on_the_gpu_as_on_the_cpu():
    import math
    softplus_p = tj.primitive(lambda x: math.log1p(math.exp(x)), name="softplus_gpu")
    softplus_p.defderiv(lambda x, o: 1.0 / (1.0 + math.exp(-x)))
    softplus_p.defhess(lambda x, o: (1.0 / (1.0 + math.exp(-x))) * (1.0 - 1.0 / (1.0 + math.exp(-x))))
    hypot_p = tj.primitive(lambda a, b: math.sqrt(a * a + b * b), name="hypot_gpu")
    hypot_p.defderiv(lambda a, b, o: a / o, lambda a, b, o: b / o)
    hypot_p.defhess(lambda a, b, o: b * b / (o * o * o), lambda a, b, o: -a * b / (o * o * o),
                    lambda a, b, o: a * a / (o * o * o))
    f = tj.trace(lambda x: tj.sum(softplus_p(x) * tj.sin(x)) + tj.sum(hypot_p(x[1:], x[:-1])), np.ones(4))
    X, V = rng.standard_normal((40, 4)), rng.standard_normal((40, 4))
    np.testing.assert_allclose(f.batch_grad(X, device="cuda"), f.batch_grad(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f.batch_hvp(X, V=V, device="cuda"), f.batch_hvp(X, V=V), rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(f.batch_jvp(X, V=V, device="cuda")[1], f.batch_jvp(X, V=V)[1], rtol=1e-12)
    np.testing.assert_allclose(f.batch_grad(X, device="cuda", dtype=np.float32), f.batch_grad(X),
                               rtol=1e-4, atol=1e-5)
