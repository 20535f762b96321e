"""tj.optim: each update rule against its published formula written out in numpy, state_dict
round trips, schedules, and the errors a misuse meets."""
import math

import numpy as np
import pytest

import tapejit as tj

A = np.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
B = np.array([1.0, -2.0, 0.5])
X0 = np.array([0.7, -1.1, 2.0])


def grad(x):
    """Gradient of the quadratic 0.5 x'Ax - b'x + sum(sin x) (not a pure quadratic: a
    schedule of the curvature would hide errors in the state)."""
    return A @ x - B + np.cos(x)


def loss_of(p):
    return 0.5 * (p * (A @ p)).sum() - (B * p).sum() + tj.sin(p).sum()


def run(make, steps=25, **kwargs):
    p = tj.tensor(X0, requires_grad=True)
    opt = make([p], **kwargs)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(p).backward()
        opt.step()
    return p.numpy(), opt


def reference_sgd(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False, steps=25):
    x, buf = X0.copy(), None
    for _ in range(steps):
        g = grad(x) * (-1 if maximize else 1) + weight_decay * x
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        x = x - lr * g
    return x


def reference_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False, steps=25):
    x, m, v, vmax = X0.copy(), np.zeros(3), np.zeros(3), np.zeros(3)
    for t in range(1, steps + 1):
        g = grad(x)
        if decoupled:
            x = x * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * x
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        vmax = np.maximum(vmax, v)
        vhat = (vmax if amsgrad else v) / (1 - betas[1] ** t)
        x = x - lr * (m / (1 - betas[0] ** t)) / (np.sqrt(vhat) + eps)
    return x


def reference_rmsprop(lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, steps=25):
    x, v, mean, buf = X0.copy(), np.zeros(3), np.zeros(3), np.zeros(3)
    for _ in range(steps):
        g = grad(x)
        v = alpha * v + (1 - alpha) * g * g
        mean = alpha * mean + (1 - alpha) * g
        denom = np.sqrt(v - mean * mean if centered else v) + eps
        if momentum:
            buf = momentum * buf + g / denom
            x = x - lr * buf
        else:
            x = x - lr * g / denom
    return x


SGD_CASES = [dict(lr=0.05), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True),
             dict(lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1), dict(lr=0.01, maximize=True)]
ADAM_CASES = [dict(lr=0.1), dict(lr=0.1, betas=(0.8, 0.99), weight_decay=0.05), dict(lr=0.1, amsgrad=True)]


@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_follows_its_formula(kwargs):
    got, _ = run(tj.optim.SGD, **kwargs)
    np.testing.assert_allclose(got, reference_sgd(**kwargs), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_and_adamw_follow_their_formulas(kwargs):
    got, _ = run(tj.optim.Adam, **kwargs)
    np.testing.assert_allclose(got, reference_adam(**kwargs), rtol=1e-12, atol=1e-14)
    got, _ = run(tj.optim.AdamW, **{**kwargs, "weight_decay": 0.05})
    np.testing.assert_allclose(got, reference_adam(**{**kwargs, "weight_decay": 0.05}, decoupled=True),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.01, momentum=0.9, centered=True)], ids=str)
def test_rmsprop_follows_its_formula(kwargs):
    got, _ = run(tj.optim.RMSprop, **kwargs)
    np.testing.assert_allclose(got, reference_rmsprop(**kwargs), rtol=1e-12, atol=1e-14)


def test_adam_reaches_the_minimizer():
    got, _ = run(tj.optim.Adam, steps=2000, lr=0.01)
    np.testing.assert_allclose(grad(got), 0.0, atol=1e-6)


def test_state_dict_round_trip_continues_the_same_trajectory():
    full, _ = run(tj.optim.Adam, steps=20, lr=0.1)
    p = tj.tensor(X0, requires_grad=True)
    opt = tj.optim.Adam([p], lr=0.1)
    for _ in range(10):
        opt.zero_grad()
        loss_of(p).backward()
        opt.step()
    saved, value = opt.state_dict(), p.numpy()
    q = tj.tensor(value, requires_grad=True)
    resumed = tj.optim.Adam([q], lr=0.5)        # the saved lr comes back with the state
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == 0.1
    for _ in range(10):
        resumed.zero_grad()
        loss_of(q).backward()
        resumed.step()
    np.testing.assert_allclose(q.numpy(), full, rtol=1e-13)
    saved["state"][0]["exp_avg"] = np.zeros(4)
    with pytest.raises(tj.TapejitError, match="shape"):
        resumed.load_state_dict(saved)


def test_learning_rate_schedules():
    lr_at = lambda step: 0.1 * 0.5 ** step      # noqa: E731 - a callable lr: the step count
    got, _ = run(tj.optim.SGD, steps=6, lr=lr_at)
    x = X0.copy()
    for k in range(6):
        x = x - lr_at(k) * grad(x)
    np.testing.assert_allclose(got, x, rtol=1e-13)
    p = tj.tensor(X0, requires_grad=True)
    opt = tj.optim.SGD([p], lr=1.0)
    sched = {"step": tj.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)}["step"]
    seen = []
    for _ in range(5):
        seen.append(sched.get_last_lr()[0])
        sched.step()
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt2 = tj.optim.SGD([tj.tensor(X0, requires_grad=True)], lr=2.0)
    cos = tj.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=4)
    for _ in range(2):
        cos.step()
    assert cos.get_last_lr()[0] == pytest.approx(1.0)
    opt3 = tj.optim.SGD([tj.tensor(X0, requires_grad=True)], lr=2.0)
    lam = tj.optim.lr_scheduler.LambdaLR(opt3, lambda e: 1 / (1 + e))
    lam.step()
    assert lam.get_last_lr()[0] == pytest.approx(1.0)
    exp = tj.optim.lr_scheduler.ExponentialLR(tj.optim.SGD([tj.tensor(X0, requires_grad=True)], lr=1.0), 0.9)
    exp.step(), exp.step()
    assert exp.get_last_lr()[0] == pytest.approx(0.81)


def test_parameter_groups_and_zero_grad():
    a, b = tj.tensor(np.ones(2), requires_grad=True), tj.tensor(3.0, requires_grad=True)
    opt = tj.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    ((a * a).sum() + b * b).backward()
    opt.step()
    np.testing.assert_allclose(a.numpy(), [0.8, 0.8])
    assert b.item() == pytest.approx(3.0 - 0.5 * 6.0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    ((a * a).sum()).backward()
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 0.0])
    opt.step()                                    # a parameter without a gradient is left alone
    assert b.item() == pytest.approx(0.0)


def test_misuse_raises():
    with pytest.raises(tj.TapejitError, match="empty"):
        tj.optim.SGD([], lr=0.1)
    with pytest.raises(tj.TapejitError, match="require grad"):
        tj.optim.SGD([tj.tensor(np.ones(2))], lr=0.1)
    x = tj.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(tj.TapejitError, match="leaf"):
        tj.optim.SGD([x * 2.0], lr=0.1)
    with pytest.raises(ValueError):
        tj.optim.Adam([x], lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        tj.optim.SGD([x], lr=0.1, nesterov=True)
    with pytest.raises(tj.TapejitError, match="more than one"):
        tj.optim.SGD([{"params": [x]}, {"params": [x]}], lr=0.1)
    assert math.isclose(tj.optim.AdamW([x]).defaults["weight_decay"], 0.01)
