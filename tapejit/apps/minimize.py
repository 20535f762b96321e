"""Minimizers that run their whole loop in compiled code: ``tj.minimize`` and ``tj.multistart``.

Each iteration replays the tape (the packed plan of ``tiling``: long vectors run tile by
tile), searches a step and updates the iterate without returning to Python. Python only
runs every ``callback_every`` iterations (callback, progress bar) and when a Python
branch recorded in the trace flips (then the objective is retraced at the current point
and the loop resumes with its state). Methods: ``lbfgs`` (with optional bounds, by
projection), ``newton-cg`` (Hessian-vector products on the tape), ``adam`` and ``gd``.
``multistart`` runs one compiled minimization per starting point on every core.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
from numba import njit

from .._runtime.threads import get_num_threads, run_workers
from ..errors import TapejitError
from ..cpu.tiling import pack, packed_forward, packed_forward_tangent, packed_reverse, packed_reverse_tangent

_JIT = dict(cache=True, nogil=True, error_model="numpy")

RUNNING, CONVERGED_GTOL, CONVERGED_FTOL, MAXITER, NONFINITE, BRANCH, LINESEARCH, CALLBACK = range(8)
MESSAGES = {
    CONVERGED_GTOL: "converged: gradient norm <= gtol",
    CONVERGED_FTOL: "converged: relative reduction of the objective <= ftol",
    MAXITER: "stopped: maximum number of iterations reached",
    NONFINITE: "stopped: the objective or its gradient became NaN or infinite",
    BRANCH: "stopped: a Python branch taken while tracing flipped",
    LINESEARCH: "stopped: the line search found no decrease (precision limit)",
    CALLBACK: "stopped: the callback asked to stop",
}
METHODS = ("lbfgs", "newton-cg", "adam", "gd")


class OptimizeResult(dict):
    """scipy-shaped result: x, fun, jac, nit, nfev, status, message, success, history."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__

    def __repr__(self):
        keys = ("message", "success", "status", "fun", "nit", "nfev")
        return "OptimizeResult(" + ", ".join(f"{k}={self[k]!r}" for k in keys if k in self) + ")"


# ------------------------------------------------------------------------------------------
# the compiled evaluator: one value and gradient at x
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _value_and_grad(ops, ins, cv, consts, idx, seg, stretch, l_ops, l_ins, l_cv, loads, stores, sums, n_local,
                    in0, out_slot, param_pos, guards, v, g, x, grad):
    """Returns (value, guards hold). The gradient lands in grad."""
    n = x.shape[0]
    for k in range(n):
        v[in0 + k] = x[k]
    packed_forward(ops, ins, cv, consts, idx, v, seg, stretch, l_ops, l_ins, l_cv, loads, stores, sums, n_local)
    ok = True
    for q in range(guards.shape[0]):
        if v[guards[q]] != 1.0:
            ok = False
    value = v[out_slot]
    g[out_slot] += 1.0
    packed_reverse(ops, ins, cv, consts, idx, v, g, seg, stretch, l_ops, l_ins, l_cv, loads, stores, sums, n_local)
    for k in range(n):
        grad[k] = g[in0 + k]
        g[in0 + k] = 0.0
    for q in range(param_pos.shape[0]):
        g[param_pos[q]] = 0.0
    return value, ok


@njit(**_JIT)
def _hvp(ops, ins, cv, consts, idx, seg, stretch, l_ops, l_ins, l_cv, loads, stores, sums, n_local, in0, out_slot,
         param_pos, v, dv, g, dg, x, direction, out):
    n = x.shape[0]
    for k in range(n):
        v[in0 + k] = x[k]
        dv[in0 + k] = direction[k]
    for q in range(param_pos.shape[0]):
        dv[param_pos[q]] = 0.0
    packed_forward_tangent(ops, ins, cv, consts, idx, v, dv, seg, stretch, l_ops, l_ins, l_cv, loads, stores, sums,
                           n_local)
    g[out_slot] += 1.0
    packed_reverse_tangent(ops, ins, cv, consts, idx, v, dv, g, dg, seg, stretch, l_ops, l_ins, l_cv, loads, stores,
                           sums, n_local)
    for k in range(n):
        out[k] = dg[in0 + k]
        g[in0 + k] = 0.0
        dg[in0 + k] = 0.0
    for q in range(param_pos.shape[0]):
        g[param_pos[q]] = 0.0
        dg[param_pos[q]] = 0.0


