"""B1's gradient kernel, launched for a profiler: once to compile, then with the default
launch settings, then with the best ones that gpu_check.py found.

    ncu --clock-control none -k regex:kernel --launch-skip 1 --launch-count 2 \\
        python benchmarks/gpu_profile.py [gpu_check.json]
"""
import json
import os
import sys

import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from gpu_check import apply, kernel_time, sample, settings  # noqa: E402

import tapejit as tj  # noqa: E402
from tapejit.bench import workloads  # noqa: E402


def main():
    from numba import cuda
    best = settings()
    if len(sys.argv) > 1 and os.path.exists(sys.argv[1]):
        best = json.load(open(sys.argv[1])).get("best_settings", {}).get("B1", best)
    f = tj.trace(workloads.rosen, np.zeros(10))
    X = cuda.to_device(sample("B1", 4_000_000, seed=2))
    default = settings()
    for s in (default, default, best):
        apply(s)
        print(s, f"{4e6 / kernel_time(f, X, repeat=0):.3e} points/s (one launch)")


if __name__ == "__main__":
    main()
