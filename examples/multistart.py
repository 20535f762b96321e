"""Global search on the Rastrigin function (many local minima) from 10,000 starts at once.

In 3 dimensions Rastrigin has about 1,000 local minima in [-5.12, 5.12]^3 and a start lands in
the global minimum's basin with probability ~1/1000: local search from 10,000 starts finds
it about 15 times (each run is L-BFGS from one start)."""
import time

import numpy as np

import tapejit as tj

DIM = 3
STARTS = 10_000


def rastrigin(x):
    return 10.0 * DIM + tj.sum(x * x - 10.0 * tj.cos(2 * np.pi * x))


def main():
    X0 = np.random.default_rng(0).uniform(-5.12, 5.12, (STARTS, DIM))
    tj.multistart(rastrigin, X0[:4])                      # compile once
    start = time.perf_counter()
    best = tj.multistart(rastrigin, X0)
    elapsed = time.perf_counter() - start
    found = np.mean(best.all.fun < 1e-8)
    print(f"Rastrigin in {DIM} dimensions, {STARTS:,} L-BFGS runs in {elapsed:.2f} s")
    print(f"  best f = {best.fun:.3e} at x = {np.round(best.x, 6)} (start {best.index}); "
          f"{found:.2%} of the starts reached the global minimum")
    return best


if __name__ == "__main__":
    main()