# ------------------------------------------------------------------------------------------
# compiled helpers
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _norm_inf(a):
    m = 0.0
    for k in range(a.shape[0]):
        x = abs(a[k])
        if x > m or x != x:
            m = x
    return m


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _dot(a, b):
    # reassociation lets LLVM split the sum over SIMD lanes (4x on n=100 vectors); the
    # last bits then depend on the vector width, as with BLAS
    s = 0.0
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(**_JIT)
def _project(x, lower, upper):
    for k in range(x.shape[0]):
        if x[k] < lower[k]:
            x[k] = lower[k]
        elif x[k] > upper[k]:
            x[k] = upper[k]


@njit(**_JIT)
def _projected_gradient_norm(x, g, lower, upper, bounded):
    if not bounded:
        return _norm_inf(g)
    m = 0.0
    for k in range(x.shape[0]):
        p = x[k] - g[k]
        p = min(max(p, lower[k]), upper[k]) - x[k]
        if abs(p) > m or p != p:
            m = abs(p)
    return m


# ------------------------------------------------------------------------------------------
# the methods: each runs at most n_steps iterations from its state and returns a status
# ------------------------------------------------------------------------------------------
@njit(**_JIT)
def _lbfgs(ev_args, x, f, g, S, Y, rho, mem, n_steps, it0, maxiter, gtol, ftol, lower, upper, bounded,
           hist_f, hist_g, counters, work_d, work_x, work_g, alpha_buf, ls):
    """Limited-memory BFGS (two-loop recursion) with a backtracking line search on the
    Armijo condition and curvature-checked updates; with bounds, iterates are projected
    and bound-blocked directions dropped. State (x, f, g, S, Y, rho, mem) carries over."""
    m = S.shape[0]
    n = x.shape[0]
    it = it0
    for _ in range(n_steps):
        if it >= maxiter:
            return MAXITER, it
        # direction: d = -H g
        count = mem[0]
        head = mem[1]
        for k in range(n):
            work_d[k] = -g[k]
        for j in range(count):
            slot = (head - 1 - j) % m
            a = rho[slot] * _dot(S[slot], work_d)
            alpha_buf[slot] = a
            for k in range(n):
                work_d[k] -= a * Y[slot, k]
        if count > 0:
            last = (head - 1) % m
            gamma = _dot(S[last], Y[last]) / _dot(Y[last], Y[last])
            for k in range(n):
                work_d[k] *= gamma
        else:
            scale = 1.0 / max(1.0, _norm_inf(g))
            for k in range(n):
                work_d[k] *= scale
        for j in range(count - 1, -1, -1):
            slot = (head - 1 - j) % m
            b = rho[slot] * _dot(Y[slot], work_d)
            a = alpha_buf[slot]
            for k in range(n):
                work_d[k] += (a - b) * S[slot, k]
        if bounded:
            for k in range(n):
                if (x[k] <= lower[k] and work_d[k] < 0) or (x[k] >= upper[k] and work_d[k] > 0):
                    work_d[k] = 0.0
        slope = _dot(g, work_d)
        if not slope < 0.0:                       # not a descent direction: restart with -g
            mem[0] = 0
            for k in range(n):
                work_d[k] = -g[k] / max(1.0, _norm_inf(g))
            slope = _dot(g, work_d)
            if not slope < 0.0:
                return LINESEARCH, it
        # backtracking line search (Armijo, c1 = 1e-4); ls[0] < 1 after a branch flip
        step = ls[0]
        accepted = False
        for _ls in range(60):
            for k in range(n):
                work_x[k] = x[k] + step * work_d[k]
            if bounded:
                _project(work_x, lower, upper)
            f_new, ok = _value_and_grad(*ev_args, work_x, work_g)
            counters[0] += 1
            if not ok:
                return BRANCH, it
            if f_new != f_new or abs(f_new) == math.inf:
                step *= 0.5
                continue
            decrease = f + 1e-4 * step * slope if not bounded else f + 1e-4 * _dot(g, work_x) - 1e-4 * _dot(g, x)
            if f_new <= decrease:
                accepted = True
                break
            step *= 0.5
        if not accepted:
            return LINESEARCH, it
        # curvature pair
        sy = 0.0
        yy = 0.0
        slot = mem[1]
        for k in range(n):
            s_k = work_x[k] - x[k]
            y_k = work_g[k] - g[k]
            S[slot, k] = s_k
            Y[slot, k] = y_k
            sy += s_k * y_k
            yy += y_k * y_k
        if sy > 1e-10 * yy:
            rho[slot] = 1.0 / sy
            mem[1] = (slot + 1) % m
            mem[0] = min(mem[0] + 1, m)
        ls[0] = 1.0
        f_old = f
        for k in range(n):
            x[k] = work_x[k]
            g[k] = work_g[k]
        f = f_new
        it += 1
        gnorm = _projected_gradient_norm(x, g, lower, upper, bounded)
        hist_f[it] = f
        hist_g[it] = gnorm
        counters[1] = f
        if gnorm != gnorm or f != f:
            return NONFINITE, it
        if gnorm <= gtol:
            return CONVERGED_GTOL, it
        if (f_old - f) <= ftol * max(abs(f_old), abs(f), 1.0):
            return CONVERGED_FTOL, it
    return RUNNING, it


