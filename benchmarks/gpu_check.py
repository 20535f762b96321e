"""One script for a machine with an NVIDIA GPU: CPU/GPU agreement, then a throughput table.

    python benchmarks/gpu_check.py [--quick] [--json out.json]

Checks the CUDA kernels against the CPU engine (B1, B2, the W graph; float64 to 1e-12,
float32 to its tolerance), then times B1, B2 and W at several batch sizes, in float64 and
float32, with host transfers (numpy in, numpy out) and without (device arrays in and
out: the kernel alone). The CPU engine of the same machine runs beside it for reference.
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
from tapejit import workloads  # noqa: E402


def best_of(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def workload_functions(w_ops):
    rng = np.random.default_rng(0)
    f_b1 = tj.trace(workloads.rosen, np.zeros(10))
    X_data, y_data = workloads.logistic_data()
    f_b2 = tj.trace(workloads.logistic_loss(X_data, y_data), np.zeros(20))
    f_w = tj.trace(workloads.w_graph(w_ops), workloads.w_inputs())
    return {
        "B1": (f_b1, lambda B: rng.standard_normal((B, 10))),
        "B2": (f_b2, lambda B: rng.standard_normal((B, 20)) * 0.1),
        f"W{w_ops}": (f_w, lambda B: rng.uniform(-1, 1, (B, workloads.W_INPUTS))),
    }


def check(functions, report):
    from numba import cuda
    print("== agreement with the CPU engine")
    ok = True
    for name, (f, sample) in functions.items():
        X = sample(4096 if not name.startswith("W") else 256)
        cv, cg = f.batch_value_and_grad(X)
        gv, gg = f.batch_value_and_grad(X, device="cuda")
        err64 = max(np.max(np.abs(gv - cv) / (1 + np.abs(cv))), np.max(np.abs(gg - cg) / (1 + np.abs(cg))))
        gv32, gg32 = f.batch_value_and_grad(X, device="cuda", dtype=np.float32)
        err32 = max(np.max(np.abs(gv32 - cv) / (1 + np.abs(cv))), np.max(np.abs(gg32 - cg) / (1 + np.abs(cg))))
        dv, dg = f.batch_value_and_grad(cuda.to_device(X), device="cuda")
        same_device = np.array_equal(dg.copy_to_host(), gg)
        passed = err64 < 1e-12 and err32 < 1e-3 and same_device
        ok &= passed
        print(f"{name:>8}: float64 max rel err {err64:.2e}, float32 {err32:.2e}, "
              f"device arrays identical: {same_device} -> {'OK' if passed else 'FAIL'}")
        report["agreement"][name] = dict(float64=err64, float32=err32, device_identical=bool(same_device))
    return ok


def throughput(functions, sizes, report):
    from numba import cuda
    print("\n== throughput (gradient-points per second; min of 3 runs after a warm-up)")
    header = f"{'workload':>8} {'B':>10} {'dtype':>8} {'kernel only':>14} {'with transfers':>16} {'CPU engine':>14} {'GPU/CPU':>8}"
    print(header)
    for name, (f, sample) in functions.items():
        for B in sizes[name]:
            X = sample(B)
            cpu = best_of(lambda: f.batch_value_and_grad(X), repeat=1 if B > 2_000_000 else 3)
            for dtype in (np.float64, np.float32):
                Xd = cuda.to_device(X.astype(dtype))
                kernel = best_of(lambda: f.batch_value_and_grad(Xd, device="cuda", dtype=dtype))
                host = best_of(lambda: f.batch_value_and_grad(X, device="cuda", dtype=dtype))
                row = dict(workload=name, batch=B, dtype=np.dtype(dtype).name, kernel_pps=B / kernel,
                           transfer_pps=B / host, cpu_pps=B / cpu, ratio=cpu / kernel)
                report["throughput"].append(row)
                print(f"{name:>8} {B:>10,} {row['dtype']:>8} {B / kernel:>14.3e} {B / host:>16.3e} "
                      f"{B / cpu:>14.3e} {cpu / kernel:>8.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches only")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--w-ops", type=int, default=1000, help="operations of the W graph")
    args = parser.parse_args()
    if not tjcuda.is_available():
        print("no CUDA GPU here: nothing to check")
        return 2
    from numba import cuda
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    report = {"device": name, "host": platform.node(), "cpu_threads": tj.get_num_threads(),
              "numba": __import__("numba").__version__, "agreement": {}, "throughput": []}
    print(f"GPU: {name}; CPU engine threads: {tj.get_num_threads()}")
    functions = workload_functions(args.w_ops)
    for fname, (f, _) in functions.items():
        print(f"{fname}: {f.n_inputs} inputs, {len(f)} instructions, {f.n_slots} slots "
              f"({'local' if f.n_slots <= tjcuda.LOCAL_SLOTS else 'global'} kernel)")
    start = time.perf_counter()
    ok = check(functions, report)
    print(f"(first launches, compiling included: {time.perf_counter() - start:.1f} s)")
    w = f"W{args.w_ops}"
    sizes = {"B1": [100_000, 1_000_000, 10_000_000], "B2": [20_000, 200_000, 2_000_000], w: [1_000, 10_000, 100_000]}
    if args.quick:
        sizes = {"B1": [1_000_000, 10_000_000], "B2": [200_000, 2_000_000], w: [10_000, 100_000]}
    throughput(functions, sizes, report)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
