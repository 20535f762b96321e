"""The CUDA kernels (imported only when device="cuda" is used).

``make_kernel`` builds one kernel per (device-sweep module, mode, dtype, memory kind):
the mode is a compile-time constant, so a gradient kernel holds no tangent code, and the
device sweeps come from a module generated for the opcodes a tape uses
(``codegen.render_cuda(only=...)``), so kernels stay small. ``cuda`` is a module global
so that numba-cuda's simulator can swap in its own when tests run without a GPU.
"""
from numba import cuda, float32, float64, uint32

from .._runtime.modes import MODE_GRAD, MODE_HVP, MODE_JVP, MODE_VALUES


def make_kernel(dev, mode: int, dtype: str, local_size: int):
    """``local_size`` > 0: per-thread local arrays of that many slots; 0: global workspace."""
    local_dtype = float64 if dtype == "float64" else float32
    if mode == MODE_HVP:
        return _local_hvp_kernel(dev, local_dtype, local_size) if local_size else _global_hvp_kernel(dev)
    if local_size:
        return _local_kernel(dev, mode, local_dtype, local_size)
    return _global_kernel(dev, mode)


# Every kernel walks its points grid-stride: thread c takes points c, c + gridsize, ...
# A grid smaller than the batch bounds the workspace (and the cache footprint of local
# arrays) by the threads launched, not by B.


def _local_hvp_kernel(dev, local_dtype, LOCAL_SIZE):
    tangent = dev.forward_tangent_local
    reverse = dev.reverse_tangent_local

    @cuda.jit
    def kernel(ops, ins, cv, consts, idx, n_slots, in_pos, param_pos, param_vals, out_pos,
               guard_pos, X, seeds, vals, derivs, valid):
        v = cuda.local.array(LOCAL_SIZE, local_dtype)
        dv = cuda.local.array(LOCAL_SIZE, local_dtype)
        g = cuda.local.array(LOCAL_SIZE, local_dtype)
        dg = cuda.local.array(LOCAL_SIZE, local_dtype)
        n_ins = ops.shape[0]
        c = uint32(cuda.grid(1))   # unsigned: no wraparound arithmetic on workspace columns
        _write_parameters_local(v, param_pos, param_vals)
        for t in range(c, X.shape[0], cuda.gridsize(1)):
            for s in range(n_slots):
                dv[s] = 0
                g[s] = 0
                dg[s] = 0
            for j in range(in_pos.shape[0]):
                v[in_pos[j]] = X[t, j]
                dv[in_pos[j]] = seeds[t, j]
            tangent(ops, ins, cv, consts, idx, v, dv, 0, n_ins)
            for m in range(out_pos.shape[0]):
                vals[t, m] = v[out_pos[m]]
            _store_validity_local(v, guard_pos, valid, t)
            g[out_pos[0]] = 1
            reverse(ops, ins, cv, consts, idx, v, dv, g, dg, 0, n_ins)
            for j in range(in_pos.shape[0]):
                derivs[t, j] = dg[in_pos[j]]
    return kernel


def _global_hvp_kernel(dev):
    tangent = dev.forward_tangent_thread
    reverse = dev.reverse_tangent_thread

    @cuda.jit
    def kernel(ops, ins, cv, consts, idx, in_pos, param_pos, param_vals, out_pos, guard_pos,
               X, seeds, vals, derivs, valid, v, dv, g, dg):
        n_ins = ops.shape[0]
        c = uint32(cuda.grid(1))   # unsigned: no wraparound arithmetic on workspace columns
        _write_parameters_thread(v, param_pos, param_vals, c)
        for t in range(c, X.shape[0], cuda.gridsize(1)):
            for s in range(dv.shape[0]):
                dv[s, c] = 0
            for j in range(in_pos.shape[0]):
                v[in_pos[j], c] = X[t, j]
                dv[in_pos[j], c] = seeds[t, j]
            tangent(ops, ins, cv, consts, idx, v, dv, c, 0, n_ins)
            for m in range(out_pos.shape[0]):
                vals[t, m] = v[out_pos[m], c]
            _store_validity_thread(v, guard_pos, valid, t, c)
            g[out_pos[0], c] += 1
            reverse(ops, ins, cv, consts, idx, v, dv, g, dg, c, 0, n_ins)
            for j in range(in_pos.shape[0]):
                derivs[t, j] = dg[in_pos[j], c]
                g[in_pos[j], c] = 0
                dg[in_pos[j], c] = 0
            for j in range(param_pos.shape[0]):
                g[param_pos[j], c] = 0
                dg[param_pos[j], c] = 0
    return kernel


