"""Throughput benchmarks: tapejit beside its baselines, in one process.

Each workload builds, for a problem size, one callable per implementation (tapejit, a
hand-written Numba function, numpy, and JAX / PyTorch / CasADi / HIPS autograd when they
are installed). ``run_workload`` warms every callable up, times repeated calls, checks
that each baseline computes what tapejit computes, and reports min/median/max times,
throughput and the ratio to tapejit. ``tapejit bench`` (``tapejit.cli``) and the
pytest-benchmark suite in ``benchmarks/`` both use this registry.
"""
from __future__ import annotations

import importlib
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from . import workloads

NOT_INSTALLED = "not installed"


@dataclass
class Impl:
    name: str
    fn: Optional[Callable] = None          # None: unavailable, see note
    note: str = ""
    result: Optional[Callable] = None      # extracts a comparable array from fn's return
    items: Optional[int] = None            # items per call when it differs from the case's
    warmup: int = 1                         # untimed calls first (compilation, caches, allocator)
    comparable: bool = True                 # False: computes something else (a value beside gradients)


@dataclass
class Case:
    """One problem instance: the implementations and what one call processes."""
    workload: str
    items: int                              # points (or gradients) per call
    unit: str
    impls: list = field(default_factory=list)
    tolerance: float = 1e-8
    # after the rows are timed: extra facts {label: text} computed from them (or None)
    facts: Optional[Callable[[list], dict]] = None


@dataclass
class Workload:
    name: str
    description: str
    default_size: int
    quick_size: int
    build: Callable[[int, str], Case]       # (size, device) -> Case
    size_name: str = "batch"


def _optional(module: str):
    try:
        return importlib.import_module(module)
    except Exception:
        return None


def _jax():
    jax = _optional("jax")
    if jax is None:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


def _torch():
    return _optional("torch")


# ------------------------------------------------------------------------------------------
# workloads
# ------------------------------------------------------------------------------------------
def _seed_case(size: int, device: str) -> Case:
    import tapejit as tj

    def tapejit_fn():
        x = tj.tensor(2.0, requires_grad=True)
        y = x**2 + 3*x + 1
        y.backward()
        return x.grad.item()

    impls = [Impl("tapejit", tapejit_fn)]
    torch = _torch()
    if torch is not None:
        def torch_fn():
            x = torch.tensor(2.0, requires_grad=True, dtype=torch.float64)
            y = x**2 + 3*x + 1
            y.backward()
            return x.grad.item()
        impls.append(Impl("torch (eager)", torch_fn))
    else:
        impls.append(Impl("torch (eager)", note=NOT_INSTALLED))
    autograd = _optional("autograd")
    if autograd is not None:
        g = autograd.grad(lambda x: x**2 + 3*x + 1)
        impls.append(Impl("HIPS autograd", lambda: g(2.0)))
    else:
        impls.append(Impl("HIPS autograd", note=NOT_INSTALLED))
    impls.append(Impl("numpy (closed form)", lambda: 2 * 2.0 + 3))
    return Case("eager", 1, "examples", impls, tolerance=1e-15)


def _chain_case(size: int, device: str) -> Case:
    """size scalar operations (sin, mul, add cycling) and one backward."""
    import tapejit as tj
    n = size

    def tapejit_fn():
        x = tj.tensor(0.5, requires_grad=True)
        y = x
        for i in range(n):
            k = i % 3
            y = tj.sin(y) if k == 0 else (y * 1.0001 if k == 1 else y + 0.01)
        y.backward()
        return x.grad.item()

    impls = [Impl("tapejit", tapejit_fn)]
    torch = _torch()
    if torch is not None:
        def torch_fn():
            x = torch.tensor(0.5, requires_grad=True, dtype=torch.float64)
            y = x
            for i in range(n):
                k = i % 3
                y = torch.sin(y) if k == 0 else (y * 1.0001 if k == 1 else y + 0.01)
            y.backward()
            return x.grad.item()
        impls.append(Impl("torch (eager)", torch_fn))
    else:
        impls.append(Impl("torch (eager)", note=NOT_INSTALLED))

    def numpy_fn():   # forward-mode by hand: derivative of the chain
        y, dy = 0.5, 1.0
        for i in range(n):
            k = i % 3
            if k == 0:
                y, dy = math.sin(y), math.cos(y) * dy
            elif k == 1:
                y, dy = y * 1.0001, dy * 1.0001
            else:
                y = y + 0.01
        return dy
    impls.append(Impl("python (hand-written)", numpy_fn))
    return Case("chain", n, "operations", impls, tolerance=1e-12)


def _eager_rosen_case(size: int, device: str) -> Case:
    import tapejit as tj
    from scipy.optimize import rosen_der
    x0 = np.random.default_rng(0).standard_normal(size)

    def tapejit_fn():
        w = tj.tensor(x0, requires_grad=True)
        loss = tj.sum(100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2)
        loss.backward()
        return w.grad.numpy()

    impls = [Impl("tapejit (eager)", tapejit_fn), Impl("scipy rosen_der (numpy)", lambda: rosen_der(x0))]
    torch = _torch()
    if torch is not None:
        def torch_fn():
            w = torch.tensor(x0, requires_grad=True)
            loss = torch.sum(100 * (w[1:] - w[:-1] ** 2) ** 2 + (1 - w[:-1]) ** 2)
            loss.backward()
            return w.grad.numpy()
        impls.append(Impl("torch (eager)", torch_fn))
    else:
        impls.append(Impl("torch (eager)", note=NOT_INSTALLED))
    return Case("eager-rosen", 1, "gradients", impls, tolerance=1e-9)


