"""numpy functions built from existing operations (composite.py) and the Tensor methods
with numpy's and PyTorch's names: values against numpy, gradients against central
differences of the numpy expression, eagerly and replayed from a trace at a new point."""
import numpy as np
import pytest

import tapejit as tj
from helpers import numeric_grad

rng = np.random.default_rng(7)
W = rng.standard_normal((4, 5, 3))      # fixed weights: every case reduces to a scalar

# name: (tapejit function of x, the same in numpy, shape of x, sampler of points)
CASES = {
    "prod": (lambda x: tj.prod(x), np.prod, (7,), lambda s: rng.uniform(0.5, 1.5, s)),
    "prod_axis": (lambda x: tj.sum(tj.prod(x, axis=1) * W[:3, 0, :2]),
                  lambda x: np.sum(np.prod(x, axis=1) * W[:3, 0, :2]), (3, 5, 2), lambda s: rng.uniform(-1.5, 1.5, s)),
    "prod_keepdims": (lambda x: tj.sum(tj.prod(x, axis=0, keepdims=True) * W[0, :1, :3]),
                      lambda x: np.sum(np.prod(x, axis=0, keepdims=True) * W[0, :1, :3]), (6, 3),
                      lambda s: rng.uniform(-1.5, 1.5, s)),
    "cumsum": (lambda x: tj.sum(tj.cumsum(x) * W[0, :, 0].repeat(2)[:9]),
               lambda x: np.sum(np.cumsum(x) * W[0, :, 0].repeat(2)[:9]), (9,), lambda s: rng.standard_normal(s)),
    "cumsum_axis": (lambda x: tj.sum(tj.cumsum(x, axis=1) * W[:3, :5, 0]),
                    lambda x: np.sum(np.cumsum(x, axis=1) * W[:3, :5, 0]), (3, 5), lambda s: rng.standard_normal(s)),
    "cumprod": (lambda x: tj.sum(tj.cumprod(x, axis=0) * W[:4, 0, :2]),
                lambda x: np.sum(np.cumprod(x, axis=0) * W[:4, 0, :2]), (4, 2), lambda s: rng.uniform(0.5, 1.5, s)),
    "hypot": (lambda x: tj.sum(tj.hypot(x[:3], x[3:])), lambda x: np.sum(np.hypot(x[:3], x[3:])), (6,),
              lambda s: rng.uniform(0.5, 2.0, s) * rng.choice([-1, 1], s)),
    "cbrt": (lambda x: tj.sum(tj.cbrt(x) * W[0, :, 0]), lambda x: np.sum(np.cbrt(x) * W[0, :, 0]), (5,),
             lambda s: rng.uniform(0.3, 2.0, s) * rng.choice([-1, 1], s)),
    "reciprocal": (lambda x: tj.sum(tj.reciprocal(x)), lambda x: np.sum(np.reciprocal(x)), (4,),
                   lambda s: rng.uniform(0.5, 2.0, s)),
    "logaddexp": (lambda x: tj.sum(tj.logaddexp(x[:3], x[3:] * 30)), lambda x: np.sum(np.logaddexp(x[:3], x[3:] * 30)),
                  (6,), lambda s: rng.standard_normal(s)),
    "take": (lambda x: tj.sum(tj.take(x, [[2, 0], [1, 1]], axis=1) * W[:3, :2, :2].transpose(0, 2, 1).reshape(3, 2, 2)),
             lambda x: np.sum(np.take(x, [[2, 0], [1, 1]], axis=1) * W[:3, :2, :2].transpose(0, 2, 1).reshape(3, 2, 2)),
             (3, 4), lambda s: rng.standard_normal(s)),
    "repeat": (lambda x: tj.sum(tj.repeat(x, 3, axis=0) * W[:, :2, 0].repeat(3, axis=0)[:6]),
               lambda x: np.sum(np.repeat(x, 3, axis=0) * W[:, :2, 0].repeat(3, axis=0)[:6]), (2, 2),
               lambda s: rng.standard_normal(s)),
    "tile": (lambda x: tj.sum(tj.tile(x, (2, 2)) * W[:4, :4, 0]), lambda x: np.sum(np.tile(x, (2, 2)) * W[:4, :4, 0]),
             (2, 2), lambda s: rng.standard_normal(s)),
    "roll": (lambda x: tj.sum(tj.roll(x, (1, -2), axis=(0, 1)) * W[:3, :4, 0]),
             lambda x: np.sum(np.roll(x, (1, -2), axis=(0, 1)) * W[:3, :4, 0]), (3, 4), lambda s: rng.standard_normal(s)),
    "roll_flat": (lambda x: tj.sum(tj.roll(x, 5) * W[:2, :3, 0]), lambda x: np.sum(np.roll(x, 5) * W[:2, :3, 0]),
                  (2, 3), lambda s: rng.standard_normal(s)),
    "diag_of_vector": (lambda x: tj.sum(tj.diag(x, k=-1) * W[:4, :4, 1]),
                       lambda x: np.sum(np.diag(x, k=-1) * W[:4, :4, 1]), (3,), lambda s: rng.standard_normal(s)),
    "diag_of_matrix": (lambda x: tj.sum(tj.diag(x, k=1) * W[0, :3, 0]), lambda x: np.sum(np.diag(x, k=1) * W[0, :3, 0]),
                       (3, 4), lambda s: rng.standard_normal(s)),
    "triu_tril": (lambda x: tj.sum(tj.triu(x, 1) * W[:4, :4, 0] + tj.tril(x) * W[:4, :4, 1]),
                  lambda x: np.sum(np.triu(x, 1) * W[:4, :4, 0] + np.tril(x) * W[:4, :4, 1]), (4, 4),
                  lambda s: rng.standard_normal(s)),
    "broadcast_to": (lambda x: tj.sum(tj.broadcast_to(x, (3, 4)) * W[:3, :4, 0]),
                     lambda x: np.sum(np.broadcast_to(x, (3, 4)) * W[:3, :4, 0]), (4,), lambda s: rng.standard_normal(s)),
    "split": (lambda x: tj.sum(tj.split(x, [1, 3], axis=1)[2] * 2.0) + tj.sum(tj.split(x, 2)[0] ** 2),
              lambda x: np.sum(np.split(x, [1, 3], axis=1)[2] * 2.0) + np.sum(np.split(x, 2)[0] ** 2), (4, 5),
              lambda s: rng.standard_normal(s)),
    "pad": (lambda x: tj.sum(tj.pad(x, ((1, 0), (2, 1)), constant_values=0.5) ** 2),
            lambda x: np.sum(np.pad(x, ((1, 0), (2, 1)), constant_values=0.5) ** 2), (2, 3), lambda s: rng.standard_normal(s)),
    "tensordot": (lambda x: tj.sum(tj.tensordot(x, W, axes=([0, 2], [1, 2]))),
                  lambda x: np.sum(np.tensordot(x, W, axes=([0, 2], [1, 2]))), (5, 2, 3), lambda s: rng.standard_normal(s)),
    "tensordot_int": (lambda x: tj.sum(tj.tensordot(W, x, axes=2) ** 2), lambda x: np.sum(np.tensordot(W, x, axes=2) ** 2),
                      (5, 3), lambda s: rng.standard_normal(s)),
    "linalg_norm": (lambda x: tj.linalg.norm(x) + tj.sum(tj.linalg.norm(x, ord=1, axis=0))
                    + tj.sum(tj.linalg.norm(x, ord=np.inf, axis=1)),
                    lambda x: np.linalg.norm(x) + np.sum(np.linalg.norm(x, ord=1, axis=0))
                    + np.sum(np.linalg.norm(x, ord=np.inf, axis=1)), (3, 4), lambda s: rng.standard_normal(s)),
    "atleast": (lambda x: tj.sum(tj.atleast_2d(tj.atleast_1d(tj.sum(x))) * 3.0),
                lambda x: np.sum(np.atleast_2d(np.atleast_1d(np.sum(x))) * 3.0), (3,), lambda s: rng.standard_normal(s)),
    "einsum_matmul": (lambda x: tj.sum(tj.einsum("ij,jk->ik", x, W[0]) ** 2),
                      lambda x: np.sum(np.einsum("ij,jk->ik", x, W[0]) ** 2), (3, 5), lambda s: rng.standard_normal(s)),
    "einsum_batch": (lambda x: tj.sum(tj.einsum("bij,bjk->bki", x, W[:2]) ** 2),
                     lambda x: np.sum(np.einsum("bij,bjk->bki", x, W[:2]) ** 2), (2, 4, 5), lambda s: rng.standard_normal(s)),
    "einsum_diagonals": (lambda x: tj.einsum("ii->", x) * tj.einsum("ii,ij", x, x).sum(),
                         lambda x: np.einsum("ii->", x) * np.einsum("ii,ij", x, x).sum(), (4, 4),
                         lambda s: rng.standard_normal(s)),
    "methods": (lambda x: (x.exp().sum() + x.sin().prod() + x.clamp(-0.5, 0.5).sum() + x.pow(3).mean()
                           + x.unsqueeze(0).squeeze(0).cumsum().std() + x.abs().sqrt().sum() + x.tanh().var()
                           + x.view(2, 3).amax(axis=1).sum() + x.copy().square().sum() + x.reciprocal().sum()),
                lambda x: (np.exp(x).sum() + np.sin(x).prod() + np.clip(x, -0.5, 0.5).sum() + (x ** 3).mean()
                           + np.cumsum(x).std() + np.sqrt(np.abs(x)).sum() + np.tanh(x).var()
                           + x.reshape(2, 3).max(axis=1).sum() + (x ** 2).sum() + (1 / x).sum()),
                (6,), lambda s: rng.uniform(0.6, 1.4, s) * np.array([1, -1, 1, -1, 1, -1])),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_composite_values_and_gradients(name):
    tj_fn, np_fn, shape, sample = CASES[name]
    x0 = sample(shape)
    x = tj.tensor(x0, requires_grad=True)
    y = tj_fn(x)
    assert y.shape == ()
    assert y.item() == pytest.approx(np_fn(x0.copy()), rel=1e-12, abs=1e-12)
    y.backward()
    expected = numeric_grad(np_fn, x0.copy())
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6, atol=1e-7)
    # recorded once, replayed at a new point
    f = tj.trace(tj_fn, x0)
    x1 = sample(shape)
    value, gradient = f.value_and_grad(x1)
    assert value == pytest.approx(np_fn(x1.copy()), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(gradient, numeric_grad(np_fn, x1.copy()), rtol=1e-6, atol=1e-7)


def test_prod_gradient_is_exact_where_an_entry_is_zero():
    x = tj.tensor(np.array([2.0, 0.0, 3.0, 5.0, 0.5]), requires_grad=True)
    tj.prod(x).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 15.0, 0.0, 0.0, 0.0])


