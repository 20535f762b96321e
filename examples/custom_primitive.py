"""A special function from scipy.special as a tapejit primitive, in a maximum-likelihood fit.

The Gamma distribution's log-likelihood needs log Gamma(k), whose derivative is the
digamma function psi(k) and whose second derivative is the trigamma function. None
of them is a tapejit opcode. scipy.special's Cython kernels are callable from Numba
code, and trigamma is a few lines of Numba-compilable Python, so each becomes a rule of
one primitive:

    gammaln = tj.primitive(lambda x: _gammaln(x), name="gammaln")
    gammaln.defderiv(lambda x, out: _psi(x))
    gammaln.defhess(lambda x, out: trigamma(x))

The fit then takes gradients (and Newton steps, with the Hessian) of an ordinary
tapejit function; the primitive's kernels run inside the compiled replay.

Run: python examples/custom_primitive.py
"""
import ctypes
import time

import numpy as np
from numba import njit
from numba.extending import get_cython_function_address

import tapejit as tj

_D1 = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_double)
_gammaln = _D1(get_cython_function_address("scipy.special.cython_special", "gammaln"))
# fused Cython functions: index 1 is the float64 version, 0 the complex one
_psi = _D1(get_cython_function_address("scipy.special.cython_special", "__pyx_fuse_1psi"))


@njit
def trigamma(x):
    """psi'(x) for x > 0: the recurrence psi'(x) = psi'(x + 1) + 1/x^2 up to x >= 10, then
    the asymptotic series 1/x + 1/(2x^2) + 1/(6x^3) - 1/(30x^5) + 1/(42x^7) - 1/(30x^9)
    (its next term, 5/(66 x^11), is below 1e-11 of the sum there)."""
    total = 0.0
    while x < 10.0:
        total += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    return total + inv + 0.5 * inv2 + inv * inv2 * (1.0 / 6.0 - inv2 * (1.0 / 30.0 - inv2 * (1.0 / 42.0 - inv2 / 30.0)))


gammaln = tj.primitive(lambda x: _gammaln(x), name="gammaln")
gammaln.defderiv(lambda x, out: _psi(x))            # d/dx log Gamma(x) = digamma(x)
gammaln.defhess(lambda x, out: trigamma(x))


def negative_log_likelihood(theta, x):
    """-log L of Gamma(shape k, scale s) at the samples x; theta = (log k, log s), so
    that the fit is unconstrained."""
    k, s = tj.exp(theta[0]), tj.exp(theta[1])
    n = x.size
    return -((k - 1.0) * float(np.log(x).sum()) - float(x.sum()) / s - n * k * tj.log(s) - n * gammaln(k))


def fit(x, steps: int = 30):
    """Newton's method on (log k, log s) with the primitive's Hessian."""
    f = tj.trace(lambda th: negative_log_likelihood(th, x), np.zeros(2))
    theta = np.array([0.0, np.log(x.mean())])
    for _ in range(steps):
        g = f.grad(theta)
        if np.abs(g).max() < 1e-10 * x.size:
            break
        theta = theta - np.linalg.solve(f.hessian(theta), g)
    return np.exp(theta), f


def main(n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.gamma(shape=2.5, scale=1.7, size=n)
    start = time.perf_counter()
    (k, s), f = fit(x)
    took = time.perf_counter() - start
    print(f"tapejit fit:  shape {k:.6f}, scale {s:.6f}  ({took:.2f} s, compilation included)")
    try:
        from scipy import stats
        k_ref, _, s_ref = stats.gamma.fit(x, floc=0.0)
        print(f"scipy.stats:  shape {k_ref:.6f}, scale {s_ref:.6f}")
    except ImportError:
        k_ref = s_ref = None
    # the gradient at many parameter points (a likelihood surface), on all cores, with the
    # primitive's kernels inside the replay
    thetas = np.log(np.array([k, s])) + 0.1 * rng.normal(size=(100_000, 2))
    for call in ("first", "second"):
        start = time.perf_counter()
        grads = f.batch_grad(thetas)
        print(f"100,000 gradients of the log-likelihood, {call} call: {1e3 * (time.perf_counter() - start):.1f} ms")
    return (k, s), (k_ref, s_ref), grads, f


if __name__ == "__main__":
    main()