def _b1_case(size: int, device: str) -> Case:
    import tapejit as tj
    X = np.random.default_rng(1).standard_normal((size, 10))
    f = tj.trace(workloads.rosen, np.zeros(10))
    impls = [Impl("tapejit" + (" (cuda)" if device == "cuda" else ""),
                  lambda: f.batch_value_and_grad(X, device=device)[1])]
    if device == "cpu":
        # results into reused arrays, as the hand-written baseline below does: no page
        # faults of fresh memory (JAX reuses its own allocator's buffers)
        out = (np.empty(size), np.empty((size, 10)))
        impls.append(Impl("tapejit (out= buffers)", lambda: f.batch_value_and_grad(X, out=out)[1]))
        # the opt-in per-function kernel (tapejit.cpu.compiled): compiled here, once
        # first the default policy (its kernel compiles in the background once the Function
        # is hot), then the opt-in kernel, which finds it compiled
        tiered, ready = _tiered(lambda: tj.trace(workloads.rosen, np.zeros(10)), X, out)
        compiled = f.compile()
        impls.append(Impl("tapejit f.compile()", lambda: compiled.batch_value_and_grad(X)[1]))
        impls.append(Impl("tapejit f.compile(), out= buffers",
                          lambda: compiled.batch_value_and_grad(X, out=out)[1]))
        impls.append(Impl(f"tapejit default call, tiered ({ready})",
                          lambda: tiered.batch_value_and_grad(X, out=out)[1]))
    vals, grads = np.empty(size), np.empty((size, 10))

    def numba_fn():
        workloads.rosen_batch_numba(X, vals, grads)
        return grads
    impls.append(Impl("numba (hand-written)", numba_fn))

    def numpy_fn():
        d = X[:, 1:] - X[:, :-1] ** 2
        g = np.zeros_like(X)
        g[:, :-1] = -400 * d * X[:, :-1] - 2 * (1 - X[:, :-1])
        g[:, 1:] += 200 * d
        return g
    impls.append(Impl("numpy (vectorized, by hand)", numpy_fn))
    jax_impls = _jax_batch_impls(lambda jnp: (lambda x: jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)), X)
    if jax_impls[0].fn is not None and device == "cpu":
        start = time.perf_counter()
        jax_impls[0].fn()                 # jit compilation and one call, beside the kernel's time to ready
        jax_impls[0].name += f" (first call {time.perf_counter() - start:.2f} s)"
    impls += jax_impls
    impls += _torch_batch_impls(lambda torch: (lambda x: torch.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)), X)
    impls.append(_casadi_rosen_impl(X, batch=True))
    return Case("B1", size, "gradients", impls, tolerance=1e-8)


def _tiered(make, X, out, most_calls: int = 1000):
    """A Function on the default policy, called as a user's loop would until its kernel
    is in use (tapejit.cpu.tier); with the calls and seconds that took, from the first call."""
    from ..cpu import tier
    f = make()
    saved, tier.HOT_POINTS = tier.HOT_POINTS, tier.DEFAULT_HOT_POINTS
    start, calls = time.perf_counter(), 0
    try:
        while f.tier in (tier.INTERPRETER, tier.COMPILING) and calls < most_calls:
            f.batch_value_and_grad(X, out=out)
            calls += 1
    finally:
        tier.HOT_POINTS = saved
    if f.tier != tier.COMPILED:
        return f, f"still {f.tier} after {calls} calls"
    return f, f"kernel in use from call {calls + 1}, {time.perf_counter() - start:.2f} s after the first"


