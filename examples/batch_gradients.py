"""Gradients of one function at a million points, checked against the closed form."""
import time

import numpy as np

import tapejit as tj


def f(x):
    # a smooth function of 8 inputs with transcendentals and a reduction
    return tj.sum(tj.sin(x) * tj.exp(-0.1 * x * x)) + tj.logsumexp(x) + tj.dot(x[:4], x[4:])


def closed_form_grad(X):
    g = np.cos(X) * np.exp(-0.1 * X * X) - 0.2 * X * np.sin(X) * np.exp(-0.1 * X * X)
    e = np.exp(X - X.max(axis=1, keepdims=True))
    g += e / e.sum(axis=1, keepdims=True)
    g[:, :4] += X[:, 4:]
    g[:, 4:] += X[:, :4]
    return g


def main(points=1_000_000):
    F = tj.trace(f, np.zeros(8))
    X = np.random.default_rng(0).standard_normal((points, 8))
    F.batch_value_and_grad(X[:10_000])                    # compile once
    start = time.perf_counter()
    values, grads = F.batch_value_and_grad(X)
    elapsed = time.perf_counter() - start
    error = np.abs(grads - closed_form_grad(X)).max()
    print(f"{points:,} gradients in {elapsed:.3f} s ({points / elapsed / 1e6:.1f} M/s); "
          f"max error against the closed form {error:.1e}")
    return error


if __name__ == "__main__":
    main()
