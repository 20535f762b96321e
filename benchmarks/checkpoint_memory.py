"""Peak memory and time of a gradient with and without tj.checkpoint.

An objective of S stretches over n elements, each stretch x -> tanh(sin(x) * 1.1 + 0.1) + 0.5 x
(transcendental, five instructions of n slots): the plain tape keeps every intermediate
(about 5 S n slots of values and as many adjoints), the checkpointed one keeps the S
stretch outputs and recomputes a stretch in its reverse. Each variant runs in a process of
its own, so that its peak RSS is its own; times are the best of a few warm gradients.

    python benchmarks/checkpoint_memory.py [n] [stretches]
"""
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
import tapejit as tj
n, stretches, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def stretch(x):
    return tj.tanh(tj.sin(x) * 1.1 + 0.1) + 0.5 * x

def objective(x):
    step = tj.checkpoint(stretch) if mode == "checkpoint" else stretch
    for _ in range(stretches):
        x = step(x)
    return tj.sum(x * x)

x = np.random.default_rng(0).normal(size=n)
f = tj.trace(objective, x, compile=False)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
g = f.grad(x)
times = []
for _ in range(3):
    t0 = time.perf_counter()
    g = f.grad(x)
    times.append(time.perf_counter() - t0)
print(json.dumps(dict(mode=mode, seconds=min(times), peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      checksum=float(np.sum(g[:1000])))))
"""


def run(n: int, stretches: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(stretches), mode], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(n: int = 1_000_000, stretches: int = 50) -> dict:
    plain, ck = run(n, stretches, "plain"), run(n, stretches, "checkpoint")
    assert abs(plain["checksum"] - ck["checksum"]) <= 1e-9 * max(1.0, abs(plain["checksum"])), (plain, ck)
    print(f"n = {n:,}, {stretches} stretches: plain {plain['seconds'] * 1e3:.0f} ms, peak {plain['peak_mib']:.0f} MiB; "
          f"checkpointed {ck['seconds'] * 1e3:.0f} ms ({ck['seconds'] / plain['seconds']:.2f}x), "
          f"peak {ck['peak_mib']:.0f} MiB ({ck['peak_mib'] / plain['peak_mib']:.2f}x)")
    return dict(plain=plain, checkpoint=ck)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