@njit(**_JIT)
def _first_order(ev_args, x, f, g, m1, m2, n_steps, it0, maxiter, gtol, lr, beta1, beta2, eps, adam,
                 hist_f, hist_g, counters, work_x, work_g, ls):
    """Adam (adam=True) or gradient descent with a backtracking Armijo step (adam=False)."""
    n = x.shape[0]
    it = it0
    step = lr * ls[0]
    for _ in range(n_steps):
        if it >= maxiter:
            return MAXITER, it
        if adam:
            t = it + 1
            for k in range(n):
                m1[k] = beta1 * m1[k] + (1 - beta1) * g[k]
                m2[k] = beta2 * m2[k] + (1 - beta2) * g[k] * g[k]
                mh = m1[k] / (1 - beta1 ** t)
                vh = m2[k] / (1 - beta2 ** t)
                x[k] -= lr * mh / (math.sqrt(vh) + eps)
                work_x[k] = x[k]
            f, ok = _value_and_grad(*ev_args, x, g)
            counters[0] += 1
            if not ok:
                return BRANCH, it + 1
        else:
            gg = _dot(g, g)
            accepted = False
            step *= 2.0
            for _ls in range(60):
                for k in range(n):
                    work_x[k] = x[k] - step * g[k]
                f_new, ok = _value_and_grad(*ev_args, work_x, work_g)
                counters[0] += 1
                if not ok:
                    return BRANCH, it
                if f_new <= f - 1e-4 * step * gg:
                    accepted = True
                    break
                step *= 0.5
            if not accepted:
                return LINESEARCH, it
            ls[0] = step / lr
            for k in range(n):
                x[k] = work_x[k]
                g[k] = work_g[k]
            f = f_new
        it += 1
        hist_f[it] = f
        hist_g[it] = _norm_inf(g)
        counters[1] = f
        if f != f or hist_g[it] != hist_g[it] or abs(f) == math.inf:
            return NONFINITE, it
        if hist_g[it] <= gtol:
            return CONVERGED_GTOL, it
    return RUNNING, it