def _casadi_rosen_impl(X, batch: bool) -> Impl:
    """CasADi: Rosenbrock's gradient as a CasADi Function; over a batch, Function.map
    with one thread per core."""
    casadi = _optional("casadi")
    name = "casadi (SX, map thread)" if batch else "casadi (MX gradient)"
    if casadi is None:
        return Impl(name, note=NOT_INSTALLED)
    n = X.shape[1] if batch else X.shape[0]
    x = (casadi.SX if batch else casadi.MX).sym("x", n)
    f = casadi.sum1(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    grad = casadi.Function("rosen_grad", [x], [casadi.gradient(f, x)])
    if batch:
        mapped = grad.map(X.shape[0], "thread", os.cpu_count() or 1)
        return Impl(name, lambda: np.asarray(mapped(X.T)).T)
    return Impl(name, lambda: np.asarray(grad(X)).ravel())


def _b2_case(size: int, device: str) -> Case:
    import tapejit as tj
    Xd, yd = workloads.logistic_data()
    W = np.random.default_rng(2).standard_normal((size, Xd.shape[1])) * 0.1
    f = tj.trace(workloads.logistic_loss(Xd, yd), np.zeros(Xd.shape[1]))
    impls = [Impl("tapejit" + (" (cuda)" if device == "cuda" else ""),
                  lambda: f.batch_value_and_grad(W, device=device)[1])]
    vals, grads = np.empty(size), np.empty_like(W)

    def numba_fn():
        workloads.logistic_batch_numba(W, Xd, yd, vals, grads)
        return grads
    impls.append(Impl("numba (hand-written)", numba_fn))

    def numpy_fn():
        t = -(W @ Xd.T) * yd
        s = -yd / (1 + np.exp(-t))
        return s @ Xd
    impls.append(Impl("numpy (vectorized, by hand)", numpy_fn))
    impls += _jax_batch_impls(lambda jnp: (lambda w: jnp.sum(_jax().nn.softplus(-yd * (Xd @ w)))), W)
    impls += _torch_batch_impls(lambda torch: (lambda w: torch.sum(torch.nn.functional.softplus(
        -torch.as_tensor(yd) * (torch.as_tensor(Xd) @ w)))), W)
    return Case("B2", size, "gradients", impls, tolerance=1e-8)


def _b3_case(size: int, device: str) -> Case:
    import tapejit as tj
    X = np.random.default_rng(3).uniform(-2.0, 2.0, (size, 12))
    f = tj.trace(workloads.transcendental, np.zeros(12))
    impls = [Impl("tapejit" + (" (cuda)" if device == "cuda" else ""),
                  lambda: f.batch_value_and_grad(X, device=device)[1])]
    vals, grads = np.empty(size), np.empty_like(X)

    def numba_fn():
        workloads.transcendental_numba(X, vals, grads)
        return grads
    impls.append(Impl("numba (hand-written)", numba_fn))
    impls += _jax_batch_impls(lambda jnp: (lambda x: workloads.transcendental(x, jnp)), X)
    impls += _torch_batch_impls(lambda torch: (lambda x: workloads.transcendental(x, torch)), X)
    return Case("B3", size, "gradients", impls, tolerance=1e-8)


def _mlp_data(size: int):
    """Digits-shaped data (1,797 x 64 in [0, 1], 10 classes; synthetic: no dataset download)
    and the initial weights of a 64-64-10 network, as PyTorch's Linear draws them."""
    rng = np.random.default_rng(7)
    X = rng.integers(0, 17, (size, 64)) / 16.0
    y = rng.integers(0, 10, size)
    bound1, bound2 = 1 / np.sqrt(64), 1 / np.sqrt(64)
    weights = [rng.uniform(-bound1, bound1, (64, 64)), rng.uniform(-bound1, bound1, 64),
               rng.uniform(-bound2, bound2, (10, 64)), rng.uniform(-bound2, bound2, 10)]
    return X, y, weights


def _mlp_case(size: int, device: str) -> Case:
    """One full-batch SGD step of a 64-64-10 tanh network with cross entropy: the loss before
    the step is the compared result (every implementation starts from the same weights)."""
    import tapejit as tj
    X, y, weights = _mlp_data(size)
    F = tj.nn.functional

    def tapejit_model():
        model = tj.nn.Sequential(tj.nn.Linear(64, 64), tj.nn.Tanh(), tj.nn.Linear(64, 10))
        model.load_state_dict(dict(zip(["0.weight", "0.bias", "2.weight", "2.bias"], weights)))
        return model, tj.optim.SGD(model.parameters(), lr=0.1)
    traced_model, traced_opt = tapejit_model()
    step = tj.trace_step(lambda Xb, yb: F.cross_entropy(traced_model(Xb), yb), traced_model, traced_opt)
    eager_model, eager_opt = tapejit_model()

    def eager_step():
        loss = F.cross_entropy(eager_model(X), y)
        eager_opt.zero_grad()
        loss.backward()
        eager_opt.step()
        return loss.item()
    impls = [Impl("tapejit (tj.trace_step)", lambda: step(X, y)), Impl("tapejit (eager)", eager_step)]
    torch = _torch()
    if torch is not None:
        tm = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 10)).double()
        with torch.no_grad():
            for p, w in zip(tm.parameters(), weights):
                p.copy_(torch.as_tensor(w))
        topt = torch.optim.SGD(tm.parameters(), lr=0.1)
        Xt, yt = torch.as_tensor(X), torch.as_tensor(y)

        def torch_step():
            loss = torch.nn.functional.cross_entropy(tm(Xt), yt)
            topt.zero_grad()
            loss.backward()
            topt.step()
            return loss.item()
        impls.append(Impl("torch (eager, float64)", torch_step))
    else:
        impls.append(Impl("torch (eager, float64)", note=NOT_INSTALLED))
    W1, b1, W2, b2 = (w.copy() for w in weights)
    onehot = np.eye(10)[y]

    def numpy_step():          # the gradient written out by hand: three GEMMs a layer at most
        nonlocal W1, b1, W2, b2
        h = np.tanh(X @ W1.T + b1)
        z = h @ W2.T + b2
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        loss = -(logp * onehot).sum() / size
        dz = (np.exp(logp) - onehot) / size
        dh = (dz @ W2) * (1 - h * h)
        W2, b2 = W2 - 0.1 * (dz.T @ h), b2 - 0.1 * dz.sum(0)
        W1, b1 = W1 - 0.1 * (dh.T @ X), b1 - 0.1 * dh.sum(0)
        return loss
    impls.append(Impl("numpy (gradient by hand)", numpy_step))
    return Case("T1", 1, "steps", impls, tolerance=1e-10)


def _tanh_gemm_case(size: int, device: str) -> Case:
    """value_and_grad of sum(tanh(A @ W)), A (size x 64) constant, W 64 x 64."""
    import tapejit as tj
    rng = np.random.default_rng(8)
    A, W0 = rng.standard_normal((size, 64)) * 0.3, rng.standard_normal((64, 64)) * 0.3
    f = tj.trace(lambda w: tj.tanh(A @ tj.reshape(w, (64, 64))).sum(), W0.ravel())
    impls = [Impl("tapejit (trace, f.value_and_grad)", lambda: f.value_and_grad(W0.ravel())[1])]

    def numpy_fn():
        t = np.tanh(A @ W0)
        return (A.T @ (1.0 - t * t)).ravel()
    impls.append(Impl("numpy (by hand: 2 GEMMs, tanh)", numpy_fn))
    torch = _torch()
    if torch is not None:
        At = torch.as_tensor(A)

        def torch_fn():
            w = torch.as_tensor(W0).requires_grad_()
            torch.tanh(At @ w).sum().backward()
            return w.grad.numpy().ravel()
        impls.append(Impl("torch (eager, float64)", torch_fn))
    else:
        impls.append(Impl("torch (eager, float64)", note=NOT_INSTALLED))
    return Case("G1", 1, "gradients", impls, tolerance=1e-10)


def _jax_batch_impls(make, X):
    jax = _jax()
    if jax is None:
        return [Impl("jax.jit(vmap(grad))", note=NOT_INSTALLED)]
    import jax.numpy as jnp
    g = jax.jit(jax.vmap(jax.grad(make(jnp))))
    Xj = jnp.asarray(X)
    return [Impl("jax.jit(vmap(grad))", lambda: np.asarray(jax.block_until_ready(g(Xj))))]


