"""Independent expectations for tests: central finite differences of numpy code."""
import numpy as np


def numeric_grad(f, x, h=1e-6):
    """Central differences of a scalar numpy function f at array x."""
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        step = h * max(1.0, abs(flat[i]))
        orig = flat[i]
        flat[i] = orig + step
        hi = f(x)
        flat[i] = orig - step
        lo = f(x)
        flat[i] = orig
        gflat[i] = (hi - lo) / (2 * step)
    return g


def numeric_jacobian(f, x, h=1e-6):
    x = np.asarray(x, dtype=np.float64)
    y0 = np.asarray(f(x))
    jac = np.zeros((y0.size, x.size))
    flat = x.reshape(-1)
    for i in range(flat.size):
        step = h * max(1.0, abs(flat[i]))
        orig = flat[i]
        flat[i] = orig + step
        hi = np.asarray(f(x)).reshape(-1)
        flat[i] = orig - step
        lo = np.asarray(f(x)).reshape(-1)
        flat[i] = orig
        jac[:, i] = (hi - lo) / (2 * step)
    return jac