def test_numpy_dispatch_and_plain_arrays():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = tj.tensor(a, requires_grad=True)
    assert isinstance(np.prod(t), tj.Tensor) and np.prod(t).item() == 24.0
    np.testing.assert_array_equal(np.cumsum(t, axis=0).numpy(), np.cumsum(a, axis=0))
    np.testing.assert_array_equal(np.hypot(t, 1.0).numpy(), np.hypot(a, 1.0))
    np.testing.assert_array_equal(np.triu(t).numpy(), np.triu(a))
    assert np.linalg.norm(t, ord=1, axis=0).numpy().tolist() == [4.0, 6.0]
    np.testing.assert_array_equal(tj.roll(a, 1).numpy(), np.roll(a, 1))       # constants compute too
    assert tj.allclose(t, a + 1e-12) and not tj.allclose(t, a + 1.0)
    triangle = tj.triu(tj.tensor(np.array([[1.0, 2.0], [np.inf, 4.0]])))
    np.testing.assert_array_equal(triangle.numpy(), [[1.0, 2.0], [0.0, 4.0]])  # inf * 0 would be nan


def test_tensor_method_conventions():
    x = tj.tensor(np.array([1.0, -2.0]))
    copied = x.astype(np.float64)       # a copy, as numpy's: updating it leaves x alone
    copied += 1.0
    np.testing.assert_array_equal(x.numpy(), [1.0, -2.0])
    np.testing.assert_array_equal(copied.numpy(), [2.0, -1.0])
    np.testing.assert_array_equal(x.astype(bool).numpy(), [True, True])
    with pytest.raises(tj.DTypeError, match="float32"):
        x.astype(np.float32)
    leaf = tj.tensor(3.0).requires_grad_()
    assert leaf.requires_grad
    y = leaf.clone() * 2.0
    assert not y.data.requires_grad and y.data.item() == 6.0
    y.backward()
    assert leaf.grad.item() == 2.0


