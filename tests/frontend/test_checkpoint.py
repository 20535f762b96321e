"""tj.checkpoint: a checkpointed objective equals the plain one in every mode and engine,
its segments are shared, and what a segment cannot be is refused."""
import numpy as np
import pytest

import tapejit as tj
from tapejit.ops.table import OP

RNG = np.random.default_rng(5)


def stretch(x):
    return tj.tanh(tj.sin(x) * 1.1 + 0.1) + 0.5 * x


def mix(x, y):
    return tj.exp(-x * x) * y + tj.cumsum(y)


def objective(checkpointed):
    s = tj.checkpoint(stretch) if checkpointed else stretch
    m = tj.checkpoint(mix) if checkpointed else mix

    def f(x):
        for _ in range(6):
            x = s(x)
        return tj.sum(m(x, x[::-1]) ** 2) + tj.sum(s(x[:3]))
    return f


def objective_np(x):
    def s(x):
        return np.tanh(np.sin(x) * 1.1 + 0.1) + 0.5 * x
    for _ in range(6):
        x = s(x)
    y = x[::-1]
    return np.sum((np.exp(-x * x) * y + np.cumsum(y)) ** 2) + np.sum(s(x[:3]))


N = 40
X0 = RNG.normal(size=N)
F_CK, F_PLAIN = tj.trace(objective(True), X0), tj.trace(objective(False), X0)


def close(a, b, rtol=1e-12, atol=1e-12):
    if isinstance(a, tuple):
        for x, y in zip(a, b):
            close(x, y, rtol, atol)
        return
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def test_the_tape_keeps_one_instruction_per_segment_and_shares_their_kernels():
    blocks = F_CK.arrays.ops == OP.block
    assert blocks.sum() == 8                         # six stretches, the mix, the short stretch
    numbers = set(F_CK.arrays.cv[blocks].astype(int))
    assert len(numbers) == 3                         # the stretch of 40, the mix, the stretch of 3
    assert F_CK.n_slots < F_PLAIN.n_slots / 2


def test_first_order_modes_match_the_plain_tape_and_central_differences():
    x, v = RNG.normal(size=N), RNG.normal(size=N)
    close(F_CK(x), F_PLAIN(x))
    close(F_CK(x), objective_np(x))
    g = F_CK.grad(x)
    close(g, F_PLAIN.grad(x))
    eps = 1e-6
    fd = np.array([(objective_np(x + eps * e) - objective_np(x - eps * e)) / (2 * eps) for e in np.eye(N)])
    close(g, fd, 1e-6, 1e-6)
    close(F_CK.jvp(x, v=v), F_PLAIN.jvp(x, v=v))
    close(F_CK.hvp(x, v=v), F_PLAIN.hvp(x, v=v), 1e-11, 1e-11)      # a segment has second order too
    X, V = RNG.normal(size=(21, N)), RNG.normal(size=(21, N))
    close(F_CK.batch_value_and_grad(X), F_PLAIN.batch_value_and_grad(X))
    close(F_CK.batch_jvp(X, V=V), F_PLAIN.batch_jvp(X, V=V))
    close(F_CK.batch_hvp(X, V=V), F_PLAIN.batch_hvp(X, V=V), 1e-11, 1e-11)


def test_eager_backward_through_checkpoints():
    x = RNG.normal(size=N)
    t = tj.tensor(x, requires_grad=True)
    y = objective(True)(t)
    y.backward()
    close(y.item(), objective_np(x))
    close(t.grad.numpy(), F_PLAIN.grad(x))


def test_a_segment_keeps_its_output_shape():
    def outer(x):
        return tj.sum(tj.checkpoint(lambda m: m @ m.T)(tj.reshape(x, (3, 2))))
    x = RNG.normal(size=6)
    F = tj.trace(outer, x)
    m = x.reshape(3, 2)
    close(F(x), np.sum(m @ m.T))
    close(F.grad(x), (2 * np.ones((3, 3)) @ m).reshape(-1))


def test_one_stretch_on_operands_of_other_shapes_keeps_each_shape():
    def outer(x):
        s = tj.checkpoint(lambda v: tj.sin(v) * 2.0)
        a = s(tj.reshape(x, (2, 3)))
        b = s(x)
        assert a.shape == (2, 3) and b.shape == (6,)
        return tj.sum(a[0] * b[:3])
    x = RNG.normal(size=6)
    F = tj.trace(outer, x)
    close(F(x), np.sum(2 * np.sin(x[:3]) * 2 * np.sin(x[:3])))


def test_a_dense_hessian_through_checkpoints_matches_the_plain_tape():
    x = RNG.normal(size=N)
    close(F_CK.hessian(x), F_PLAIN.hessian(x), 1e-10, 1e-10)


def test_a_segment_that_reads_an_outer_tensor_is_refused():
    def outer(x):
        w = tj.exp(x)                        # recorded outside the segment
        return tj.sum(tj.checkpoint(lambda v: v * w)(x))
    with pytest.raises(tj.TraceError, match="outside it"):
        tj.trace(outer, np.ones(4))
    t = tj.tensor(np.ones(4), requires_grad=True)
    with pytest.raises(tj.TraceError, match="outside it"):
        tj.checkpoint(lambda v: v * t)(tj.tensor(np.ones(4), requires_grad=True))


def test_what_a_segment_cannot_be_is_refused():
    def branchy(x):
        return x * 2.0 if float(tj.sum(x)) > 0 else x
    with pytest.raises(tj.TapejitError):
        tj.trace(lambda x: tj.sum(tj.checkpoint(branchy)(x)), np.ones(3))
    with pytest.raises(tj.TraceError, match="1 or 2 arrays"):
        tj.checkpoint(lambda a, b, c: a)(np.ones(2), np.ones(2), np.ones(2))


def test_an_instruction_with_other_lengths_than_its_segment_is_refused():
    import dataclasses
    from tapejit.tape.tape import validate
    a = F_CK.arrays
    i = int(np.flatnonzero(a.ops == OP.block)[0])
    for field in (1, 3):                     # the result's length, the operand's
        ins = a.ins.copy()
        ins[field, i] -= 1
        with pytest.raises(tj.InvalidTapeError, match="lengths"):
            validate(dataclasses.replace(a, ins=ins))
