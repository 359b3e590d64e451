"""``python -m bench.layout``: which weight layout makes a dense network's products fastest on this BLAS.

One training step of 3072-1024-512-10 runs eight matrix products (the first layer skips dL/dx). A
weight can be kept as (in, out), fastnn's, or as (out, in), PyTorch's; each layout makes some of the
products run on transposed views (BLAS's "T" flag) rather than on contiguous arrays:

- (in, out): ``y = x @ W`` (NN), ``dW = x.T @ dy`` (TN), ``dx = dy @ W.T`` (NT);
- (out, in): ``y = x @ W.T`` (NT), ``dW = dy.T @ x`` (TN), ``dx = dy @ W`` (NN).

Both are timed, interleaved, for each batch size, as milliseconds per step (the median, and the
minimum, which a busy machine disturbs least). With ``--coretypes`` each OpenBLAS kernel set runs in
its own process (``OPENBLAS_CORETYPE`` is read when OpenBLAS loads), and the kernel set that actually
ran is read back with threadpoolctl.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.harness import cpu_threads, positive_int, positive_ints

SIZES = [3072, 1024, 512, 10]


def products(layout: str, x: list[np.ndarray], dy: list[np.ndarray], w: list[np.ndarray]) -> dict[str, Callable]:
    """The eight products of one step: forward, weight gradients, input gradients but the first's."""
    work: dict[str, Callable] = {}
    for i, weight in enumerate(w):
        xi, dyi = x[i], dy[i]
        if layout == "in,out":
            work[f"{i} y = x @ W"] = lambda xi=xi, weight=weight: xi @ weight
            work[f"{i} dW = x.T @ dy"] = lambda xi=xi, dyi=dyi: xi.T @ dyi
            if i:
                work[f"{i} dx = dy @ W.T"] = lambda dyi=dyi, weight=weight: dyi @ weight.T
        else:
            work[f"{i} y = x @ W.T"] = lambda xi=xi, weight=weight: xi @ weight.T
            work[f"{i} dW = dy.T @ x"] = lambda xi=xi, dyi=dyi: dyi.T @ xi
            if i:
                work[f"{i} dx = dy @ W"] = lambda dyi=dyi, weight=weight: dyi @ weight
    return work


def measure(batch_size: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    rng = np.random.default_rng(0)
    pairs = list(zip(SIZES[:-1], SIZES[1:]))
    x = [rng.standard_normal((batch_size, n_in), dtype=np.float32) for n_in, _ in pairs]
    dy = [rng.standard_normal((batch_size, n_out), dtype=np.float32) for _, n_out in pairs]
    layouts = {
        "in,out": products("in,out", x, dy, [rng.standard_normal(p, dtype=np.float32) for p in pairs]),
        "out,in": products("out,in", x, dy, [rng.standard_normal(p[::-1], dtype=np.float32) for p in pairs]),
    }
    times = {layout: {name: [] for name in work} | {"step": []} for layout, work in layouts.items()}
    for repeat in range(repeats + 2):
        for layout, work in layouts.items():
            total = 0.0
            for name, product in work.items():
                started = time.perf_counter()
                product()
                ms = (time.perf_counter() - started) * 1e3
                total += ms
                if repeat >= 2:  # two warm-up rounds
                    times[layout][name].append(ms)
            if repeat >= 2:
                times[layout]["step"].append(total)
    return times


def run_here(batch_sizes: list[int], repeats: int, threads: int) -> dict:
    from threadpoolctl import threadpool_info

    with cpu_threads(threads):
        kernels = [p.get("architecture") for p in threadpool_info() if p.get("user_api") == "blas"]
        result = {"coretype_env": os.environ.get("OPENBLAS_CORETYPE"), "kernels": kernels, "batches": {}}
        for batch_size in batch_sizes:
            result["batches"][batch_size] = measure(batch_size, repeats)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=positive_ints, default=[256, 1024])
    p.add_argument("--repeats", type=positive_int, default=15)
    p.add_argument("--threads", type=positive_int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--coretypes", default=None, help="comma list of OPENBLAS_CORETYPE values, each run apart")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one process's result, for --coretypes
    args = p.parse_args(argv)
    if args.json:
        print(json.dumps(run_here(args.batch_sizes, args.repeats, args.threads)))
        return 0
    command = "python -m bench.layout " + " ".join(sys.argv[1:] if argv is None else argv)
    print(command)
    print("load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    runs = []
    for coretype in args.coretypes.split(",") if args.coretypes else [None]:
        env = dict(os.environ)
        if coretype:
            env["OPENBLAS_CORETYPE"] = coretype
        child = [sys.executable, "-m", "bench.layout", "--json", "--repeats", str(args.repeats)]
        child += ["--threads", str(args.threads), "--batch-sizes", ",".join(map(str, args.batch_sizes))]
        root = Path(__file__).resolve().parents[1]
        done = subprocess.run(child, env=env, cwd=root, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout))
    print(f"ms per step of the 8 products, {args.threads} threads; median (min) of {args.repeats} interleaved")
    header = ("OPENBLAS_CORETYPE", "kernels", "batch", "(in, out)", "(out, in)", "ratio")
    print("{:18s} {:10s} {:>5s} {:>16s} {:>16s} {:>6s}".format(*header))
    for run in runs:
        for batch_size, times in run["batches"].items():
            a, b = times["in,out"]["step"], times["out,in"]["step"]
            print(
                f"{run['coretype_env'] or '(unset)':18s} {','.join(run['kernels']):10s} {batch_size:>5s} "
                f"{statistics.median(a):9.2f} ({min(a):5.1f}) {statistics.median(b):9.2f} ({min(b):5.1f}) "
                f"{statistics.median(b) / statistics.median(a):6.3f}"
            )
    print("ratio = (out, in) / (in, out), medians; below 1: (out, in) is faster")
    print("\neach product, ms (median):")
    for run in runs:
        for batch_size, times in run["batches"].items():
            cells = [f"{name} {statistics.median(v):.2f}" for lay in times.values() for name, v in lay.items()]
            print(f"  {run['coretype_env'] or '(unset)'} batch {batch_size}: " + "; ".join(cells))
    print("load average at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