def _torch_batch_impls(make, X):
    torch = _torch()
    if torch is None:
        return [Impl("torch.func.vmap(grad)", note=NOT_INSTALLED)]
    g = torch.func.vmap(torch.func.grad(make(torch)))
    Xt = torch.as_tensor(X)
    return [Impl("torch.func.vmap(grad)", lambda: g(Xt).numpy())]


#: workload M: one transcendental opcode each, as f(x) on the interval its inputs are drawn from
#: (tapejit and jax.numpy spell it alike; scipy for numpy's erf)
MATH_OPS = {
    "exp": (-5.0, 5.0), "expm1": (-5.0, 5.0), "log": (0.01, 10.0), "log1p": (-0.9, 10.0),
    "sqrt": (0.01, 10.0), "sin": (-10.0, 10.0), "cos": (-10.0, 10.0), "tan": (-1.5, 1.5),
    "arcsin": (-0.99, 0.99), "arccos": (-0.99, 0.99), "arctan": (-10.0, 10.0),
    "arctan2": (-2.0, 2.0), "sinh": (-5.0, 5.0), "cosh": (-5.0, 5.0), "tanh": (-5.0, 5.0),
    "erf": (-3.0, 3.0), "power": (0.1, 3.0), "sigmoid": (-10.0, 10.0), "softplus": (-10.0, 10.0),
}


def _math_op(name: str, lib):
    """f(x) for MATH_OPS[name] in tj, jax.numpy or numpy; the binary ones take x twice."""
    if name == "arctan2":
        return lambda x: lib.arctan2(x, 2.5 - x)
    if name == "power":
        return lambda x: lib.power(x, 0.5 + 0.25 * x)
    if hasattr(lib, name):
        return getattr(lib, name)
    if name == "erf" and lib.__name__.startswith("jax"):
        from jax.scipy.special import erf
        return erf
    if name == "sigmoid":
        return lambda x: 1.0 / (1.0 + lib.exp(-x))
    if name == "softplus":
        return lambda x: lib.logaddexp(x, 0.0)
    from scipy.special import erf
    return erf


def _math_case(name: str):
    def build(size: int, device: str) -> Case:
        import tapejit as tj
        lo, hi = MATH_OPS[name]
        x = np.random.default_rng(11).uniform(lo, hi, size)
        f = tj.trace(lambda z: tj.sum(_math_op(name, tj)(z) * z), x)
        impls = [Impl("tapejit (trace, f.grad)", lambda: f.grad(x))]
        jax = _jax()
        if jax is not None:
            import jax.numpy as jnp
            g = jax.jit(jax.grad(lambda z: jnp.sum(_math_op(name, jnp)(z) * z)))
            xj = jnp.asarray(x)
            impls.append(Impl("jax.jit(grad)", lambda: np.asarray(jax.block_until_ready(g(xj)))))
        else:
            impls.append(Impl("jax.jit(grad)", note=NOT_INSTALLED))
        fn = _math_op(name, np)
        # numpy's forward only (the value; no gradient): what the function alone costs
        impls.append(Impl("numpy forward (value only)", lambda: np.sum(fn(x) * x), comparable=False))
        return Case(f"M:{name}", 1, "gradients", impls, tolerance=1e-10)
    return build


def _l1_case(size: int, device: str) -> Case:
    import tapejit as tj
    from scipy.optimize import rosen_der
    x = np.random.default_rng(3).standard_normal(size)
    f = tj.trace(workloads.rosen, x)
    impls = [Impl("tapejit (trace, f.grad)", lambda: f.grad(x)),
             Impl("scipy rosen_der (numpy)", lambda: rosen_der(x))]
    jax = _jax()
    if jax is not None:
        import jax.numpy as jnp
        g = jax.jit(jax.grad(lambda z: jnp.sum(100 * (z[1:] - z[:-1] ** 2) ** 2 + (1 - z[:-1]) ** 2)))
        xj = jnp.asarray(x)
        impls.append(Impl("jax.jit(grad)", lambda: np.asarray(jax.block_until_ready(g(xj)))))
    else:
        impls.append(Impl("jax.jit(grad)", note=NOT_INSTALLED))
    impls.append(_casadi_rosen_impl(x, batch=False))
    return Case("L1", 1, "gradients", impls, tolerance=1e-9)


