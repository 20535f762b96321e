"""A tridiagonal solve as a block primitive (tj.custom_vjp), in an inverse problem.

The solution u of A(x) u = f, with A tridiagonal (diagonal 2 + exp(x), -1 beside it),
should match a target; the loss is 0.5 |u - target|^2 + a small penalty on x. Built from
table ops, the Thomas algorithm would be ~10 scalar instructions per unknown; as a block
primitive it is one instruction, whose value and rules are Numba kernels:

    @tj.custom_vjp
    def solve(diag, rhs): return thomas(diag, rhs)
    solve.defvjp(lambda res, g, diag, rhs: (-thomas(diag, g) * res, thomas(diag, g)))

(A is symmetric, so the adjoint solve is the same solve.) The script checks the gradient
against central differences, times it against the value, runs a batch of small problems
on all cores, and, when JAX is installed, times jax.lax.linalg.tridiagonal_solve's
gradient beside it.

Run: python examples/tridiagonal_solve.py
"""
import time

import numpy as np
from numba import njit

import tapejit as tj


@njit(cache=True)
def thomas(diag, rhs):
    """x with A x = rhs, A = tridiag(-1, diag, -1), by the Thomas algorithm."""
    n = diag.shape[0]
    c, d, x = np.empty(n), np.empty(n), np.empty(n)
    c[0] = -1.0 / diag[0]
    d[0] = rhs[0] / diag[0]
    for i in range(1, n):
        m = diag[i] + c[i - 1]
        c[i] = -1.0 / m
        d[i] = (rhs[i] + d[i - 1]) / m
    x[n - 1] = d[n - 1]
    for i in range(n - 2, -1, -1):
        x[i] = d[i] - c[i] * x[i + 1]
    return x


@tj.custom_vjp
def solve(diag, rhs):
    return thomas(diag, rhs)


@njit(cache=True)
def _vjp(res, g, diag, rhs):
    lam = thomas(diag, g)
    return -lam * res, lam


solve.defvjp(_vjp)
solve.defjvp(lambda res, t_diag, t_rhs, diag, rhs: thomas(diag, t_rhs - t_diag * res))


def problem(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    grid = np.linspace(0.0, 1.0, n)
    forcing = np.sin(3 * np.pi * grid) + 0.1 * rng.normal(size=n)
    target = thomas(2.0 + np.exp(0.5 * np.cos(2 * np.pi * grid)), forcing)

    def loss(x):
        u = solve(2.0 + tj.exp(x), forcing)
        return 0.5 * tj.sum((u - target) ** 2) + 1e-3 * tj.sum(x * x)

    def loss_np(x):
        u = thomas(2.0 + np.exp(x), forcing)
        return 0.5 * np.sum((u - target) ** 2) + 1e-3 * np.sum(x * x)
    return loss, loss_np, forcing, target


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def jax_seconds(n: int, forcing, target, x):
    """jax.grad of the same loss with jax.lax.linalg.tridiagonal_solve, or None."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    lower = jnp.concatenate([jnp.zeros(1), -jnp.ones(n - 1)])
    upper = jnp.concatenate([-jnp.ones(n - 1), jnp.zeros(1)])

    def loss(x):
        u = jax.lax.linalg.tridiagonal_solve(lower, 2.0 + jnp.exp(x), upper, jnp.asarray(forcing)[:, None])[:, 0]
        return 0.5 * jnp.sum((u - target) ** 2) + 1e-3 * jnp.sum(x * x)
    grad = jax.jit(jax.grad(loss))
    xj = jnp.asarray(x)
    grad(xj).block_until_ready()
    return best_of(lambda: grad(xj).block_until_ready())


def main(n: int = 100_000, verbose: bool = True):
    loss, loss_np, forcing, target = problem(n)
    x = np.zeros(n)
    f = tj.trace(loss, x)
    value, grad = f.value_and_grad(x)
    # central differences along random directions, in the numpy version
    rng = np.random.default_rng(1)
    errors = []
    for _ in range(3):
        v = rng.normal(size=n)
        eps = 1e-6
        fd = (loss_np(x + eps * v) - loss_np(x - eps * v)) / (2 * eps)
        errors.append(abs(grad @ v - fd) / max(abs(fd), 1e-12))
    t_value = best_of(lambda: f(x))
    t_grad = best_of(lambda: f.value_and_grad(x))
    # many small problems at once: one block call per point, chunks on all cores
    small, small_np, _, _ = problem(200, seed=2)
    g_small = tj.trace(small, np.zeros(200))
    X = 0.1 * rng.normal(size=(512, 200))
    values, grads = g_small.batch_value_and_grad(X)
    t_batch = best_of(lambda: g_small.batch_value_and_grad(X), 3)
    t_jax = jax_seconds(n, forcing, target, x)
    if verbose:
        print(f"n = {n:,}: loss {value:.6g}, gradient vs central differences: max relative error {max(errors):.1e}")
        print(f"value {t_value * 1e3:.2f} ms, value and gradient {t_grad * 1e3:.2f} ms "
              f"({t_grad / t_value:.1f}x the value)")
        print(f"batch of 512 problems of n = 200: {t_batch * 1e3:.1f} ms for values and gradients")
        if t_jax is not None:
            print(f"JAX (jit(grad), tridiagonal_solve): {t_jax * 1e3:.2f} ms; tapejit/JAX = {t_grad / t_jax:.2f}")
    return max(errors), values, grads, X, small_np


if __name__ == "__main__":
    main()