@njit(**_JIT)
def _newton_cg(ev_args, hv_args, x, f, g, n_steps, it0, maxiter, gtol, ftol, hist_f, hist_g, counters,
               d, r, p, hp, work_x, work_g, ls):
    """Truncated Newton: conjugate gradients on H d = -g with Hessian-vector products from
    the tape (stopping at negative curvature), then a backtracking line search."""
    n = x.shape[0]
    it = it0
    for _ in range(n_steps):
        if it >= maxiter:
            return MAXITER, it
        gnorm2 = _dot(g, g)
        tol = min(0.5, math.sqrt(math.sqrt(gnorm2))) * math.sqrt(gnorm2)
        for k in range(n):
            d[k] = 0.0
            r[k] = -g[k]
            p[k] = -g[k]
        rr = gnorm2
        for _cg in range(2 * n + 10):
            _hvp(*hv_args, x, p, hp)
            curvature = _dot(p, hp)
            if curvature <= 0.0:
                if _cg == 0:
                    for k in range(n):
                        d[k] = -g[k]
                break
            a = rr / curvature
            for k in range(n):
                d[k] += a * p[k]
                r[k] -= a * hp[k]
            rr_new = _dot(r, r)
            if math.sqrt(rr_new) <= tol:
                break
            beta = rr_new / rr
            rr = rr_new
            for k in range(n):
                p[k] = r[k] + beta * p[k]
        slope = _dot(g, d)
        step = ls[0]
        accepted = False
        for _ls in range(60):
            for k in range(n):
                work_x[k] = x[k] + step * d[k]
            f_new, ok = _value_and_grad(*ev_args, work_x, work_g)
            counters[0] += 1
            if not ok:
                return BRANCH, it
            if f_new <= f + 1e-4 * step * slope:
                accepted = True
                break
            step *= 0.5
        if not accepted:
            return LINESEARCH, it
        ls[0] = 1.0
        f_old = f
        for k in range(n):
            x[k] = work_x[k]
            g[k] = work_g[k]
        f = f_new
        it += 1
        hist_f[it] = f
        hist_g[it] = _norm_inf(g)
        counters[1] = f
        if f != f or hist_g[it] != hist_g[it]:
            return NONFINITE, it
        if hist_g[it] <= gtol:
            return CONVERGED_GTOL, it
        if (f_old - f) <= ftol * max(abs(f_old), abs(f), 1.0):
            return CONVERGED_FTOL, it
    return RUNNING, it


# ------------------------------------------------------------------------------------------
# Python driver
# ------------------------------------------------------------------------------------------
class _Problem:
    """A Function prepared for the compiled loops (packed plan, workspaces)."""

    def __init__(self, f, params):
        if f.n_outputs != 1:
            raise TapejitError(f"minimize needs a scalar objective; this one returns shape {f.output_shape}")
        if not isinstance(f._in, slice):
            raise TapejitError("minimize needs one input array")
        self.f = f
        a = f.arrays
        plan = self.plan = pack(f.segments)
        self.v = np.zeros(a.n_slots)
        self.g = np.zeros(a.n_slots)
        if f.param_pos.size:
            self.v[f.param_pos] = f._flat_params(params)
        self.ev_args = (a.ops, a.ins, a.cv, a.consts, a.idx, *plan.args(), plan.n_local, f._in.start,
                        int(f.out_pos[0]), f.param_pos, f.guards.astype(np.int64), self.v, self.g)
        self.hv_args = None

    def hvp_args(self):
        if self.hv_args is None:
            a = self.f.arrays
            self.dv, self.dg = np.zeros(a.n_slots), np.zeros(a.n_slots)
            self.hv_args = (a.ops, a.ins, a.cv, a.consts, a.idx, *self.plan.args(), self.plan.n_local,
                            self.f._in.start, int(self.f.out_pos[0]), self.f.param_pos, self.v, self.dv, self.g,
                            self.dg)
        return self.hv_args


def _as_function(objective, x0, params):
    from ..frontend.function import Function, trace
    if isinstance(objective, Function):
        return objective
    return trace(objective, x0, params=tuple(params or ()))


