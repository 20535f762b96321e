"""The CUDA kernels (imported only when device="cuda" is used).

``make_kernel`` builds one kernel per (device-sweep module, mode, dtype, memory kind):
the mode is a compile-time constant, so a gradient kernel holds no tangent code, and the
device sweeps come from a module generated for the opcodes a tape uses
(``codegen.render_cuda(only=...)``), so kernels stay small. ``cuda`` is a module global
so that numba-cuda's simulator can swap in its own when tests run without a GPU.
"""
from numba import cuda, float32, float64

from .cuda import LOCAL_SLOTS, MODE_GRAD, MODE_HVP, MODE_JVP, MODE_VALUES


def make_kernel(dev, mode: int, dtype: str, local: bool):
    if mode == MODE_HVP:
        return _local_hvp_kernel(dev, float64 if dtype == "float64" else float32) if local else _global_hvp_kernel(dev)
    if local:
        return _local_kernel(dev, mode, float64 if dtype == "float64" else float32)
    return _global_kernel(dev, mode)


def _local_hvp_kernel(dev, local_dtype):
    tangent = dev.forward_tangent_local
    reverse = dev.reverse_tangent_local

    @cuda.jit
    def kernel(ops, ins, cv, consts, idx, n_slots, in_pos, param_pos, param_vals, out_pos,
               guard_pos, X, seeds, vals, derivs, valid):
        t = cuda.grid(1)
        if t >= X.shape[0]:
            return
        v = cuda.local.array(LOCAL_SLOTS, local_dtype)
        dv = cuda.local.array(LOCAL_SLOTS, local_dtype)
        g = cuda.local.array(LOCAL_SLOTS, local_dtype)
        dg = cuda.local.array(LOCAL_SLOTS, local_dtype)
        n_ins = ops.shape[0]
        for s in range(n_slots):
            dv[s] = 0
            g[s] = 0
            dg[s] = 0
        for j in range(in_pos.shape[0]):
            v[in_pos[j]] = X[t, j]
            dv[in_pos[j]] = seeds[t, j]
        for j in range(param_pos.shape[0]):
            v[param_pos[j]] = param_vals[j]
        tangent(ops, ins, cv, consts, idx, v, dv, 0, n_ins)
        for m in range(out_pos.shape[0]):
            vals[t, m] = v[out_pos[m]]
        ok = True
        for q in range(guard_pos.shape[0]):
            if v[guard_pos[q]] != 1:
                ok = False
        valid[t] = ok
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
        t = cuda.grid(1)
        if t >= X.shape[0]:
            return
        n_ins = ops.shape[0]
        for s in range(dv.shape[0]):
            dv[s, t] = 0
        for j in range(in_pos.shape[0]):
            v[in_pos[j], t] = X[t, j]
            dv[in_pos[j], t] = seeds[t, j]
        for j in range(param_pos.shape[0]):
            v[param_pos[j], t] = param_vals[j]
        tangent(ops, ins, cv, consts, idx, v, dv, t, 0, n_ins)
        for m in range(out_pos.shape[0]):
            vals[t, m] = v[out_pos[m], t]
        ok = True
        for q in range(guard_pos.shape[0]):
            if v[guard_pos[q], t] != 1:
                ok = False
        valid[t] = ok
        g[out_pos[0], t] += 1
        reverse(ops, ins, cv, consts, idx, v, dv, g, dg, t, 0, n_ins)
        for j in range(in_pos.shape[0]):
            derivs[t, j] = dg[in_pos[j], t]
            g[in_pos[j], t] = 0
            dg[in_pos[j], t] = 0
        for j in range(param_pos.shape[0]):
            g[param_pos[j], t] = 0
            dg[param_pos[j], t] = 0
    return kernel


def _local_kernel(dev, mode, local_dtype):
    forward = dev.forward_local
    tangent = dev.forward_tangent_local
    reverse = dev.reverse_local

    @cuda.jit
    def kernel(ops, ins, cv, consts, idx, n_slots, in_pos, param_pos, param_vals, out_pos,
               guard_pos, X, seeds, vals, derivs, valid):
        t = cuda.grid(1)
        if t >= X.shape[0]:
            return
        v = cuda.local.array(LOCAL_SLOTS, local_dtype)
        g = cuda.local.array(LOCAL_SLOTS, local_dtype)
        n_ins = ops.shape[0]
        for j in range(in_pos.shape[0]):
            v[in_pos[j]] = X[t, j]
        for j in range(param_pos.shape[0]):
            v[param_pos[j]] = param_vals[j]
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
        ok = True
        for q in range(guard_pos.shape[0]):
            if v[guard_pos[q]] != 1:
                ok = False
        valid[t] = ok
        if mode == MODE_JVP:
            for m in range(out_pos.shape[0]):
                derivs[t, m] = g[out_pos[m]]
        elif mode != MODE_VALUES:
            for s in range(n_slots):
                g[s] = 0
            if mode == MODE_GRAD:
                g[out_pos[0]] = 1
            else:
                for m in range(out_pos.shape[0]):
                    g[out_pos[m]] += seeds[t, m]
            reverse(ops, ins, cv, consts, idx, v, g, 0, n_ins)
            for j in range(in_pos.shape[0]):
                derivs[t, j] = g[in_pos[j]]
    return kernel


def _global_kernel(dev, mode):
    forward = dev.forward_thread
    tangent = dev.forward_tangent_thread
    reverse = dev.reverse_thread

    @cuda.jit
    def kernel(ops, ins, cv, consts, idx, in_pos, param_pos, param_vals, out_pos, guard_pos,
               X, seeds, vals, derivs, valid, v, g):
        t = cuda.grid(1)
        if t >= X.shape[0]:
            return
        n_ins = ops.shape[0]
        for j in range(in_pos.shape[0]):
            v[in_pos[j], t] = X[t, j]
        for j in range(param_pos.shape[0]):
            v[param_pos[j], t] = param_vals[j]
        if mode == MODE_JVP:
            for s in range(g.shape[0]):
                g[s, t] = 0
            for j in range(in_pos.shape[0]):
                g[in_pos[j], t] = seeds[t, j]
            tangent(ops, ins, cv, consts, idx, v, g, t, 0, n_ins)
        else:
            forward(ops, ins, cv, consts, idx, v, t, 0, n_ins)
        for m in range(out_pos.shape[0]):
            vals[t, m] = v[out_pos[m], t]
        ok = True
        for q in range(guard_pos.shape[0]):
            if v[guard_pos[q], t] != 1:
                ok = False
        valid[t] = ok
        if mode == MODE_JVP:
            for m in range(out_pos.shape[0]):
                derivs[t, m] = g[out_pos[m], t]
        elif mode != MODE_VALUES:
            if mode == MODE_GRAD:
                g[out_pos[0], t] += 1
            else:
                for m in range(out_pos.shape[0]):
                    g[out_pos[m], t] += seeds[t, m]
            reverse(ops, ins, cv, consts, idx, v, g, t, 0, n_ins)
            # the sweep zeroed every consumed adjoint; inputs and parameters remain
            for j in range(in_pos.shape[0]):
                derivs[t, j] = g[in_pos[j], t]
                g[in_pos[j], t] = 0
            for j in range(param_pos.shape[0]):
                g[param_pos[j], t] = 0
    return kernel


@cuda.jit
def zero_kernel(a):
    t = cuda.grid(1)
    if t < a.shape[1]:
        for s in range(a.shape[0]):
            a[s, t] = 0
