"""Tile-by-tile execution of long elementwise stretches gives the untiled results."""
import numpy as np
import pytest

import tapejit as tj
from tapejit.cpu import tiling

N = 2 * tiling.MIN_LENGTH + 1234      # not a multiple of the tile: a tail tile runs too
rng = np.random.default_rng(5)


def untiled(f):
    """The same Function with its plan forced to plain sweeps."""
    f._segments = [("plain", 0, len(f))]
    return f


PROGRAMS = {
    "rosenbrock": lambda x, p: tj.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2),
    "scalar param broadcast": lambda x, p: tj.sum(tj.sin(x * p[0]) + p[1] * x * x),
    "strided loads": lambda x, p: tj.sum(x[::2] * x[1::2] + tj.exp(-x[::2] ** 2)),
    "reversed view": lambda x, p: tj.sum(x[::-1] * tj.tanh(x)),
    "two sums": lambda x, p: tj.sum(x * x) * tj.sum(tj.cos(x)),
    "escaping intermediate": lambda x, p: tj.sum(tj.sqrt(1 + x * x)) + tj.amax(tj.sqrt(1 + x * x) * 0.5),
    "where and compare": lambda x, p: tj.sum(tj.where(x > 0.1, tj.log1p(x * x), -x)),
    "vector output": lambda x, p: tj.softplus(x * 2.0 - 1.0) * x,
}


@pytest.fixture(autouse=True)
def tile_middle_stretches(monkeypatch):
    """These programs' stretches are short (N elements): tile those that do not end the
    tape too, so that the machinery they need (stores, several sums) is what runs."""
    monkeypatch.setattr(tiling, "MIDDLE_MIN_LENGTH", tiling.MIN_LENGTH)


def test_middle_stretches_in_cache_run_plain(monkeypatch):
    monkeypatch.setattr(tiling, "MIDDLE_MIN_LENGTH", 1 << 19)
    x0 = rng.standard_normal(N)
    f = tj.trace(PROGRAMS["escaping intermediate"], x0, params=(np.zeros(2),))
    kinds = [s[0] for s in f.segments]
    stretches = tiling._find_stretches(f.arrays)
    assert any(stop < len(f) for _, stop, _ in stretches)      # a stretch in the middle...
    assert all(stop == len(f) or kind == "plain" for (_, _, stop), kind in zip(stretches, kinds))
    assert "tiled" not in kinds[:-1]                            # ... that runs plain
    g = tj.trace(PROGRAMS["escaping intermediate"], x0, params=(np.zeros(2),))
    np.testing.assert_allclose(f.grad(x0, params=(np.zeros(2),)), untiled(g).grad(x0, params=(np.zeros(2),)),
                               rtol=1e-13, atol=1e-13)


@pytest.fixture(params=["one worker", "split across workers"])
def workers(request, monkeypatch):
    """Stretches this short run on one thread by default; split them to test the phases."""
    if request.param == "split across workers":
        monkeypatch.setattr(tiling, "ELEMENTS_PER_WORKER", 1)
        monkeypatch.setattr(tiling, "ELEMENTS_PER_WORKER_SECOND_ORDER", 1)
    return request.param