def _w_case(size: int, device: str) -> Case:
    """The W graph with `size` operations: forward and backward at one point."""
    import tapejit as tj
    x = workloads.w_inputs()
    # a small trace first: the first one in a process also loads the passes' compiled code
    # from Numba's cache (~0.2 s), which is not recording
    tj.trace(workloads.w_graph(min(size, 100)), x)
    start = time.perf_counter()
    f = tj.trace(workloads.w_graph(size), x)
    record = time.perf_counter() - start
    n_nodes = workloads.W_INPUTS + 7 * (size // 4) + 3
    v, g = np.zeros(n_nodes), np.zeros(n_nodes)

    def numba_fn():
        workloads.w_graph_numba(x, size, v, g)
        return g[: workloads.W_INPUTS].copy()
    impls = [Impl("tapejit (replay)", lambda: f.value_and_grad(x)[1]),
             Impl("numba (hand-written)", numba_fn)]
    torch = _torch()
    if torch is not None and size <= 10_000:
        graph = workloads.w_graph(size)

        def torch_fn():
            xt = torch.tensor(x, requires_grad=True)
            nodes = list(xt)
            for op in range(size):
                kind = op % 4
                if kind == 0:
                    nodes.append(torch.nn.functional.softplus(nodes[-10]))
                elif kind == 1:
                    nodes.append(sum(nodes[-30:-10:5]))
                elif kind == 2:
                    nodes.append(nodes[-20] * nodes[-10])
                else:
                    nodes.extend(torch.softmax(torch.stack(nodes[-4:]), dim=0))
            nodes[-1].backward()
            return xt.grad.numpy()
        del graph
        impls.append(Impl("torch (eager)", torch_fn))
    else:
        impls.append(Impl("torch (eager)", note=NOT_INSTALLED if torch is None else "skipped at this size"))
    impls.append(Impl("jax.jit(value_and_grad)", note="skipped: compiling a 1,000-op graph takes JAX 13+ s"))
    def facts(rows):
        # issue 4's figures for this graph: what CSE and the other passes remove, and the
        # Hessian-vector product's cost over the gradient's
        raw = tj.trace(workloads.w_graph(size), x, optimize=False)
        direction = np.random.default_rng(1).standard_normal(x.size)
        gradient = statistics.median(_timings(lambda: f.value_and_grad(x), 5, 0.2))
        hvp = statistics.median(_timings(lambda: f.hvp(x, direction), 5, 0.2))
        return {"tape as recorded / after optimize()": f"{len(raw):,} / {len(f):,} instructions, "
                                                      f"{raw.n_slots:,} / {f.n_slots:,} slots",
                "hvp / gradient": f"{_fmt_time(hvp)} / {_fmt_time(gradient)} = {hvp / gradient:.2f}x"}
    case = Case("W", 1, "iterations", impls, tolerance=1e-9, facts=facts)
    case.record_seconds = record
    return case


def _minimize_case(size: int, device: str) -> Case:
    """Rosenbrock with `size` variables from x0 = 1 + 0.1 N(0, 1), to a gradient norm of 1e-5.
    Both sides stop on the gradient test alone (ftol=0); tapejit's time includes the trace."""
    import tapejit as tj
    from scipy.optimize import minimize, rosen, rosen_der
    x0 = 1.0 + 0.1 * np.random.default_rng(5).standard_normal(size)

    def tapejit_fn():
        return tj.minimize(workloads.rosen, x0, method="lbfgs", gtol=1e-5, ftol=0.0, maxiter=5000).x

    def scipy_fn():
        return minimize(lambda x: (rosen(x), rosen_der(x)), x0, jac=True, method="L-BFGS-B",
                        options=dict(gtol=1e-5, ftol=0.0, maxiter=5000, maxfun=20000)).x
    impls = [Impl("tapejit (tj.minimize lbfgs)", tapejit_fn),
             Impl("scipy L-BFGS-B (rosen, rosen_der)", scipy_fn)]
    return Case("O1", 1, "minimizations", impls, tolerance=1e-5)


def _multistart_case(size: int, device: str) -> Case:
    """Rosenbrock n=100 from `size` random starts. The scipy loop (L-BFGS-B fed the same traced
    gradient) runs the first 200 starts only: the comparison is per start."""
    import tapejit as tj
    from scipy.optimize import minimize
    X0 = np.random.default_rng(6).uniform(-2.0, 2.0, (size, 100))
    f = tj.trace(workloads.rosen, X0[0])
    looped = min(size, 200)

    def tapejit_fn():
        return tj.multistart(f, X0, method="lbfgs", gtol=1e-5, maxiter=3000).all.fun[:looped]

    def scipy_fn():
        return np.array([minimize(f.value_and_grad, X0[i], jac=True, method="L-BFGS-B",
                                  options=dict(gtol=1e-5, maxiter=3000)).fun for i in range(looped)])
    impls = [Impl("tapejit (tj.multistart lbfgs)", tapejit_fn, result=np.min),
             Impl(f"scipy L-BFGS-B loop ({looped} starts)", scipy_fn, result=np.min, items=looped)]
    # A start may end in either local minimum of Rosenbrock-100 (f=0 or f=3.99) depending on
    # the implementation's step choices, so the runs agree on the best value found
    return Case("O2", size, "starts", impls, tolerance=1e-6)


def _hvp_case(size: int, device: str) -> Case:
    """One Hessian-vector product of Rosenbrock with `size` variables (traced once)."""
    import tapejit as tj
    from scipy.optimize import rosen_hess_prod
    rng = np.random.default_rng(7)
    x, p = rng.standard_normal(size), rng.standard_normal(size)
    f = tj.trace(workloads.rosen, x)
    impls = [Impl("tapejit (f.hvp)", lambda: f.hvp(x, p)),
             Impl("scipy rosen_hess_prod (numpy)", lambda: rosen_hess_prod(x, p))]
    jax = _jax()
    if jax is not None:
        import jax.numpy as jnp

        def rosen_j(z):
            return jnp.sum(100 * (z[1:] - z[:-1] ** 2) ** 2 + (1 - z[:-1]) ** 2)
        hvp = jax.jit(lambda z, d: jax.jvp(jax.grad(rosen_j), (z,), (d,))[1])
        xj, pj = jnp.asarray(x), jnp.asarray(p)
        impls.append(Impl("jax.jit(jvp(grad))", lambda: np.asarray(jax.block_until_ready(hvp(xj, pj)))))
    else:
        impls.append(Impl("jax.jit(jvp(grad))", note=NOT_INSTALLED))
    return Case("H1", 1, "products", impls, tolerance=1e-8)


def _sparse_hessian_case(size: int, device: str) -> Case:
    """The whole sparse Hessian of Rosenbrock with `size` variables, checked through
    H @ probe: first call (pattern, coloring and values; the Function has run before, so
    its sweep workspaces exist) and later calls (pattern and coloring cached). The
    first-call row is timed after five untimed ones: the first few sparse Hessians of a
    process also grow the allocator's heaps (page faults, measured 4-6 ms instead of
    ~3.8 ms), a one-time cost of the process, not of the Function."""
    import tapejit as tj
    from scipy import sparse

    from ..analysis import sparsity
    rng = np.random.default_rng(8)
    x, probe = rng.standard_normal(size), rng.standard_normal(size)
    f = tj.trace(workloads.rosen, x)
    f.hvp(x, probe)

    def first_call():
        f.__dict__.pop("_sparsity", None)       # forget pattern and colors
        return f.hessian(x, sparse=True)

    def closed_form():
        # Rosenbrock's tridiagonal Hessian assembled by hand (numpy + scipy.sparse)
        diag = np.zeros(size)
        diag[:-1] = 1200 * x[:-1] ** 2 - 400 * x[1:] + 2
        diag[1:] += 200
        off = -400 * x[:-1]
        return sparse.diags([off, diag, off], [-1, 0, 1], format="csr")

    def facts(rows):
        first = next((r for r in rows if r.get("status") == "ok"), None)
        if first is None:
            return {}
        gradient = statistics.median(_timings(lambda: f.grad(x), 5, 0.2))
        return {"gradient (f.grad) median": _fmt_time(gradient),
                "first sparse Hessian / gradient": f"{first['median_s'] / gradient:.1f}x (issue 4 asks <= 15x), "
                                                   f"{sparsity.n_colors(f)} colors"}
    impls = [Impl("tapejit first f.hessian(sparse=True)", first_call, result=lambda h: h @ probe, warmup=5),
             Impl("tapejit f.hessian(sparse=True), cached", lambda: f.hessian(x, sparse=True),
                  result=lambda h: h @ probe),
             Impl("numpy closed form (scipy.sparse)", closed_form, result=lambda h: h @ probe)]
    return Case("H2", 1, "Hessians", impls, tolerance=1e-7, facts=facts)


def _sparse_jacobian_case(size: int, device: str) -> Case:
    """The sparse Jacobian of a banded vector function (half-bandwidth 2) with `size`
    variables, beside as many batched jvps as it has colors (its values' cost)."""
    import tapejit as tj

    from ..analysis import sparsity
    rng = np.random.default_rng(9)
    x, probe = rng.standard_normal(size), rng.standard_normal(size)
    f = tj.trace(workloads.banded, x)
    f.jvp(x, v=probe)
    colors = sparsity._cached_coloring(f, "jacobian", f.jacobian_sparsity())
    seeds = sparsity._seeds(colors)
    X = np.tile(x, (len(seeds), 1))

    def first_call():
        f.__dict__.pop("_sparsity", None)       # forget pattern and colors
        return f.jacobian(x, sparse=True)

    def batched_jvps():
        # the same products through the batch engine: the compressed Jacobian, scattered
        # by the pattern into the same CSR
        _, jv = f.batch_jvp(X, V=seeds)
        return sparsity._scatter(f.jacobian_sparsity(), np.ascontiguousarray(jv), colors)
    impls = [Impl("tapejit first f.jacobian(sparse=True)", first_call, result=lambda J: J @ probe, warmup=5),
             Impl("tapejit f.jacobian(sparse=True), cached", lambda: f.jacobian(x, sparse=True),
                  result=lambda J: J @ probe),
             Impl(f"{len(seeds)} batched jvps (f.batch_jvp) + scatter", batched_jvps, result=lambda J: J @ probe)]
    return Case("J1", 1, "Jacobians", impls, tolerance=1e-9,
                facts=lambda rows: {"colors": f"{sparsity.n_colors(f, 'jacobian')} (issue 4 asks <= 5)"})


def _dask_case(size: int, device: str) -> Case:
    """B1 on a distributed.LocalCluster of 2 single-threaded worker processes, X already on
    the workers (1,000,000-point chunks), results persisted there; beside the local engine."""
    import tapejit as tj
    X = np.random.default_rng(9).standard_normal((size, 10))
    f = tj.trace(workloads.rosen, X[0])
    impls = [Impl("tapejit local engine (2 threads)", lambda: f.batch_value_and_grad(X)[1])]
    case = Case("D1", size, "gradients", impls)
    try:
        import dask.array as da
        import distributed
    except ImportError:
        impls.append(Impl("tapejit.apps.dask, 2 workers", note=NOT_INSTALLED + " (pip install tapejit[dask])"))
        return case
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=50)
    client = distributed.Client(cluster)
    step = min(size, 1_000_000)
    blocks = client.scatter([X[i:i + step] for i in range(0, size, step)])
    Xd = da.concatenate([da.from_delayed(b, shape=(min(step, size - i), 10), dtype=np.float64)
                         for b, i in zip(blocks, range(0, size, step))])

    def cluster_fn():
        # a fresh graph each call (a fresh scatter of the Function too), results stay on the workers
        values, grads = tj.dask.batch_value_and_grad(f, Xd, client=client)
        grads = client.persist(grads)
        distributed.wait(grads)
        return grads
    impls.append(Impl("tapejit.apps.dask, 2 workers", cluster_fn,
                      result=lambda grads: client.compute(grads, sync=True)))

    def close():
        client.close()
        cluster.close()
    case.cleanup = close
    return case


