"""The batch engine's layout moves (4 x 4 register blocks and their scalar edges) against
numpy's fancy indexing, and every batch mode at widths and batch sizes that hit the edges."""
import numpy as np
import pytest
from scipy.optimize import rosen_der, rosen_hess_prod

import tapejit as tj
from tapejit.bench import workloads
from tapejit.cpu._transpose import points_to_rows, rows_to_points
from tapejit.errors import ShapeError

rng = np.random.default_rng(5)


@pytest.mark.parametrize("n", [1, 3, 4, 6, 9])
@pytest.mark.parametrize("P", [1, 3, 4, 17, 32])
def test_moves_match_numpy_indexing(n, P):
    width, p0 = 32, 5
    X = rng.standard_normal((p0 + P + 3, n))
    rows = rng.permutation(n + 4)[:n].astype(np.int64)      # scattered, unordered rows
    v = np.full((n + 4, width), np.nan)
    points_to_rows(v, rows, X, p0, P)
    np.testing.assert_array_equal(v[rows, :P], X[p0:p0 + P].T)
    # the sweeps run whole rows: past P, the last point again (inputs a user kernel accepts)
    np.testing.assert_array_equal(v[rows, P:], np.repeat(X[p0 + P - 1][:, None], width - P, axis=1))
    others = np.setdiff1d(np.arange(n + 4), rows)
    assert np.isnan(v[others]).all()

    out = np.full_like(X, np.nan)
    rows_to_points(out, v, rows, p0, P, False)
    np.testing.assert_array_equal(out[p0:p0 + P], X[p0:p0 + P])
    assert np.isnan(out[:p0]).all() and np.isnan(out[p0 + P:]).all()
    rows_to_points(out, v, rows, p0, P, True)
    np.testing.assert_array_equal(v[rows], 0.0)


def test_moves_refuse_chunks_outside_the_arrays():
    X = np.zeros((10, 3))
    v = np.zeros((5, 8))
    with pytest.raises(ShapeError):
        points_to_rows(v, np.array([0, 1, 5]), X, 0, 4)          # row 5 of 5
    with pytest.raises(ShapeError):
        points_to_rows(v, np.array([0, 1, 2]), X, 8, 4)          # points 8..11 of 10
    with pytest.raises(ShapeError):
        points_to_rows(v, np.array([0, 1, 2]), np.zeros((40, 3)), 0, 9)  # 9 points, 8 columns
    with pytest.raises(ShapeError):
        rows_to_points(X, v, np.array([0, 1]), 0, 4, False)      # 2 rows, 3 columns


@pytest.mark.parametrize("blocked", [False, True], ids=["plain moves", "block moves"])
@pytest.mark.parametrize("n", [2, 4, 7])
@pytest.mark.parametrize("B", [0, 1, 6, 4099])
def test_every_batch_mode_at_edge_sizes(n, B, blocked, monkeypatch):
    from tapejit.cpu import batch
    # the engine's choice of moves, forced: every batch by plain loops, or by 4 x 4 blocks
    monkeypatch.setattr(batch, "BLOCKED_MOVES", 0 if blocked else 1 << 62)
    monkeypatch.setattr(batch, "HOT_CALLS", 0 if blocked else 1 << 62)
    f = tj.trace(workloads.rosen, np.zeros(n))
    X, V = rng.standard_normal((B, n)), rng.standard_normal((B, n))
    U = rng.standard_normal(B)
    values, grads = f.batch_value_and_grad(X)
    _, jv = f.batch_jvp(X, V=V)
    _, uj = f.batch_vjp(X, U=U)
    hv = f.batch_hvp(X, V=V)
    assert values.shape == (B,) and grads.shape == (B, n) and hv.shape == (B, n)
    for b in sorted({0, B // 2, B - 1}) if B else ():
        x = X[b]
        assert values[b] == pytest.approx(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), rel=1e-13)
        np.testing.assert_allclose(grads[b], rosen_der(x), rtol=1e-12, atol=1e-10)
        assert jv[b] == pytest.approx(rosen_der(x) @ V[b], rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(uj[b], U[b] * rosen_der(x), rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(hv[b], rosen_hess_prod(x, V[b]), rtol=1e-12, atol=1e-10)


def test_moves_refuse_arrays_that_are_not_c_contiguous():
    # the 4 x 4 blocks address memory by flat offsets: a strided array must not compile
    from numba.core.errors import TypingError
    X = np.zeros((16, 8))[:, ::2]
    with pytest.raises(TypingError, match="_transpose4"):
        points_to_rows(np.zeros((4, 8)), np.arange(4), X, 0, 8)
