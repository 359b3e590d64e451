"""``python -m bench.overhead``: the host's own time per training step, and two ways to cut it.

On a GPU a small batch's step is bound by the host: each array operation costs some microseconds
of Python and library dispatch before its kernel is queued, and the kernels take less. This script
times fastnn's batch loop (``train_epoch``, with the product's flips and shifts) per step, the
variants interleaved so that machine load hits all alike:

- ``gather 1`` and ``gather 8``: each batch gathered and augmented on its own, or eight at once
  (``train_epoch(gather=)``; ``Backend.gather_batches`` is the product's choice per device);
- ``uncached namespace``: the product's loop, but the math core asks array_api_compat for its
  inputs' namespace afresh in every layer (``array_namespace``) instead of
  ``fastnn.backend.namespace``'s answer kept per array type;
- PyTorch on the same device and network, without augmentation, as a yardstick.

The default, 3072-8-8-10 at batch 4 on one CPU thread, is small enough that the cost per operation
outweighs the arithmetic: it shows the host's share on any machine. ``--hidden 1024,512
--batch-size 256`` is the product's network, where the trade-off is real: gathering eight batches
saves operations but moves more memory.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from array_api_compat import array_namespace

import fastnn.backend
import fastnn.layers
import fastnn.losses
import fastnn.network
import fastnn.optimizers
import fastnn.regularizers
import fastnn.train
from bench.harness import cpu_threads, initial_weights, positive_int, positive_ints
from bench.torch_peer import TorchRunner, torch
from fastnn.backend import BackendUnavailable, get_backend
from fastnn.network import Network
from fastnn.optimizers import Adam
from fastnn.train import train_epoch

CORE = (fastnn.layers, fastnn.losses, fastnn.network, fastnn.optimizers, fastnn.regularizers, fastnn.train)


def fastnn_loop(backend, sizes, weights, x, y, batch_size: int, gather: int, cached: bool) -> Callable[[], float]:
    network = Network(sizes, backend=backend)
    network.load_state_dict(weights)
    optimizer, rng = Adam(), backend.rng(1)
    lookup = fastnn.backend.namespace if cached else array_namespace

    def run() -> float:
        for module in CORE:
            module.namespace = lookup
        try:
            backend.synchronize()
            started = time.perf_counter()
            loss_sum, _ = train_epoch(
                network, optimizer, x, y, batch_size=batch_size, lr=1e-3, rng=rng, augment=True, gather=gather
            )
            float(loss_sum)
            backend.synchronize()
            return time.perf_counter() - started
        finally:
            for module in CORE:
                module.namespace = fastnn.backend.namespace

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument(
        "--hidden", type=positive_ints, default=[8, 8], help="hidden sizes; the input is 3072 (images)"
    )
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--steps", type=positive_int, default=1000, help="batches per timed run")
    p.add_argument("--repeats", type=positive_int, default=9)
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads (BLAS and PyTorch)")
    args = p.parse_args(argv)
    with cpu_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        backend = get_backend(args.device)
    except BackendUnavailable as exc:
        print(f"python -m bench.overhead: {exc}")
        return 2
    sizes = [3072, *args.hidden, 10]
    rows = args.steps * args.batch_size
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], rows)
    weights = initial_weights(sizes, seed=0)
    xd, yd = backend.asarray(x, "float32"), backend.asarray(y, "int64")
    default = backend.gather_batches
    runs = {}
    for gather in (1, 8):
        label = f"fastnn, gather {gather}" + (" (default here)" if gather == default else "")
        runs[label] = fastnn_loop(backend, sizes, weights, xd, yd, args.batch_size, gather, cached=True)
    runs[f"fastnn, gather {default}, uncached namespace"] = fastnn_loop(
        backend, sizes, weights, xd, yd, args.batch_size, default, cached=False
    )
    if torch is not None and (args.device == "cpu" or torch.cuda.is_available()):
        peer = TorchRunner("cuda" if args.device == "gpu" else "cpu", x, y, sizes, 1e-3)
        peer.setup(args.batch_size, weights)
        runs["torch, no augmentation"] = lambda: peer.epoch(rows)[0]
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(run() / args.steps * 1e6)
    print(
        f"time per training step on {backend.describe()}, {'-'.join(map(str, sizes))} at batch {args.batch_size}, "
        f"{args.threads} CPU thread(s), median of {args.repeats} runs of {args.steps} steps (min-max):"
    )
    base = statistics.median(next(iter(times.values())))
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<42} {median:9.1f} us ({min(values):.1f}-{max(values):.1f})  x{median / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
