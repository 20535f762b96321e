"""Peak memory and time of a gradient with and without tj.checkpoint.

An objective of S stretches over n elements: ``diffusion``, an explicit time step of a
periodic reaction-diffusion equation (two gathers, a tanh, seven instructions of n slots),
whose plain tape keeps every intermediate; or ``elementwise``, x -> tanh(sin(x) * 1.1 +
0.1) + 0.5 x, which the plain tape already runs in tiles without keeping them
(tapejit.cpu.tiling). The checkpointed tape keeps the S stretch outputs and recomputes a
stretch in its reverse. Each variant runs in a process of
its own; the peak RSS is the high-water mark of three warm gradients (reset after the
trace and a first gradient, through /proc/self/clear_refs: Linux), the time their best.

    python benchmarks/checkpoint_memory.py [n] [stretches] [diffusion|elementwise]
"""
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import tapejit as tj
n, stretches, kind, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def elementwise(x):
    return tj.tanh(tj.sin(x) * 1.1 + 0.1) + 0.5 * x

def diffusion(u):
    # an explicit step of u_t = u_xx - 0.1 tanh(u), periodic: the neighbours are gathers
    return u + 0.2 * (tj.roll(u, 1) + tj.roll(u, -1) - 2.0 * u) - 0.01 * tj.tanh(u)

stretch = elementwise if kind == "elementwise" else diffusion

def objective(x):
    step = tj.checkpoint(stretch) if mode == "checkpoint" else stretch
    for _ in range(stretches):
        x = step(x)
    return tj.sum(x * x)

x = np.random.default_rng(0).normal(size=n)
f = tj.trace(objective, x, compile=False)
g = f.grad(x)                                    # the workspaces exist from here on

def high_water_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024

with open("/proc/self/clear_refs", "w") as refs:  # the peak from now on: the gradient's
    refs.write("5")
times = []
for _ in range(3):
    t0 = time.perf_counter()
    g = f.grad(x)
    times.append(time.perf_counter() - t0)
print(json.dumps(dict(mode=mode, seconds=min(times), peak_mib=high_water_mib(), checksum=float(np.sum(g[:1000])))))
"""


def run(n: int, stretches: int, kind: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(stretches), kind, mode], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(n: int = 1_000_000, stretches: int = 50, kind: str = "diffusion") -> dict:
    plain, ck = run(n, stretches, kind, "plain"), run(n, stretches, kind, "checkpoint")
    assert abs(plain["checksum"] - ck["checksum"]) <= 1e-9 * max(1.0, abs(plain["checksum"])), (plain, ck)
    print(f"{kind}, n = {n:,}, {stretches} stretches: plain {plain['seconds'] * 1e3:.0f} ms, peak {plain['peak_mib']:.0f} MiB; "
          f"checkpointed {ck['seconds'] * 1e3:.0f} ms ({ck['seconds'] / plain['seconds']:.2f}x), "
          f"peak {ck['peak_mib']:.0f} MiB ({ck['peak_mib'] / plain['peak_mib']:.2f}x)")
    return dict(plain=plain, checkpoint=ck)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]), *sys.argv[3:4])