def minimize(objective, x0, method: str = "lbfgs", *, params: Optional[Sequence] = None,
             gtol: float = 1e-5, ftol: float = 2.2e-9, maxiter: int = 10_000, bounds=None, m: int = 10,
             lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
             callback: Optional[Callable] = None, callback_every: int = 100, progress: bool = False
             ) -> OptimizeResult:
    """Minimize a scalar objective (a Python function, traced at x0, or a Function).

    Stops when the infinity norm of the (projected) gradient is <= gtol, the relative
    reduction of the objective is <= ftol (lbfgs, newton-cg), after maxiter iterations,
    on a NaN/Inf, or when ``callback(intermediate_result)`` returns True. ``bounds`` is a
    (lower, upper) pair of arrays or scalars, or a sequence of (low, high) pairs (lbfgs).
    ``progress=True`` shows a tqdm bar; ``callback`` runs every ``callback_every`` iterations.
    """
    if method not in METHODS:
        raise TapejitError(f"unknown method {method!r}; choose from {METHODS}")
    # floats, always: the compiled loops specialize on argument types
    gtol, ftol, lr, beta1, beta2, eps = (float(v) for v in (gtol, ftol, lr, beta1, beta2, eps))
    maxiter, m = int(maxiter), int(m)
    x = np.array(x0, dtype=np.float64).reshape(-1).copy()
    if not np.all(np.isfinite(x)):
        raise TapejitError("x0 contains NaN or infinity")
    if bounds is not None and method != "lbfgs":
        raise TapejitError("bounds are supported by method='lbfgs'")
    f = _as_function(objective, np.asarray(x0, np.float64), params)
    shape = f.input_shapes[0]
    if x.size != f.n_inputs:
        raise TapejitError(f"x0 has {x.size} values, the objective takes {f.n_inputs}")
    lower, upper, bounded = _bounds(bounds, x.size)
    if bounded:
        x = np.clip(x, lower, upper)
    problem = _Problem(f, params)
    g = np.empty_like(x)
    fx, ok = _value_and_grad(*problem.ev_args, x, g)
    hist_f = np.full(maxiter + 1, np.nan)
    hist_g = np.full(maxiter + 1, np.nan)
    hist_f[0], hist_g[0] = fx, _projected_gradient_norm(x, g, lower, upper, bounded)
    counters = np.array([1.0, fx])
    state = _MethodState(method, x.size, m)
    status, it = RUNNING, 0
    if not ok:
        status = BRANCH
    elif not (np.isfinite(fx) and np.all(np.isfinite(g))):
        status = NONFINITE
    elif hist_g[0] <= gtol:
        status = CONVERGED_GTOL
    bar = _progress_bar(progress, maxiter)
    flips = 0
    while status in (RUNNING, BRANCH):
        if status == BRANCH:
            # a trial point lies across a Python branch of the trace: retrace there and
            # take the step if it decreases the objective, else shorten the next trial
            if f.fn is None or flips > 60:
                break
            flips += 1
            trial = x.copy() if method == "adam" else state.work_x.copy()
            new_problem, new_f = _retrace(f, trial, params)
            g_trial = np.empty_like(x)
            f_trial, ok = _value_and_grad(*new_problem.ev_args, trial, g_trial)
            if method == "adam" or (ok and f_trial < fx):
                x[:], g[:], fx = trial, g_trial, f_trial
                problem, f = new_problem, new_f
                state.forget()
                state.ls[0] = 1.0
                counters[1] = fx
                if method != "adam":
                    it += 1
                    hist_f[it] = fx
                    hist_g[it] = _projected_gradient_norm(x, g, lower, upper, bounded)
                    if hist_g[it] <= gtol:
                        status = CONVERGED_GTOL
                        break
            else:
                state.ls[0] *= 0.25
            status = MAXITER if it >= maxiter else RUNNING
            continue
        steps = min(max(1, callback_every), maxiter - it) if (callback or bar) else maxiter - it
        before = it
        status, it = state.run(problem, x, fx, g, steps, it, maxiter, gtol, ftol, lower, upper, bounded,
                               lr, beta1, beta2, eps, hist_f, hist_g, counters)
        fx = counters[1]
        if bar is not None:
            bar.update(it - before)
            bar.set_postfix(f=f"{fx:.6g}", gnorm=f"{hist_g[it]:.2e}")
        if status == RUNNING and it >= maxiter:
            status = MAXITER
        if callback is not None and status == RUNNING:
            partial = _result(x, shape, fx, g, it, counters, status, hist_f, hist_g)
            if callback(partial):
                status = CALLBACK
        if status == RUNNING and it == before:
            status = MAXITER
    if bar is not None:
        bar.close()
    return _result(x, shape, fx, g, it, counters, status, hist_f, hist_g)


