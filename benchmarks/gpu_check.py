"""One script for a machine with an NVIDIA GPU: CPU/GPU agreement, launch tuning, throughput.

    python benchmarks/gpu_check.py [--quick] [--json out.json] [--reference ref.npz]
    python benchmarks/gpu_check.py --make-reference ref.npz     # on any machine, no GPU needed

1. Agreement: the CUDA kernels against the CPU engine on B1, B2 and the W graph (values,
   gradients, Hessian-vector products; float64 to 1e-12, float32 to 1e-3; NaN/Inf in the
   same places; device arrays in give the same numbers as numpy in).
2. Tuning: kernel time (device arrays, no transfers) over threads per block and blocks per
   multiprocessor (tapejit.cuda.THREADS_PER_BLOCK / BLOCKS_PER_SM), and local arrays
   against the global workspace (tapejit.cuda.LOCAL_BYTES).
3. Throughput at several batch sizes, float64 and float32, with the best launch settings:
   kernel only (device arrays in and out) and with host transfers (numpy in, numpy out).

The CPU engine's results and throughput can come from a reference file made beforehand
(``--make-reference``, on the machine whose CPU engine is the baseline): the GPU machine
then compiles no CPU sweeps, and the GPU/CPU column compares with that machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

if not hasattr(np, "row_stack"):
    # some numba-cuda releases register an overload for np.row_stack, which numpy 2.5 removed
    np.row_stack = np.vstack

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tapejit as tj  # noqa: E402
from tapejit import cuda as tjcuda  # noqa: E402
from tapejit.bench import workloads  # noqa: E402

W_OPS = 1000
SIZES = {"B1": [1_000_000, 10_000_000], "B2": [200_000, 2_000_000], f"W{W_OPS}": [10_000, 100_000]}
TUNE_SIZE = {"B1": 4_000_000, "B2": 1_000_000, f"W{W_OPS}": 50_000}
CHECK_SIZE = {"B1": 4096, "B2": 4096, f"W{W_OPS}": 256}


def workload_functions():
    Xd, yd = workloads.logistic_data()
    return {
        "B1": tj.trace(workloads.rosen, np.zeros(10)),
        "B2": tj.trace(workloads.logistic_loss(Xd, yd), np.zeros(20)),
        f"W{W_OPS}": tj.trace(workloads.w_graph(W_OPS), workloads.w_inputs()),
    }


def sample(name, B, seed=0):
    rng = np.random.default_rng(seed)
    if name == "B1":
        X = rng.standard_normal((B, 10))
        if B >= 8:   # non-finite inputs: NaN and Inf must land where the CPU puts them
            X[:4, 3] = [np.nan, np.inf, -np.inf, 1e200]
        return X
    if name == "B2":
        return rng.standard_normal((B, 20)) * 0.1
    return rng.uniform(-1, 1, (B, workloads.W_INPUTS))


def best_of(fn, repeat=3):
    """Shortest of `repeat` timed calls after a warm-up call (repeat=0: one call, no warm-up)."""
    if repeat == 0:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


# ------------------------------------------------------------------------------------------
# reference results of the CPU engine
# ------------------------------------------------------------------------------------------
def cpu_reference(functions):
    """The CPU engine's results at the check points and its throughput at the table's sizes."""
    arrays, cpu_pps = {}, {}
    for name, f in functions.items():
        X = sample(name, CHECK_SIZE[name])
        V = np.random.default_rng(1).standard_normal(X.shape)
        arrays[f"{name}_X"], arrays[f"{name}_V"] = X, V
        arrays[f"{name}_vals"], arrays[f"{name}_grads"] = f.batch_value_and_grad(X)
        arrays[f"{name}_hvp"] = f.batch_hvp(X, V=V)
        for B in SIZES[name]:
            Xb = sample(name, B)
            cpu_pps[f"{name}/{B}"] = B / best_of(lambda: f.batch_value_and_grad(Xb))
            print(f"CPU engine {name} B={B:,}: {cpu_pps[f'{name}/{B}']:.3e} gradient-points/s")
    meta = dict(host=platform.node(), processor=platform.processor(), threads=tj.get_num_threads(),
                cpu_pps=cpu_pps)
    return arrays, meta


def make_reference(path):
    arrays, meta = cpu_reference(workload_functions())
    np.savez_compressed(path, meta=json.dumps(meta), **arrays)
    print(f"wrote {path}")


def load_reference(path, functions):
    """From a --make-reference file, or measured here."""
    if not path:
        return cpu_reference(functions)
    data = np.load(path)
    return {k: data[k] for k in data.files if k != "meta"}, json.loads(str(data["meta"]))


# ------------------------------------------------------------------------------------------
# 1. agreement
# ------------------------------------------------------------------------------------------
def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.array_equal(np.isnan(got), np.isnan(want)) or not np.array_equal(np.isinf(got), np.isinf(want)):
        return np.inf
    finite = np.isfinite(want)
    infinite = np.isinf(want)
    if np.any(got[infinite] != want[infinite]):
        return np.inf
    if not finite.any():
        return 0.0
    return float(np.max(np.abs(got[finite] - want[finite]) / (1 + np.abs(want[finite]))))


def check(functions, ref, report):
    from numba import cuda
    print("== agreement with the CPU engine (max |gpu - cpu| / (1 + |cpu|); NaN/Inf must match)")
    ok = True
    for name, f in functions.items():
        X, V = ref[f"{name}_X"], ref[f"{name}_V"]
        want_v, want_g, want_h = ref[f"{name}_vals"], ref[f"{name}_grads"], ref[f"{name}_hvp"]
        gv, gg = f.batch_value_and_grad(X, device="cuda")
        e64 = max(rel_err(gv, want_v), rel_err(gg, want_g))
        h64 = rel_err(f.batch_hvp(X, V=V, device="cuda"), want_h)
        finite = np.all(np.abs(X) < 1e30, axis=1)   # rows float32 can hold
        gv32, gg32 = f.batch_value_and_grad(X[finite], device="cuda", dtype=np.float32)
        e32 = max(rel_err(gv32, want_v[finite]), rel_err(gg32, want_g[finite]))
        dv, dg = f.batch_value_and_grad(cuda.to_device(X), device="cuda")
        same = np.array_equal(dg.copy_to_host(), gg, equal_nan=True) and np.array_equal(
            dv.copy_to_host(), gv, equal_nan=True)
        passed = e64 < 1e-12 and h64 < 1e-12 and e32 < 1e-3 and same
        ok &= passed
        print(f"{name:>6}: float64 {e64:.1e}, hvp {h64:.1e}, float32 {e32:.1e}, device arrays "
              f"identical: {same}, rows beyond float32: {int((~finite).sum())} -> {'OK' if passed else 'FAIL'}")
        report["agreement"][name] = dict(float64=e64, hvp=h64, float32=e32, device_identical=bool(same))
    return ok


def interop(functions, ref, report):
    """GPU arrays of other libraries in (the CUDA array interface): the same numbers."""
    f = functions["B1"]
    X, want = ref["B1_X"], ref["B1_grads"]
    ok = True
    makers = {}
    try:
        import cupy
        makers["CuPy"] = cupy.asarray
    except Exception as err:
        print(f"   CuPy: not importable ({type(err).__name__})")
    try:
        import torch
        if torch.cuda.is_available():
            makers["PyTorch"] = lambda a: torch.as_tensor(a, device="cuda")
    except Exception as err:
        print(f"   PyTorch: not importable ({type(err).__name__})")
    for name, make in makers.items():
        for dtype in (np.float64, np.float32):
            try:
                _, grads = f.batch_value_and_grad(make(X), device="cuda", dtype=dtype)
                err = rel_err(grads.copy_to_host(), f.batch_grad(X, device="cuda", dtype=dtype))
                passed = err == 0.0
            except Exception as exc:
                err, passed = f"{type(exc).__name__}: {str(exc)[:100]}", False
            ok &= passed
            report["interop"][f"{name}/{np.dtype(dtype).name}"] = dict(err=err, ok=passed)
            print(f"   {name} float64 array in, {np.dtype(dtype).name} compute: same as numpy in: "
                  f"{'OK' if passed else f'FAIL ({err})'}")
    return ok


# ------------------------------------------------------------------------------------------
# 2. launch tuning (kernel alone)
# ------------------------------------------------------------------------------------------
def kernel_time(f, X_dev, mode=tjcuda.MODE_GRAD, repeat=5):
    from numba import cuda
    dtype = np.dtype(X_dev.dtype)
    tape = tjcuda.device_tape(f, dtype)
    B = X_dev.shape[0]
    vals = cuda.device_array((B, f.n_outputs), dtype)
    derivs = cuda.device_array((B, f.n_inputs), dtype)
    valid = cuda.device_array(B, np.bool_)
    seeds = cuda.to_device(np.zeros((1, 1), dtype))
    params = cuda.to_device(np.asarray(f._flat_params(None), dtype))
    return best_of(lambda: tjcuda._launch(tape, X_dev, seeds, vals, derivs, valid, params, mode), repeat)


def settings():
    return dict(threads=tjcuda.THREADS_PER_BLOCK, blocks_per_sm=tjcuda.BLOCKS_PER_SM, local_bytes=tjcuda.LOCAL_BYTES,
                unsigned=tjcuda.UNSIGNED_INDEX)


def apply(s):
    tjcuda.THREADS_PER_BLOCK, tjcuda.BLOCKS_PER_SM = s["threads"], s["blocks_per_sm"]
    tjcuda.LOCAL_BYTES, tjcuda.UNSIGNED_INDEX = s["local_bytes"], s["unsigned"]


def kernel_resources():
    out = {}
    for key, kernel in tjcuda._KERNELS.items():
        mode, dtype, local, unsigned = key[1], key[2], key[3], key[4]
        try:
            regs = kernel.get_regs_per_thread()
            lmem = kernel.get_local_mem_per_thread()
            regs = list(regs.values())[0] if isinstance(regs, dict) else regs
            lmem = list(lmem.values())[0] if isinstance(lmem, dict) else lmem
        except Exception as err:  # pragma: no cover - depends on the numba-cuda release
            regs = lmem = repr(err)[:60]
        out[f"mode{mode}/{dtype}/local{local}/{'unsigned' if unsigned else 'signed'}/ops{len(key[0])}"] = dict(registers=regs, local_bytes=lmem)
    return out


def tune(functions, report, deadline, quick, smoke=False):
    from numba import cuda
    print("\n== launch tuning: float64 gradient, kernel alone (gradient-points/s)")
    local = tjcuda.LOCAL_BYTES
    grids = {
        "B1": [dict(threads=t, blocks_per_sm=b, local_bytes=local, unsigned=True)
               for t, b in ((256, 4), (512, 2), (128, 8), (64, 16), (256, 8), (256, 2), (256, None))]
        + [dict(threads=256, blocks_per_sm=4, local_bytes=local, unsigned=False)],
        "B2": [dict(threads=t, blocks_per_sm=b, local_bytes=lb, unsigned=True) for lb in (local, 0)
               for t, b in ((256, 4), (128, 8), (256, None))],
        f"W{W_OPS}": [dict(threads=t, blocks_per_sm=b, local_bytes=lb, unsigned=True) for lb in (local, 0)
                      for t, b in ((256, 4), (128, 8), (32, None), (64, None))],
    }
    default = settings()
    best = {}
    for name, f in functions.items():
        B = TUNE_SIZE[name] // (4 if quick else 1)
        X_dev = cuda.to_device(sample(name, B, seed=2))
        rows = []
        for s in grids[name][::9] if smoke else grids[name]:
            if time.perf_counter() > deadline:
                print("   (time budget reached: tuning cut short)")
                break
            apply(s)
            try:
                pps = B / kernel_time(f, X_dev)
            except Exception as err:
                print(f"{name:>6} {s}: failed ({type(err).__name__}: {str(err)[:80]})")
                continue
            rows.append((pps, s))
            report["tuning"].append(dict(workload=name, batch=B, pps=pps, **s))
        apply(default)
        if not rows:
            continue
        rows.sort(key=lambda r: -r[0])
        best[name] = rows[0][1]
        default_pps = next((p for p, s in rows if s == default), float("nan"))
        print(f"{name:>6} (B={B:,}): default {default_pps:.3e}; best {rows[0][0]:.3e} with {rows[0][1]}")
        for pps, s in rows[:4]:
            print(f"         {pps:.3e}  {s}")
    report["best_settings"] = best
    report["kernels"] = kernel_resources()
    for key, res in report["kernels"].items():
        print(f"   kernel {key}: {res}")
    return best


# ------------------------------------------------------------------------------------------
# 3. throughput
# ------------------------------------------------------------------------------------------
def throughput(functions, best, ref_meta, report, deadline, quick):
    from numba import cuda
    cpu_pps = ref_meta.get("cpu_pps", {})
    rows = []
    for name, f in functions.items():
        apply(best.get(name, settings()))
        for B in SIZES[name][:1] if quick else SIZES[name]:
            X = sample(name, B, seed=3)
            for dtype in (np.float64, np.float32):
                if time.perf_counter() > deadline:
                    break
                Xd = cuda.to_device(X.astype(dtype))
                alone = kernel_time(f, Xd, repeat=3)
                kernel = best_of(lambda: f.batch_value_and_grad(Xd, device="cuda", dtype=dtype))
                host = best_of(lambda: f.batch_value_and_grad(X, device="cuda", dtype=dtype), repeat=2)
                cpu = cpu_pps.get(f"{name}/{B}", float("nan"))
                row = dict(workload=name, batch=B, dtype=np.dtype(dtype).name, alone_pps=B / alone, kernel_pps=B / kernel,
                           transfer_pps=B / host, cpu_pps=cpu, ratio=B / kernel / cpu, settings=best.get(name))
                rows.append(row)
                report["throughput"].append(row)
                del Xd
        if name == "B1" and time.perf_counter() < deadline:
            B = SIZES["B1"][-1]
            Xd = cuda.to_device(sample("B1", B, seed=4))
            Vd = cuda.to_device(np.random.default_rng(5).standard_normal((B, 10)))
            hvp = best_of(lambda: f.batch_hvp(Xd, V=Vd, device="cuda"))
            report["hvp_B1_pps"] = B / hvp
            print(f"B1 Hessian-vector products, float64, B={B:,}, kernel alone: {B / hvp:.3e} points/s")
    apply(settings())
    print("\n== throughput (gradient-points/s; best of 3 after a warm-up; CPU engine: "
          f"{ref_meta.get('host', '?')}, {ref_meta.get('threads', '?')} threads)")
    print("(kernel alone: preallocated device arrays; device arrays: the public call with device arrays in and "
          "out; numpy: with host transfers)")
    print(f"{'workload':>8} {'B':>11} {'dtype':>8} {'kernel alone':>12} {'device arrays':>13} {'numpy':>10} "
          f"{'CPU engine':>11} {'GPU/CPU':>8}")
    for r in rows:
        print(f"{r['workload']:>8} {r['batch']:>11,} {r['dtype']:>8} {r['alone_pps']:>12.3e} {r['kernel_pps']:>13.3e} "
              f"{r['transfer_pps']:>10.3e} {r['cpu_pps']:>11.3e} {r['ratio']:>8.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--reference", help="CPU results and throughput from --make-reference")
    parser.add_argument("--make-reference", metavar="PATH", help="write the CPU engine's reference and stop")
    parser.add_argument("--budget", type=float, default=420, help="seconds after which sections are cut short")
    parser.add_argument("--no-tune", action="store_true", help="keep tapejit.cuda's launch settings")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (numba-cuda's simulator)")
    args = parser.parse_args()
    if args.smoke:
        for d in (SIZES, TUNE_SIZE):
            for k in d:
                d[k] = [64, 128] if d is SIZES else 64
    if args.make_reference:
        make_reference(args.make_reference)
        return 0
    start = time.perf_counter()
    deadline = start + args.budget
    if not tjcuda.is_available():
        print("no CUDA GPU here: nothing to check")
        return 2
    from numba import cuda
    device = cuda.get_current_device()
    name = getattr(device, "name", "simulator")
    name = name.decode() if isinstance(name, bytes) else str(name)
    versions = {m: getattr(__import__(m), "__version__", "?") for m in ("numba", "numpy")}
    try:
        from importlib.metadata import version
        versions["numba-cuda"] = version("numba-cuda")
    except Exception:
        versions["numba-cuda"] = "?"
    sms = getattr(device, "MULTIPROCESSOR_COUNT", "?")
    report = {"device": name, "multiprocessors": sms, "compute_capability": list(getattr(device, "compute_capability", ())),
              "python": platform.python_version(), **versions, "agreement": {}, "tuning": [], "throughput": []}
    print(f"GPU: {name}, {sms} multiprocessors, cc {report['compute_capability']}; python "
          f"{platform.python_version()}, {versions}")
    functions = workload_functions()
    ref, ref_meta = load_reference(args.reference, functions)
    report["cpu_reference"] = ref_meta
    for fname, f in functions.items():
        print(f"{fname}: {f.n_inputs} inputs, {len(f)} instructions, {f.n_slots} slots")

    def save():
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=2, default=str)

    t0 = time.perf_counter()
    ok = check(functions, ref, report)
    report["interop"] = {}
    ok &= interop(functions, ref, report)
    report["first_launches_s"] = time.perf_counter() - t0
    print(f"(agreement section, kernel compilation included: {report['first_launches_s']:.1f} s)")
    save()
    best = {} if args.no_tune else tune(functions, report, deadline, args.quick, args.smoke)
    save()
    throughput(functions, best, ref_meta, report, deadline + 120, args.quick)
    report["total_s"] = time.perf_counter() - start
    save()
    print(f"agreement: {'OK' if ok else 'FAIL'}; total {report['total_s']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
