"""In-place updates with PyTorch's rules (tapejit.frontend.inplace): the training idioms change the
parameter itself, a stale tape is refused at backward(), and recorded in-place updates
differentiate (against central differences)."""
import numpy as np
import pytest

import tapejit as tj
from helpers import numeric_grad


def test_the_sgd_idiom_updates_the_parameter_in_place():
    p = tj.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    params = [p]
    for _ in range(3):
        loss = (p * p).sum()
        loss.backward()
        with tj.no_grad():
            for q in params:
                q -= 0.25 * q.grad          # the loop variable: must change p itself
        p.grad.zero_()
    # p <- p - 0.25 * 2p = p / 2, three times
    np.testing.assert_allclose(p.numpy(), [0.125, -0.25, 0.375])
    assert p.requires_grad and p.is_leaf and p.version == 3
    np.testing.assert_array_equal(p.grad.numpy(), [0.0, 0.0, 0.0])


def test_scalar_parameters_and_every_operator():
    w = tj.tensor(3.0, requires_grad=True)
    with tj.no_grad():
        w += 1.0
        w *= 2.0
        w -= 0.5
        w /= 2.5
        w **= 2.0
    assert w.item() == pytest.approx(((3.0 + 1.0) * 2.0 - 0.5) / 2.5 * ((3.0 + 1.0) * 2.0 - 0.5) / 2.5)
    y = w * w * w
    y.backward()
    assert w.grad.item() == pytest.approx(3 * w.item() ** 2)


def test_data_copy_zero_fill_and_setitem():
    p = tj.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    p.data -= 1.0
    np.testing.assert_array_equal(p.numpy(), [0.0, 1.0, 2.0])
    p.data[1:] = 5.0
    np.testing.assert_array_equal(p.numpy(), [0.0, 5.0, 5.0])
    p.data = np.array([4.0, 4.0])              # .data = may change the shape, as in PyTorch
    assert p.shape == (2,) and p.requires_grad
    with tj.no_grad():
        p.copy_(np.array([7.0, 8.0]))
        p[0] = -1.0
    np.testing.assert_array_equal(p.numpy(), [-1.0, 8.0])
    p.data.zero_()
    np.testing.assert_array_equal(p.numpy(), [0.0, 0.0])
    with tj.no_grad():
        p.fill_(2.5)
    (p * p).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), [5.0, 5.0])
    s = tj.tensor(2.0, requires_grad=True)
    s.data.mul_(3.0)                            # a 0-d parameter through its .data alias
    assert s.item() == 6.0


def test_a_leaf_that_requires_grad_refuses_in_place_changes_while_recording():
    p = tj.tensor(np.ones(3), requires_grad=True)
    for update in (lambda: p.__iadd__(1.0), lambda: p.__setitem__(0, 2.0), lambda: p.zero_(),
                   lambda: p.copy_(np.zeros(3))):
        with pytest.raises(tj.TapejitError, match="no_grad"):
            update()
    np.testing.assert_array_equal(p.numpy(), np.ones(3))


def test_backward_refuses_a_tape_whose_leaf_changed_since():
    p = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (p * p).sum()
    with tj.no_grad():
        p += 1.0
    with pytest.raises(tj.BackwardError, match="changed in place"):
        y.backward()
    assert p.grad is None
    # recomputed from the updated value it works, and the gradient is at the new value
    (p * p).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), [4.0, 6.0])
    # scalar tapes take another backward path: the same refusal
    s = tj.tensor(1.5, requires_grad=True)
    z = s * s + s
    with tj.no_grad():
        s -= 1.0
    with pytest.raises(tj.BackwardError, match="changed in place"):
        z.backward()


def test_a_leaf_used_again_after_an_update_on_the_same_tape_reads_its_new_value():
    p = tj.tensor(np.array([1.0, 2.0]), requires_grad=True)
    before = (p * 1.0).sum()
    with tj.no_grad():
        p += 10.0
    after = (p * 1.0).sum()
    assert before.item() == 3.0 and after.item() == 23.0
    after.backward(retain_graph=True)        # the old binding is on the tape, but no gradient reaches it
    np.testing.assert_array_equal(p.grad.numpy(), [1.0, 1.0])
    with pytest.raises(tj.BackwardError):
        before.backward()                     # this one does depend on the old value
    # a result mixing both: refused too
    p.grad = None
    h = p * 2.0
    with tj.no_grad():
        p -= 1.0
    with pytest.raises(tj.BackwardError, match="depends on"):
        (h * p).sum().backward()
    assert p.grad is None
    (p * p).sum().backward()                  # and the adjoint buffer was left clean
    np.testing.assert_array_equal(p.grad.numpy(), 2 * p.numpy())


def test_a_recording_left_between_backward_and_step_does_not_block_the_next_step():
    # computing a metric without no_grad() after backward() and before step() records on a
    # fresh tape that the next loss then joins: its stale bindings receive no gradient
    p = tj.tensor(np.array([1.0, -1.0]), requires_grad=True)
    opt = tj.optim.SGD([p], lr=0.1)
    for _ in range(3):
        loss = (p ** 2).sum()
        opt.zero_grad()
        loss.backward()
        metric = float((p * p * 3.0).sum().item())  # recorded, never backwarded
        opt.step()
    assert metric == pytest.approx(6 * 0.8 ** 4)      # at the third step's starting point
    np.testing.assert_allclose(p.numpy(), [0.8 ** 3, -(0.8 ** 3)])


def test_recorded_in_place_updates_differentiate():
    x0 = np.array([0.3, -1.2, 2.0, 0.7])

    def f_tj(x):
        acc = tj.zeros(4)
        for k in range(1, 4):
            acc += tj.sin(x * k)              # a constant becomes recorded
        acc *= x                              # a recorded tensor updated in place
        acc[1:3] = x[:2] ** 2                 # assignment into a recorded tensor
        return acc.sum()

    def f_np(x):
        acc = np.zeros(4)
        for k in range(1, 4):
            acc += np.sin(x * k)
        acc *= x
        acc[1:3] = x[:2] ** 2
        return acc.sum()
    expected = numeric_grad(f_np, x0.copy())
    x = tj.tensor(x0, requires_grad=True)
    y = f_tj(x)
    assert y.item() == pytest.approx(f_np(x0), rel=1e-12)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-7, atol=1e-9)
    f = tj.trace(f_tj, x0)                    # and in a trace, replayed at another point
    x1 = x0[::-1].copy()
    value, grad = f.value_and_grad(x1)
    assert value == pytest.approx(f_np(x1), rel=1e-12)
    np.testing.assert_allclose(grad, numeric_grad(f_np, x1.copy()), rtol=1e-7, atol=1e-9)


def test_in_place_keeps_shape_and_dtype():
    t = tj.tensor(np.ones(3))
    with pytest.raises(tj.ShapeError):
        t += np.ones((2, 3))
    m = tj.tensor(np.array([True, False]))
    with pytest.raises(tj.DTypeError):
        m += 1.0
    m |= np.array([False, True])
    np.testing.assert_array_equal(m.numpy(), [True, True])


def test_copies_do_not_alias():
    x = tj.tensor(np.array([1.0, 2.0]))
    for copy in (x.clone(), x.copy(), x.astype(np.float64)):
        copy += 1.0
        np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
    d = x.detach()
    d += 5.0                                   # a new buffer: x keeps its value
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])