def _result(x, shape, fx, g, it, counters, status, hist_f, hist_g) -> OptimizeResult:
    return OptimizeResult(
        x=x.reshape(shape).copy(), fun=float(fx), jac=g.reshape(shape).copy(), nit=int(it),
        nfev=int(counters[0]), status=int(status), message=MESSAGES.get(status, "running"),
        success=status in (CONVERGED_GTOL, CONVERGED_FTOL),
        history={"fun": hist_f[: it + 1].copy(), "grad_norm": hist_g[: it + 1].copy()})


def _bounds(bounds, n):
    if bounds is None:
        return np.full(n, -np.inf), np.full(n, np.inf), False
    try:
        lower, upper = bounds
        lower = np.broadcast_to(np.asarray(lower, np.float64), (n,)).copy()
        upper = np.broadcast_to(np.asarray(upper, np.float64), (n,)).copy()
    except (TypeError, ValueError):
        pairs = np.asarray(bounds, dtype=np.float64).reshape(n, 2)
        lower, upper = pairs[:, 0].copy(), pairs[:, 1].copy()
    lower = np.where(np.isnan(lower), -np.inf, lower)
    upper = np.where(np.isnan(upper), np.inf, upper)
    if np.any(lower > upper):
        raise TapejitError("a lower bound exceeds its upper bound")
    return lower, upper, True


def _retrace(f, x, params):
    from ..frontend.function import trace
    g = trace(f.fn, x.reshape(f.input_shapes[0]), params=tuple(params or ()))
    return _Problem(g, params), g


def _progress_bar(enabled, total):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="minimize", unit="it")


class _MethodState:
    def __init__(self, method, n, m):
        self.method = method
        if method == "lbfgs":
            self.S, self.Y = np.zeros((m, n)), np.zeros((m, n))
            self.rho, self.mem = np.zeros(m), np.zeros(2, np.int64)
            self.alpha = np.zeros(m)
        elif method in ("adam", "gd"):
            self.m1, self.m2 = np.zeros(n), np.zeros(n)
        else:
            self.d, self.r, self.p, self.hp = (np.zeros(n) for _ in range(4))
        self.work_d, self.work_x, self.work_g = np.zeros(n), np.zeros(n), np.zeros(n)
        self.ls = np.ones(1)            # first trial step, shortened after a branch flip

    def forget(self):
        """Curvature memory is of the old branch: start over (x and g are kept)."""
        if self.method == "lbfgs":
            self.mem[:] = 0
        elif self.method in ("adam", "gd"):
            self.m1[:] = 0.0
            self.m2[:] = 0.0

    def run(self, problem, x, fx, g, steps, it, maxiter, gtol, ftol, lower, upper, bounded, lr, beta1, beta2,
            eps, hist_f, hist_g, counters):
        if self.method == "lbfgs":
            return _lbfgs(problem.ev_args, x, fx, g, self.S, self.Y, self.rho, self.mem, steps,
                          it, maxiter, gtol, ftol, lower, upper, bounded, hist_f, hist_g, counters, self.work_d,
                          self.work_x, self.work_g, self.alpha, self.ls)
        if self.method in ("adam", "gd"):
            return _first_order(problem.ev_args, x, fx, g, self.m1, self.m2, steps, it, maxiter,
                                gtol, lr, beta1, beta2, eps, self.method == "adam", hist_f, hist_g, counters,
                                self.work_x, self.work_g, self.ls)
        return _newton_cg(problem.ev_args, problem.hvp_args(), x, fx, g, steps, it,
                          maxiter, gtol, ftol, hist_f, hist_g, counters, self.d, self.r, self.p, self.hp,
                          self.work_x, self.work_g, self.ls)


