"""The README's autograd example, an array example, and record-once/replay-many."""
import time

import numpy as np
from scipy.optimize import rosen_der

import tapejit as tj

# 1. scalars, PyTorch style
x = tj.tensor(2.0, requires_grad=True)
y = x**2 + 3*x + 1
y.backward()
print(f"Gradient at x=2: {x.grad.item()}")

# 2. arrays, numpy style: the gradient of the Rosenbrock function
w = tj.tensor(np.random.default_rng(0).standard_normal(1000), requires_grad=True)
loss = tj.sum(100 * (w[1:] - w[:-1]**2)**2 + (1 - w[:-1])**2)
loss.backward()
error = np.abs(w.grad.numpy() - rosen_der(w.numpy())).max()
print(f"Rosenbrock (n=1000): loss {loss.item():.6g}, max |grad - scipy.rosen_der| = {error:.2e}")


# 3. record once, replay many: gradients at a million points
def rosen(x):
    return tj.sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)


f = tj.trace(rosen, np.zeros(10))
X = np.random.default_rng(1).standard_normal((1_000_000, 10))
f.batch_value_and_grad(X[:1000])           # warm up (compiles on the very first run)
start = time.perf_counter()
values, grads = f.batch_value_and_grad(X)
elapsed = time.perf_counter() - start
print(f"Batch: {len(X):,} gradients of a {f.n_inputs}-input function in {elapsed:.3f} s "
      f"({len(X) / elapsed / 1e6:.1f} M gradients/s)")
assert np.allclose(grads[123], rosen_der(X[123]))