def _user_case(spec: str, dim: int):
    """--function module:fn --dim N: a user's scalar function of one vector."""
    def build(size: int, device: str) -> Case:
        import tapejit as tj
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise ValueError(f"--function needs module:function, got {spec!r}")
        sys.path.insert(0, os.getcwd())
        fn = getattr(importlib.import_module(module_name), attr)
        X = np.random.default_rng(4).standard_normal((size, dim))
        f = tj.trace(fn, X[0])
        impls = [Impl("tapejit", lambda: f.batch_value_and_grad(X, device=device)[1])]

        def eager_loop():
            out = np.empty_like(X)
            for i in range(min(size, 2000)):
                t = tj.tensor(X[i], requires_grad=True)
                fn(t).backward()
                out[i] = t.grad.numpy()
            return out
        impls.append(Impl("tapejit eager loop (first 2,000 points)", eager_loop, result=lambda r: r[:2000]))
        case = Case(f"user:{spec}", size, "gradients", impls)
        impls[0].result = lambda r: r[:2000]
        return case
    return Workload(f"user:{spec}", f"{spec} on {dim} inputs", 100_000, 10_000, build)


WORKLOADS = {
    w.name: w for w in [
        Workload("eager", "the README example: tensor, three ops, backward, .grad.item()", 1, 1, _seed_case, "n/a"),
        Workload("chain", "a scalar chain of operations plus backward (eager)", 2000, 2000, _chain_case, "operations"),
        Workload("eager-rosen", "Rosenbrock gradient in eager mode (record + backward)", 1_000_000, 100_000,
                 _eager_rosen_case, "n"),
        Workload("B1", "Rosenbrock n=10: gradients at many points", 1_000_000, 100_000, _b1_case),
        Workload("B2", "logistic loss, 20 weights x 50 samples: gradients at many weight vectors", 20_000, 20_000,
                 _b2_case),
        Workload("B3", "log, sin and tanh of 12 inputs: gradients at many points", 400_000, 40_000, _b3_case),
        Workload("L1", "Rosenbrock n=1e6: one gradient of a traced function", 1_000_000, 100_000, _l1_case, "n"),
        Workload("W", "the 'Fastest Autograd in the West' graph: forward + backward", 10_000, 1_000, _w_case,
                 "operations"),
        Workload("H1", "Hessian-vector product of Rosenbrock (forward over reverse)", 1_000_000, 100_000,
                 _hvp_case, "n"),
        Workload("H2", "sparse Hessian of Rosenbrock (colored, compressed)", 100_000, 10_000,
                 _sparse_hessian_case, "n"),
        Workload("J1", "sparse Jacobian of a banded vector function (half-bandwidth 2)", 100_000, 10_000,
                 _sparse_jacobian_case, "n"),
        Workload("D1", "B1 on a Dask LocalCluster (2 worker processes) against the local engine", 10_000_000,
                 1_000_000, _dask_case),
        Workload("T1", "training step: 64-64-10 tanh MLP, cross entropy, SGD, digits-sized batch", 1797, 1797,
                 _mlp_case, "samples"),
        Workload("G1", "value_and_grad of sum(tanh(A @ W)), A rows x 64 constant, W 64 x 64", 1797, 1797,
                 _tanh_gemm_case, "rows"),
        Workload("O1", "tj.minimize L-BFGS: Rosenbrock to gradient norm 1e-5", 1_000_000, 100_000,
                 _minimize_case, "n"),
        Workload("O2", "tj.multistart L-BFGS: Rosenbrock n=100 from many starts", 10_000, 1_000,
                 _multistart_case, "starts"),
    ] + [Workload(f"M:{name}", f"gradient of sum({name}(x) * x), x in [{lo}, {hi}]", 1_000_000, 100_000,
                  _math_case(name), "n") for name, (lo, hi) in MATH_OPS.items()]
}