# ------------------------------------------------------------------------------------------
# many starting points
# ------------------------------------------------------------------------------------------
def multistart(objective, X0, method: str = "lbfgs", *, params: Optional[Sequence] = None, gtol: float = 1e-5,
               ftol: float = 2.2e-9, maxiter: int = 1000, bounds=None, m: int = 10, lr: float = 1e-3,
               threads: Optional[int] = None) -> OptimizeResult:
    """Minimize from every row of X0 (B, n) at once: one compiled minimization per start,
    the starts split over all cores. Returns the best result, with ``all`` holding
    x (B, n), fun (B,), nit (B,), status (B,) and success (B,) for every start."""
    if method not in ("lbfgs", "gd", "adam"):
        raise TapejitError("multistart supports method='lbfgs', 'gd' or 'adam'")
    gtol, ftol, lr = float(gtol), float(ftol), float(lr)
    maxiter, m = int(maxiter), int(m)
    X0 = np.asarray(X0, np.float64)
    if X0.ndim != 2:
        raise TapejitError(f"X0 must have shape (B, n), got {X0.shape}")
    if not np.all(np.isfinite(X0)):
        raise TapejitError("X0 contains NaN or infinity")
    B, n = X0.shape
    f = _as_function(objective, X0[0].copy(), params)
    if f.n_inputs != n:
        raise TapejitError(f"X0 rows have {n} values, the objective takes {f.n_inputs}")
    lower, upper, bounded = _bounds(bounds, n)
    X = np.clip(X0, lower, upper) if bounded else X0.copy()
    fun = np.full(B, np.nan)
    nit = np.zeros(B, np.int64)
    status = np.zeros(B, np.int64)
    workers = max(1, min(threads or get_num_threads(), B))
    problems = [_Problem(f, params) for _ in range(workers)]

    def work(worker, n_workers):
        problem = problems[worker]
        state = _MethodState(method, n, m)
        g = np.empty(n)
        hist_f, hist_g = np.empty(maxiter + 1), np.empty(maxiter + 1)
        counters = np.zeros(2)
        for b in range(worker, B, n_workers):
            x = X[b]
            state.__init__(method, n, m)
            fx, ok = _value_and_grad(*problem.ev_args, x, g)
            counters[:] = (1.0, fx)
            if not ok:
                st, it = BRANCH, 0
            elif _norm_inf(g) <= gtol:
                st, it = CONVERGED_GTOL, 0
            else:
                st, it = state.run(problem, x, fx, g, maxiter, 0, maxiter, gtol, ftol, lower, upper, bounded,
                                   lr, 0.9, 0.999, 1e-8, hist_f, hist_g, counters)
            fun[b] = counters[1]
            nit[b] = it
            status[b] = MAXITER if st == RUNNING else st
    run_workers(work, workers)
    usable = np.where(np.isfinite(fun), fun, np.inf)
    best = int(np.argmin(usable))
    result = OptimizeResult(
        x=X[best].reshape(f.input_shapes[0]).copy(), fun=float(fun[best]), nit=int(nit[best]),
        status=int(status[best]), message=MESSAGES.get(int(status[best]), ""),
        success=bool(status[best] in (CONVERGED_GTOL, CONVERGED_FTOL)), index=best,
        all=OptimizeResult(x=X.reshape((B,) + f.input_shapes[0]), fun=fun, nit=nit, status=status,
                           success=np.isin(status, (CONVERGED_GTOL, CONVERGED_FTOL))))
    return result