@pytest.mark.parametrize("name", PROGRAMS)
def test_tiled_equals_untiled(name, workers):
    fn = PROGRAMS[name]
    x0 = rng.standard_normal(N)
    params = (np.array([0.7, -1.3]),)
    f = tj.trace(fn, x0, params=params)
    assert any(kind == "tiled" for kind, *_ in f.segments), f.segments
    g = untiled(tj.trace(fn, x0, params=params))
    x = rng.standard_normal(N)
    np.testing.assert_allclose(f(x), g(x), rtol=1e-12)
    if f.output_shape:
        u = rng.standard_normal(f.output_shape)
        np.testing.assert_allclose(f.vjp(x, u=u)[1], g.vjp(x, u=u)[1], rtol=1e-12, atol=1e-13)
    else:
        np.testing.assert_allclose(f.grad(x), g.grad(x), rtol=1e-12, atol=1e-13)
        # a second call reuses the workspaces: they must have been left clean
        np.testing.assert_allclose(f.grad(x), g.grad(x), rtol=1e-12, atol=1e-13)
        u = rng.standard_normal(N)
        np.testing.assert_allclose(f.hvp(x, u), g.hvp(x, u), rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(f.hvp(x, u), g.hvp(x, u), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", [n for n in PROGRAMS if n != "vector output"])
def test_fused_value_and_grad_equals_forward_then_reverse(name, workers):
    """A tape ending in a stretch runs that stretch's forward inside its reverse: the value
    is bit-identical to f(x), the gradient to a separate forward and reverse."""
    fn = PROGRAMS[name]
    params = (np.array([0.7, -1.3]),)
    f = tj.trace(fn, rng.standard_normal(N), params=params)
    x = rng.standard_normal(N)
    value, grad = f.value_and_grad(x, params=params)
    assert value == f(x, params=params)
    f._forward((x,), params)
    separate = f._reverse(1.0)
    np.testing.assert_allclose(grad, separate, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(f.grad(x, params=params), grad)     # workspaces left clean
    fused = f.segments[-1][0] == "tiled"
    assert fused == (name in ("rosenbrock", "scalar param broadcast", "strided loads", "reversed view",
                              "where and compare"))


def test_eager_backward_on_long_vectors_uses_tiles_and_matches_trace():
    x0 = rng.standard_normal(N)
    fn = PROGRAMS["rosenbrock"]
    t = tj.tensor(x0, requires_grad=True)
    fn(t, None).backward()
    f = untiled(tj.trace(fn, x0, params=(np.zeros(2),)))
    np.testing.assert_allclose(t.grad.numpy(), f.grad(x0), rtol=1e-12, atol=1e-12)


def test_eager_backward_reuses_the_plan_of_the_same_instructions(monkeypatch):
    """A loop of eager gradients plans its tape once (tiling.cached_plan); a loss with
    other instructions, or the same one at other values, still gets its own gradient."""
    from scipy.optimize import rosen_der
    planned = []
    monkeypatch.setattr(tiling, "_recent_plans", {})
    monkeypatch.setattr(tiling, "plan", lambda *args, _plan=tiling.plan: planned.append(1) or _plan(*args))
    fn = PROGRAMS["rosenbrock"]
    for k in range(3):
        x0 = rng.standard_normal(N)
        t = tj.tensor(x0, requires_grad=True)
        fn(t, None).backward()
        np.testing.assert_allclose(t.grad.numpy(), rosen_der(x0), rtol=1e-12, atol=1e-12)
    assert len(planned) == 1
    t = tj.tensor(x0, requires_grad=True)
    tj.sum(t[2:] * t[:-2]).backward()                 # other instructions: planned anew
    np.testing.assert_allclose(t.grad.numpy(), np.concatenate([x0[2:], [0, 0]]) + np.concatenate([[0, 0], x0[:-2]]),
                               rtol=1e-14)
    assert len(planned) == 2


def test_stretch_planning_rules():
    x0 = rng.standard_normal(N)
    f = tj.trace(PROGRAMS["escaping intermediate"], x0, params=(np.zeros(2),))
    stretches = [s[1] for s in f.segments if s[0] == "tiled"]
    assert any(len(s.stores) for s in stretches), "an intermediate read after the stretch is stored"
    f = tj.trace(PROGRAMS["strided loads"], x0, params=(np.zeros(2),))
    s = [s[1] for s in f.segments if s[0] == "tiled"][0]
    assert not s.parallel_reverse       # stride-2 loads: tiles two apart may meet
    assert s.loads[:, :2].tolist() == [[0, 2], [1, 2]]     # x[::2], read three times, loads once
    f = tj.trace(PROGRAMS["rosenbrock"], x0, params=(np.zeros(2),))
    s = [s[1] for s in f.segments if s[0] == "tiled"][0]
    assert s.parallel_reverse           # x[1:] and x[:-1] overlap only with the next tile
    assert s.loads.tolist() == [[0, 1, 0, 1]]     # ... and are one load of each tile's count + 1
    assert all(row % 8 == 0 for row in s.full[1][0])   # rows start 64-byte aligned
    small = tj.trace(PROGRAMS["rosenbrock"], np.zeros(100), params=(np.zeros(2),))
    assert small.segments == [("plain", 0, len(small))]


def test_the_fused_gradient_reads_the_point_where_it_is(workers):
    """A tape that reads its inputs only in its final stretch reads the point straight from
    the caller's array and adds the gradient straight into the result; one whose head
    reads them too copies the point into the workspace first. Both give the closed-form
    gradient, also at strided and read-only points, which they leave as they were."""
    from scipy.optimize import rosen_der
    rosen = tj.trace(PROGRAMS["rosenbrock"], rng.standard_normal(N), params=(np.zeros(2),))
    assert rosen._direct_loads()[0] is not None

    def scaled_squares(x):
        return tj.sum(x * x * (x[0] * x[1]))        # x[0] * x[1] runs before the stretch
    head_reads = tj.trace(scaled_squares, rng.standard_normal(N))
    assert head_reads.segments[-1][0] == "tiled" and head_reads._direct_loads()[0] is None

    wide = rng.standard_normal(2 * N)
    read_only = rng.standard_normal(N)
    read_only.flags.writeable = False
    for x in (wide[::2], read_only, rng.standard_normal(N)):
        before = x.copy()
        for _ in range(2):                           # the second call finds clean workspaces
            np.testing.assert_allclose(rosen.grad(x), rosen_der(x), rtol=1e-12, atol=1e-12)
            s = np.sum(x * x)
            expected = 2 * x * x[0] * x[1]
            expected[0] += s * x[1]
            expected[1] += s * x[0]
            value, grad = head_reads.value_and_grad(x)
            np.testing.assert_allclose(value, s * x[0] * x[1], rtol=1e-12)
            np.testing.assert_allclose(grad, expected, rtol=1e-11, atol=1e-11)
        np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("length", [N, 4 * 4096 + 6])       # the second: z[4:] ends in a tile of 2
def test_the_fused_gradient_writes_every_adjoint_of_a_result_full_of_garbage(workers, length):
    """With direct loads the result need not start zeroed: each tile zeroes the adjoints
    it is the first to reach (tiling.first_touch), the ones no load reaches are zeroed
    up front, and layouts where that rule would not hold fall back to zeroing it all.
    Every case against its closed-form gradient, the result filled with NaN first."""
    x = rng.standard_normal(length)
    cases = {
        # offsets 0 and 1 (Rosenbrock's x[:-1], x[1:])
        "neighbours": (lambda z: tj.sum(z[1:] * z[:-1]),
                       lambda z: np.concatenate([z[1:], [0]]) + np.concatenate([[0], z[:-1]])),
        # no load reaches the first 5 and the last 3 adjoints
        "inner window": (lambda z: tj.sum(tj.sin(z[5:-3]) * z[6:-2]),
                         lambda z: np.concatenate([[0] * 5, np.cos(z[5:-3]) * z[6:-2], [0] * 3])
                         + np.concatenate([[0] * 6, np.sin(z[5:-3]), [0] * 2])),
        # offsets 4 apart (one load of each tile's count + 4), wider than the short last
        # tile: the fallback
        "far apart": (lambda z: tj.sum(z[4:] * z[:-4]),
                      lambda z: np.concatenate([z[4:], [0] * 4]) + np.concatenate([[0] * 4, z[:-4]])),
        # offsets 100 apart: two loads, so the tiles zero what they reach first, then add
        "two loads": (lambda z: tj.sum(z[100:] * z[:-100]),
                      lambda z: np.concatenate([z[100:], [0] * 100]) + np.concatenate([[0] * 100, z[:-100]])),
        # a strided load: the fallback
        "strided": (lambda z: tj.sum(z[::2] * z[::2]),
                    lambda z: np.where(np.arange(z.size) % 2 == 0, 2 * z, 0.0)),
    }
    for name, (fn, closed_form) in cases.items():
        f = tj.trace(fn, x)
        x_at, touch = f._direct_loads()
        assert x_at is not None, name
        expect_touch = name in ("neighbours", "inner window", "two loads") or (name == "far apart" and length == N)
        assert (touch is not None) == expect_touch, name
        assert (len(x_at) == 2) == (name == "two loads"), name      # the others: one load each
        v, g = f._workspace()
        g[f.out_pos] += 1.0
        grad = np.full(length, np.nan)
        tiling.forward_reverse(f.segments, f.arrays, v, g, direct=(x, grad, x_at, touch))
        np.testing.assert_allclose(grad, closed_form(x), rtol=1e-13, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(f.grad(x), closed_form(x), rtol=1e-13, atol=1e-13, err_msg=name)
        assert not g.any(), name                               # the workspace is left clean


def test_a_tiles_part_of_a_sum_adds_every_term():
    import math
    values = rng.standard_normal(40) * 10.0 ** rng.integers(-3, 4, 40)
    for count in range(0, 41):
        assert tiling._tile_sum(values, count) == pytest.approx(math.fsum(values[:count]), rel=1e-13, abs=1e-13)
    f = tj.trace(lambda z: tj.sum(tj.sin(z) * z), rng.standard_normal(N))
    x = rng.standard_normal(N)
    value, grad = f.value_and_grad(x)
    assert value == f(x)                       # the fused pass and the forward add the same way
    assert value == pytest.approx(math.fsum(np.sin(x) * x), rel=1e-12)
    np.testing.assert_allclose(grad, np.sin(x) + x * np.cos(x), rtol=1e-13, atol=1e-13)