def test_composite_errors_name_the_problem():
    x = tj.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(tj.ShapeError, match="cannot broadcast shape"):
        tj.broadcast_to(x, (3, 3))
    with pytest.raises(tj.ShapeError, match="does not split"):
        tj.split(x, 2, axis=1)
    with pytest.raises(tj.ShapeError, match="do not match"):
        tj.tensordot(x, np.ones((2, 3)), axes=([0], [1]))
    with pytest.raises(tj.ShapeError, match="constant"):
        tj.pad(x, 1, mode="reflect")
    with pytest.raises(tj.ShapeError, match="ord"):
        tj.linalg.norm(x, ord=3, axis=0)


@pytest.mark.parametrize("subscripts, shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("ij,jk", [(3, 4), (4, 5)]), ("ij,ij->", [(3, 4), (3, 4)]),
    ("ij->ji", [(3, 4)]), ("ii->i", [(4, 4)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij,j->i", [(3, 4), (4,)]), ("i,j->ij", [(3,), (4,)]), ("ijk->k", [(2, 3, 4)]),
    ("ij,jk,kl->il", [(3, 4), (4, 5), (5, 2)]), ("iij->j", [(3, 3, 2)]), ("bij,bjk->kbi", [(2, 3, 4), (2, 4, 5)]),
])
def test_einsum_matches_numpy(subscripts, shapes):
    arrays = [rng.standard_normal(s) for s in shapes]
    result = tj.einsum(subscripts, *[tj.tensor(a, requires_grad=True) for a in arrays])
    expected = np.einsum(subscripts, *arrays)
    assert result.shape == np.shape(expected)
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.einsum(subscripts, *[tj.tensor(a) for a in arrays]).numpy(), expected,
                               rtol=1e-12, atol=1e-12)


def test_einsum_errors_name_the_problem():
    a = tj.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(tj.ShapeError, match="index 'j' has sizes 3 and 2"):
        tj.einsum("ij,jk->ik", a, a)
    with pytest.raises(tj.ShapeError, match=r"'\.\.\.' is not supported"):
        tj.einsum("...j->j", a)
    with pytest.raises(tj.ShapeError, match="2 subscripts for 1 operands"):
        tj.einsum("ij,jk", a)
    with pytest.raises(tj.ShapeError, match="subscripts 'ijk'"):
        tj.einsum("ijk->i", a)