#: names that stand for several workloads; a plain ``tapejit bench`` runs the ungrouped ones
GROUPS = {"M": [name for name in WORKLOADS if name.startswith("M:")]}
DEFAULT = [name for name in WORKLOADS if not any(name in members for members in GROUPS.values())]


def format_math_table(results: list) -> str:
    """Workload M as one table: an opcode a line, tapejit beside JAX and numpy's forward."""
    lines = [f"  {'f':<10}{'tapejit':>12}{'jax':>12}{'jax / tapejit':>15}{'numpy forward':>15}"]
    for result in results:
        if not result["workload"].startswith("M:"):
            continue
        rows = {r["implementation"].split(" ")[0]: r for r in result["rows"]}
        t, j, n = (rows.get(k, {}) for k in ("tapejit", "jax.jit(grad)", "numpy"))

        def cell(row):
            return _fmt_time(row["median_s"]) if row.get("status") == "ok" else "-"
        ratio = f"{t['throughput'] / j['throughput']:.2f}x" if j.get("status") == "ok" else "-"
        lines.append(f"  {result['workload'][2:]:<10}{cell(t):>12}{cell(j):>12}{ratio:>15}{cell(n):>15}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------
def _timings(fn, repeat: int, min_time: float, warmup: int = 1):
    for _ in range(warmup):                 # compilation, caches
        fn()
    times = []
    deadline = time.perf_counter() + min_time
    while len(times) < repeat or (time.perf_counter() < deadline and len(times) < 1000):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run_workload(workload: Workload, size: Optional[int] = None, device: str = "cpu", repeat: int = 5,
                 min_time: float = 0.2, progress=None) -> dict:
    from ..cpu import tier
    size = size or workload.default_size
    # each row measures one tier: no Function tiers up in the middle of its timings (the
    # tiered row of B1 warms up on the default policy, then is timed)
    saved, tier.HOT_POINTS = tier.HOT_POINTS, math.inf
    try:
        case = workload.build(size, device)
        try:
            return _run_case(workload, case, size, device, repeat, min_time, progress)
        finally:
            if hasattr(case, "cleanup"):
                case.cleanup()
    finally:
        tier.HOT_POINTS = saved


def _run_case(workload, case, size, device, repeat, min_time, progress) -> dict:
    reference = None
    rows = []
    for impl in case.impls:
        row = {"implementation": impl.name}
        if impl.fn is None:
            row["status"] = impl.note or NOT_INSTALLED
            rows.append(row)
            if progress:
                progress(impl.name, len(case.impls))
            continue
        try:
            out = impl.fn()
            value = np.asarray((impl.result or (lambda r: r))(out), dtype=np.float64)
            if not impl.comparable:
                agree = None
            elif reference is None:
                reference = value
                agree = True
            else:
                agree = bool(np.allclose(value, reference, rtol=case.tolerance * 100, atol=case.tolerance))
            times = _timings(impl.fn, repeat, min_time, impl.warmup)
        except Exception as err:   # a broken optional baseline is reported, not fatal
            row["status"] = f"error: {type(err).__name__}: {err}"[:200]
            rows.append(row)
            if progress:
                progress(impl.name, len(case.impls))
            continue
        med = statistics.median(times)
        items = impl.items or case.items
        row.update(status="ok", agrees=agree, runs=len(times), min_s=min(times), median_s=med,
                   max_s=max(times), items_per_call=items, throughput=items / med)
        rows.append(row)
        if progress:
            progress(impl.name, len(case.impls))
    base = next((r for r in rows if r.get("status") == "ok"), None)
    for r in rows:
        if r.get("status") == "ok" and base is not None:
            # > 1: tapejit is that many times faster than this implementation
            r["tapejit_speedup"] = base["throughput"] / r["throughput"]
    result = {"workload": workload.name, "description": workload.description, "size": size,
              "size_name": workload.size_name, "device": device, "items_per_call": case.items,
              "unit": case.unit, "rows": rows}
    if hasattr(case, "record_seconds"):
        result["record_seconds"] = case.record_seconds
    if case.facts is not None:
        result["facts"] = case.facts(rows)
    return result


def first_call_latency() -> dict:
    """A fresh process: import tapejit and compute a first gradient (warm Numba cache)."""
    code = ("import time; t = time.perf_counter(); import numpy as np, tapejit as tj; "
            "f = tj.trace(lambda x: tj.sum(x * x), np.ones(3)); f.grad(np.ones(3)); "
            "x = tj.tensor(2.0, requires_grad=True); (x * x).backward(); "
            "print(time.perf_counter() - t)")
    # warm caches, as an installed package has them: Numba's, and Python's bytecode (pip
    # writes it at install; with PYTHONDONTWRITEBYTECODE set, as on our dev boxes, every
    # import recompiles tapejit's 13,000 lines of generated sweeps: 0.35-0.45 s more)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def seconds(script):
        subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, env=env)  # fill the caches
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
        return float(out.stdout.strip().splitlines()[-1])
    # the same for a compiled Function (B1's): its kernel comes from the disk cache
    compiled = ("import time; t = time.perf_counter(); import numpy as np, tapejit as tj; "
                "from tapejit.bench import workloads; f = tj.trace(workloads.rosen, np.zeros(10)).compile(); "
                "f.batch_value_and_grad(np.ones((1000, 10))); print(time.perf_counter() - t)")
    return {"first_gradient_seconds": seconds(code), "first_compiled_batch_seconds": seconds(compiled)}


