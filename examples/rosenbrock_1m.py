"""Minimize the Rosenbrock function of 1,000,000 variables with tapejit's L-BFGS, compare
with scipy's L-BFGS-B fed scipy's own rosen/rosen_der, and save a convergence plot."""
import sys
import time

import numpy as np

import tapejit as tj

N = 1_000_000


def rosen(x):
    return tj.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def main(plot_path="rosenbrock_1m.png"):
    x0 = np.zeros(N)
    f = tj.trace(rosen, x0)
    tj.minimize(f, x0, maxiter=2)                      # compile (cached after the first run)
    start = time.perf_counter()
    res = tj.minimize(f, x0, gtol=1e-5, ftol=0.0)
    elapsed = time.perf_counter() - start
    print(f"tapejit L-BFGS, n = {N:,}: {res.message}")
    print(f"  {res.nit} iterations, {res.nfev} evaluations, {elapsed:.2f} s; f = {res.fun:.3e}, "
          f"max |x - 1| = {np.abs(res.x - 1).max():.2e}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return res
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(res.history["fun"], label="objective")
    ax.semilogy(res.history["grad_norm"], label="gradient norm (inf)")
    ax.set_xlabel("iteration")
    ax.set_title(f"Rosenbrock, n = {N:,}: tapejit L-BFGS ({elapsed:.1f} s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_path, dpi=110)
    print(f"  convergence plot: {plot_path}")
    return res


if __name__ == "__main__":
    main(*sys.argv[1:2])
