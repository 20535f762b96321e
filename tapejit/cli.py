"""The ``tapejit`` command: ``tapejit bench`` runs the throughput suite."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .bench import harness as bench


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tapejit", description="tapejit command line")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="measure tapejit's throughput beside its baselines",
                       description="Run the benchmark workloads and print one table per workload: "
                                   "tapejit and each baseline (min/median/max, throughput, ratio).")
    b.add_argument("--quick", action="store_true", help="small sizes, a few repeats: under a minute once compiled")
    b.add_argument("--workload", action="append", metavar="NAME",
                   help=f"run only these (repeatable): {', '.join(bench.DEFAULT + list(bench.GROUPS))}; "
                        f"a group stands for its members ({', '.join(bench.GROUPS['M'][:2])} ...)")
    b.add_argument("--batch", type=int, metavar="N", help="problem size (batch, n or operations) for every workload run")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where tapejit runs batch workloads")
    b.add_argument("--repeat", type=int, default=None, metavar="R", help="timed calls per implementation (default 5, quick 3)")
    b.add_argument("--json", metavar="FILE", help="write the results as JSON")
    b.add_argument("--plot", metavar="FILE", help="write a bar chart of the ratios (PNG, needs matplotlib)")
    b.add_argument("--function", metavar="MODULE:FN", help="also benchmark your own scalar function of one vector")
    b.add_argument("--dim", type=int, default=50, help="input size for --function (default 50)")
    b.add_argument("--no-latency", action="store_true", help="skip the fresh-process first-gradient measurement")
    b.add_argument("--cold", action="store_true",
                   help="also time every mode's first call in fresh processes with empty caches (about a minute)")
    return parser


class _Progress:
    """One bar per workload, over its implementations (tqdm when installed, else a counter)."""

    def __init__(self, workload: str):
        self.workload, self.bar, self.done = workload, None, 0

    def __call__(self, label: str, total: int) -> None:
        self.done += 1
        if self.bar is None:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=self.workload, unit="impl", file=sys.stderr, leave=False)
            except ImportError:
                self.bar = False
        if self.bar:
            self.bar.set_postfix_str(label[:30])
            self.bar.update(1)
        else:
            print(f"\r{self.workload} [{self.done}/{total}] {label[:40]:<40}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        elif self.bar is False:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)


def bench_main(args) -> int:
    names = [member for name in (args.workload or bench.DEFAULT) for member in bench.GROUPS.get(name, [name])]
    unknown = [n for n in names if n not in bench.WORKLOADS]
    if unknown:
        print(f"tapejit bench: unknown workload {', '.join(unknown)}; choose from "
              f"{', '.join(bench.DEFAULT + list(bench.GROUPS))} or a group's member ({', '.join(bench.GROUPS['M'][:2])} ...)",
              file=sys.stderr)
        return 2
    workloads = [bench.WORKLOADS[n] for n in names]
    if args.function:
        workloads.append(bench._user_case(args.function, args.dim))
    if args.device == "cuda":
        from . import cuda
        if not cuda.is_available():
            print("tapejit bench: --device cuda needs an NVIDIA GPU and numba-cuda "
                  "(pip install tapejit[cuda])", file=sys.stderr)
            return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("tapejit bench: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2
    repeat = args.repeat or (3 if args.quick else 5)
    facts = bench.machine_facts()
    print(f"tapejit bench on {facts['cpu']} ({facts['cores']} cores, {facts['threads']} worker threads), "
          f"Python {facts['python']}, numpy {facts['numpy']}, numba {facts['numba']}")
    results = []
    for w in workloads:
        size = args.batch or (w.quick_size if args.quick else w.default_size)
        progress = _Progress(w.name)
        try:
            result = bench.run_workload(w, size=size, device=args.device, repeat=repeat,
                                        min_time=0.05 if args.quick else 0.2, progress=progress)
        finally:
            progress.close()
        results.append(result)
        print()
        print(bench.format_result(result))
    if any(r["workload"].startswith("M:") for r in results):
        print("\nworkload M, one opcode per line (median gradient times):")
        print(bench.format_math_table(results))
    report = {"machine": facts, "results": results}
    if not args.no_latency:
        report["first_call"] = bench.first_call_latency()
        print(f"\nfirst gradient in a fresh process (import included, warm Numba cache): "
              f"{report['first_call']['first_gradient_seconds']:.2f} s")
        print(f"first batch of a compiled Function in a fresh process (kernel from the disk cache): "
              f"{report['first_call']['first_compiled_batch_seconds']:.2f} s")
    if not args.no_latency or args.cold:
        report["cold_start"] = bench.cold_start(modes=args.cold)
        print("\nfirst use in a fresh process with empty caches (compilation included): "
              + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in report["cold_start"].items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def plot(results, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels, ratios = [], []
    for r in results:
        for row in r["rows"]:
            if row.get("status") == "ok" and row["implementation"] != r["rows"][0]["implementation"]:
                labels.append(f"{r['workload']}\n{row['implementation']}")
                ratios.append(row["tapejit_speedup"])
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(labels)), 4.5))
    colors = ["tab:green" if x >= 1 else "tab:red" for x in ratios]
    ax.bar(range(len(ratios)), ratios, color=colors)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("baseline time / tapejit time (higher: tapejit faster)")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_title("tapejit beside its baselines")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "bench":
        return bench_main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