#: a newcomer's first steps, in a fresh process with empty caches (issue: cold start): the
#: README's autograd example (import included), then a first traced gradient, then a first
#: batch; each line "name seconds"
_COLD_STEPS = """
import time
t = time.perf_counter()
import numpy as np
import tapejit as tj
x = tj.tensor(2.0, requires_grad=True)
y = x**2 + 3*x + 1
y.backward()
assert x.grad.item() == 7.0
print("readme_example", time.perf_counter() - t)
def rosen(x):
    return tj.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
t = time.perf_counter()
f = tj.trace(rosen, np.full(10, 0.5))
f.grad(np.full(10, 0.5))
print("then_trace_grad", time.perf_counter() - t)
t = time.perf_counter()
f.batch_grad(np.random.default_rng(0).uniform(-1, 1, (1000, 10)))
print("then_batch_grad", time.perf_counter() - t)
"""

#: every other mode's first call, each in a fresh process with empty caches (after a trace,
#: which is not timed); transcendental functions as well as polynomials
_COLD_MODES = {
    "jvp": "w.jvp(x0, v=np.ones(10))",
    "jacobian": "w.jacobian(x0)",
    "hvp": "r.hvp(x0, v=np.ones(10))",
    "batch_hvp": "r.batch_hvp(X, V=X)",
    "sparse_hessian": "r.hessian(x0, sparse=True)",
    "minimize": "tj.minimize(rosen, x0)",
}
_COLD_MODE = """
import time
import numpy as np
import tapejit as tj
def rosen(x):
    return tj.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
def wave(x):
    return tj.sin(x[1:]) * x[:-1] + tj.exp(-x[1:] ** 2)
x0 = np.full(10, 0.5)
X = np.random.default_rng(0).uniform(-1, 1, (1000, 10))
r, w = tj.trace(rosen, x0), tj.trace(wave, x0)
t = time.perf_counter()
{call}
print("{name}", time.perf_counter() - t)
"""


def cold_start(modes: bool = False) -> dict:
    """First-use seconds in fresh processes whose Numba and tapejit caches start empty:
    what a user meets after installing (or upgrading) tapejit."""
    import tempfile
    results = {}
    scripts = [_COLD_STEPS] + ([_COLD_MODE.format(name=n, call=c) for n, c in _COLD_MODES.items()] if modes else [])
    for script in scripts:
        with tempfile.TemporaryDirectory() as cache:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env.update(NUMBA_CACHE_DIR=os.path.join(cache, "numba"), TAPEJIT_CACHE_DIR=os.path.join(cache, "tapejit"))
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
        for line in out.stdout.splitlines():
            name, seconds = line.split()
            results[name] = float(seconds)
    return results


def machine_facts() -> dict:
    import numba

    from .._runtime.threads import get_num_threads
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": get_num_threads(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "platform": platform.platform()}


def format_result(result: dict) -> str:
    lines = [f"{result['workload']}: {result['description']} ({result['size_name']} {result['size']:,}, "
             f"{result['device']})"]
    if "record_seconds" in result:
        lines.append(f"  recording the trace took {result['record_seconds'] * 1e3:.1f} ms")
    for label, text in result.get("facts", {}).items():
        lines.append(f"  {label}: {text}")
    lines.append(f"  {'implementation':<34}{'median':>12}{'min':>12}{'max':>12}{result['unit'] + '/s':>16}"
                 f"{'tapejit is':>14}")
    for r in result["rows"]:
        if r.get("status") != "ok":
            lines.append(f"  {r['implementation']:<34}{r['status']}")
            continue
        flag = "  (results differ!)" if r["agrees"] is False else ""
        lines.append(f"  {r['implementation']:<34}{_fmt_time(r['median_s']):>12}{_fmt_time(r['min_s']):>12}"
                     f"{_fmt_time(r['max_s']):>12}{r['throughput']:>16.4g}{r['tapejit_speedup']:>12.2f}x{flag}")
    return "\n".join(lines)


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"