def _local_kernel(dev, mode, local_dtype, LOCAL_SIZE):
    forward = dev.forward_local
    tangent = dev.forward_tangent_local
    reverse = dev.reverse_local

    @cuda.jit
    def kernel(ops, ins, cv, consts, idx, plan, n_slots, in_pos, param_pos, param_vals, out_pos,
               guard_pos, X, seeds, vals, derivs, valid):
        v = cuda.local.array(LOCAL_SIZE, local_dtype)
        g = cuda.local.array(LOCAL_SIZE, local_dtype)
        n_ins = ops.shape[0]
        # adjoints start at zero once; the reverse sweep (tapejit.analysis.adjoint_plan's plan) zeroes
        # every adjoint it accumulates into before it is next read, so between points only
        # the inputs' and parameters' need clearing
        for s in range(n_slots):
            g[s] = 0
        c = uint32(cuda.grid(1))   # unsigned: no wraparound arithmetic on workspace columns
        _write_parameters_local(v, param_pos, param_vals)
        for t in range(c, X.shape[0], cuda.gridsize(1)):
            for j in range(in_pos.shape[0]):
                v[in_pos[j]] = X[t, j]
            if mode == MODE_JVP:
                for s in range(n_slots):
                    g[s] = 0
                for j in range(in_pos.shape[0]):
                    g[in_pos[j]] = seeds[t, j]
                tangent(ops, ins, cv, consts, idx, v, g, 0, n_ins)
            else:
                forward(ops, ins, cv, consts, idx, v, 0, n_ins)
            for m in range(out_pos.shape[0]):
                vals[t, m] = v[out_pos[m]]
            _store_validity_local(v, guard_pos, valid, t)
            if mode == MODE_JVP:
                for m in range(out_pos.shape[0]):
                    derivs[t, m] = g[out_pos[m]]
            elif mode != MODE_VALUES:
                _seed_local(g, out_pos, seeds, t, mode == MODE_GRAD)
                reverse(ops, ins, cv, consts, idx, plan, v, g, 0, n_ins)
                for j in range(in_pos.shape[0]):
                    derivs[t, j] = g[in_pos[j]]
                    g[in_pos[j]] = 0
                for j in range(param_pos.shape[0]):
                    g[param_pos[j]] = 0
    return kernel


def _global_kernel(dev, mode):
    forward = dev.forward_thread
    tangent = dev.forward_tangent_thread
    reverse = dev.reverse_thread

    @cuda.jit
    def kernel(ops, ins, cv, consts, idx, plan, in_pos, param_pos, param_vals, out_pos, guard_pos,
               X, seeds, vals, derivs, valid, v, g):
        n_ins = ops.shape[0]
        c = uint32(cuda.grid(1))   # unsigned: no wraparound arithmetic on workspace columns
        _write_parameters_thread(v, param_pos, param_vals, c)
        for t in range(c, X.shape[0], cuda.gridsize(1)):
            for j in range(in_pos.shape[0]):
                v[in_pos[j], c] = X[t, j]
            if mode == MODE_JVP:
                for s in range(g.shape[0]):
                    g[s, c] = 0
                for j in range(in_pos.shape[0]):
                    g[in_pos[j], c] = seeds[t, j]
                tangent(ops, ins, cv, consts, idx, v, g, c, 0, n_ins)
            else:
                forward(ops, ins, cv, consts, idx, v, c, 0, n_ins)
            for m in range(out_pos.shape[0]):
                vals[t, m] = v[out_pos[m], c]
            _store_validity_thread(v, guard_pos, valid, t, c)
            if mode == MODE_JVP:
                for m in range(out_pos.shape[0]):
                    derivs[t, m] = g[out_pos[m], c]
            elif mode != MODE_VALUES:
                _seed_thread(g, out_pos, seeds, t, c, mode == MODE_GRAD)
                reverse(ops, ins, cv, consts, idx, plan, v, g, c, 0, n_ins)
                # the sweep zeroed every adjoint accumulated into; inputs and parameters remain
                for j in range(in_pos.shape[0]):
                    derivs[t, j] = g[in_pos[j], c]
                    g[in_pos[j], c] = 0
                for j in range(param_pos.shape[0]):
                    g[param_pos[j], c] = 0
    return kernel


@cuda.jit(device=True)
def _write_parameters_local(v, param_pos, param_vals):
    """Once per thread: parameters are the same for every point, and the sweeps never
    write their slots."""
    for j in range(param_pos.shape[0]):
        v[param_pos[j]] = param_vals[j]


@cuda.jit(device=True)
def _write_parameters_thread(v, param_pos, param_vals, c):
    if c < v.shape[1]:     # threads past the workspace's last column have no point to walk
        for j in range(param_pos.shape[0]):
            v[param_pos[j], c] = param_vals[j]


@cuda.jit(device=True)
def _store_validity_local(v, guard_pos, valid, t):
    """valid[t]: whether every guard held (only tapes with guards have the array)."""
    if guard_pos.shape[0]:
        ok = True
        for q in range(guard_pos.shape[0]):
            if v[guard_pos[q]] != 1:
                ok = False
        valid[t] = ok


@cuda.jit(device=True)
def _store_validity_thread(v, guard_pos, valid, t, c):
    if guard_pos.shape[0]:
        ok = True
        for q in range(guard_pos.shape[0]):
            if v[guard_pos[q], c] != 1:
                ok = False
        valid[t] = ok


@cuda.jit(device=True)
def _seed_local(g, out_pos, seeds, t, gradient):
    """The seeds assign their adjoints (the adjoint plan counts on it); several outputs
    may share a slot."""
    if gradient:
        g[out_pos[0]] = 1
    else:
        for m in range(out_pos.shape[0]):
            g[out_pos[m]] = 0
        for m in range(out_pos.shape[0]):
            g[out_pos[m]] += seeds[t, m]


@cuda.jit(device=True)
def _seed_thread(g, out_pos, seeds, t, c, gradient):
    if gradient:
        g[out_pos[0], c] = 1
    else:
        for m in range(out_pos.shape[0]):
            g[out_pos[m], c] = 0
        for m in range(out_pos.shape[0]):
            g[out_pos[m], c] += seeds[t, m]


@cuda.jit
def zero_kernel(a):
    t = cuda.grid(1)
    if t < a.shape[1]:
        for s in range(a.shape[0]):
            a[s, t] = 0
