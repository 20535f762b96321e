"""The benchmark workloads (B1, B2, B3, L1, W, J1, eager), shared by ``benchmarks/`` and
``tapejit bench``: each as tapejit code and as a hand-written Numba baseline that knows
its one function and needs no tape."""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..frontend import numpy_api as tj

_JIT = dict(cache=True, nogil=True, error_model="numpy")


# -- Rosenbrock (B1: n=10 at 1e6 points; L1: n=1e6 at one point) ------------------------------
def rosen(x):
    return tj.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


# -- B3: a small model of transcendental functions (12 inputs), gradients at 400,000 points --
def transcendental(x, m=tj):
    """log, sin and tanh of 12 inputs; ``m`` is the array module (tapejit, jax.numpy or
    torch: all three spell these functions alike)."""
    h = m.tanh(x[:6] * x[6:] + 0.5)
    return m.sum(m.log(1.0 + x[:6] ** 2) * m.sin(x[6:]) + h * h)


@njit(parallel=True, **_JIT)
def transcendental_numba(X, vals, grads):
    """The value and gradient of ``transcendental`` written by hand, point by point."""
    for p in prange(X.shape[0]):
        total = 0.0
        for j in range(6):
            a, b = X[p, j], X[p, j + 6]
            h = math.tanh(a * b + 0.5)
            lg, s = math.log(1.0 + a * a), math.sin(b)
            total += lg * s + h * h
            dh = 2.0 * h * (1.0 - h * h)
            grads[p, j] = 2.0 * a / (1.0 + a * a) * s + dh * b
            grads[p, j + 6] = lg * math.cos(b) + dh * a
        vals[p] = total


# -- a banded vector function (J1: the sparse Jacobian, half-bandwidth 2) ----------------------
def banded(x):
    n = x.shape[0]
    return x[2:-2] * x[:-4] + tj.sin(x[1:-3]) * x[3:-1] - x[4:] ** 2 + tj.exp(x[2:-2] / n)


@njit(**_JIT)
def rosen_value_and_grad_numba(x, grad):
    """Hand-written Rosenbrock value and gradient of one point."""
    n = x.shape[0]
    value = 0.0
    for i in range(n):
        grad[i] = 0.0
    for i in range(n - 1):
        d = x[i + 1] - x[i] * x[i]
        e = 1.0 - x[i]
        value += 100.0 * d * d + e * e
        grad[i] += -400.0 * d * x[i] - 2.0 * e
        grad[i + 1] += 200.0 * d
    return value


@njit(parallel=True, **_JIT)
def rosen_batch_numba(X, vals, grads):
    """The hand-written baseline for B1: every point on all cores."""
    for b in prange(X.shape[0]):
        vals[b] = rosen_value_and_grad_numba(X[b], grads[b])


# -- logistic regression (B2: 20 weights, 50 fixed samples, 20,000 weight vectors) ---------
def logistic_data(n_samples: int = 50, n_features: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    y = np.where(rng.standard_normal(n_samples) + X[:, 0] > 0, 1.0, -1.0)
    return X, y


def logistic_loss(X, y):
    def loss(w):
        return tj.sum(tj.softplus(-y * (X @ w)))
    return loss


@njit(parallel=True, **_JIT)
def logistic_batch_numba(W, X, y, vals, grads):
    """Hand-written B2 baseline: loss and gradient of every weight vector."""
    n, m = X.shape
    for b in prange(W.shape[0]):
        total = 0.0
        for j in range(m):
            grads[b, j] = 0.0
        for i in range(n):
            z = 0.0
            for j in range(m):
                z += X[i, j] * W[b, j]
            t = -y[i] * z
            total += max(t, 0.0) + math.log1p(math.exp(-abs(t)))
            s = -y[i] / (1.0 + math.exp(-t))
            for j in range(m):
                grads[b, j] += s * X[i, j]
        vals[b] = total


# -- the "Fastest Autograd in the West" graph (A. Rogozhnikov, 2023) ------------------------
W_INPUTS = 100


def w_graph(n_ops: int = 10_000):
    """Op k cycles softplus(nodes[-10]), sum(nodes[-30:-10:5]), nodes[-20]*nodes[-10],
    softmax(nodes[-4:]); the output is the last node."""
    def graph(x):
        nodes = list(x)
        for op in range(n_ops):
            kind = op % 4
            if kind == 0:
                nodes.append(tj.softplus(nodes[-10]))
            elif kind == 1:
                nodes.append(sum(nodes[-30:-10:5]))
            elif kind == 2:
                nodes.append(nodes[-20] * nodes[-10])
            else:
                nodes.extend(tj.softmax(tj.stack(nodes[-4:])))
        return nodes[-1]
    return graph


def w_inputs():
    return np.arange(W_INPUTS, dtype=np.float64) / W_INPUTS


@njit(**_JIT)
def w_graph_numba(x, n_ops, v, g):
    """Forward and backward of the W graph written by hand: no tape, index arithmetic
    only. v and g hold 100 + 7 * n_ops / 4 nodes. Returns the value; g[:100] the gradient."""
    n = x.shape[0]
    for i in range(n):
        v[i] = x[i]
    for op in range(n_ops):
        kind = op % 4
        if kind == 0:
            a = v[n - 10]
            v[n] = max(a, 0.0) + math.log1p(math.exp(-abs(a)))
            n += 1
        elif kind == 1:
            v[n] = v[n - 30] + v[n - 25] + v[n - 20] + v[n - 15]
            n += 1
        elif kind == 2:
            v[n] = v[n - 20] * v[n - 10]
            n += 1
        else:
            m = max(max(v[n - 4], v[n - 3]), max(v[n - 2], v[n - 1]))
            s = 0.0
            for k in range(4):
                v[n + k] = math.exp(v[n - 4 + k] - m)
                s += v[n + k]
            for k in range(4):
                v[n + k] /= s
            n += 4
    for i in range(n):
        g[i] = 0.0
    g[n - 1] = 1.0
    for op in range(n_ops - 1, -1, -1):
        kind = op % 4
        if kind == 3:
            n -= 4
            dot = 0.0
            for k in range(4):
                dot += v[n + k] * g[n + k]
            for k in range(4):
                g[n - 4 + k] += v[n + k] * (g[n + k] - dot)
        elif kind == 2:
            n -= 1
            g[n - 20] += g[n] * v[n - 10]
            g[n - 10] += g[n] * v[n - 20]
        elif kind == 1:
            n -= 1
            g[n - 30] += g[n]
            g[n - 25] += g[n]
            g[n - 20] += g[n]
            g[n - 15] += g[n]
        else:
            n -= 1
            g[n - 10] += g[n] / (1.0 + math.exp(-v[n - 10]))
    return v[100 + 7 * (n_ops // 4) + (n_ops % 4 > 0) + (n_ops % 4 > 1) + (n_ops % 4 > 2) - 1]
