"""``python -m bench.overhead``: the host's own time per training step, apart from the arithmetic.

On a GPU a small batch's step is bound by the host: each array operation costs some microseconds
of Python and library dispatch before its kernel is queued, and the kernels take less. A small
network on NumPy, where the arithmetic is cheap, shows the same cost on any machine. This script
times fastnn's batch loop (``train_epoch``) on 3072-8-8-10 at batch 4 with the product's
augmentation (flips and shifts), in microseconds per step, interleaved with the loop made with one
change undone at a time, and with PyTorch's CPU dispatch on the same network (no augmentation) as a
yardstick.

The changes (each variant undoes one of them, as the old code put back here):
- ``uncached-namespace``: the math core asks array_api_compat for its inputs' namespace afresh in
  every layer (``array_namespace``), instead of ``fastnn.backend.namespace``'s answer kept per type;
- ``per-batch-gather``: each batch is gathered and augmented on its own, instead of
  ``fastnn.train.GATHER`` batches at once.
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
from bench.harness import initial_weights
from bench.torch_peer import TorchRunner, torch
from fastnn.backend import get_backend
from fastnn.network import Network
from fastnn.optimizers import Adam
from fastnn.train import augment_images, train_epoch

SIZES = [3072, 8, 8, 10]
CORE = (fastnn.layers, fastnn.losses, fastnn.network, fastnn.optimizers, fastnn.regularizers, fastnn.train)
VARIANTS = ("uncached-namespace", "per-batch-gather")


def per_batch_train_epoch(network, optimizer, x, y, *, batch_size, lr, rng, augment=False, shift=2):
    """``train_epoch`` as it was before GATHER: one gather (and augmentation) per batch."""
    xp = array_namespace(x)
    n = x.shape[0]
    order = rng.permutation(n)
    loss_sum = xp.zeros((), dtype=x.dtype)
    correct = xp.zeros((), dtype=xp.int64)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        index = order[start:stop]
        xb = xp.take(x, index, axis=0)
        if augment:
            xb = augment_images(xb, rng, shift)
        loss, n_correct = network.train_step(xb, xp.take(y, index, axis=0), optimizer, lr)
        loss_sum = loss_sum + loss * (stop - start)
        correct = correct + n_correct
    return loss_sum, correct


def fastnn_loop(weights, x, y, batch_size: int, variant: str | None) -> Callable[[], float]:
    backend = get_backend("cpu")
    network = Network(SIZES, backend=backend)
    network.load_state_dict(weights)
    optimizer, rng = Adam(), backend.rng(1)
    lookup = array_namespace if variant == "uncached-namespace" else fastnn.backend.namespace
    loop = per_batch_train_epoch if variant == "per-batch-gather" else train_epoch

    def run() -> float:
        for module in CORE:
            module.namespace = lookup
        try:
            started = time.perf_counter()
            loss_sum, _ = loop(network, optimizer, x, y, batch_size=batch_size, lr=1e-3, rng=rng, augment=True)
            float(loss_sum)
            return time.perf_counter() - started
        finally:
            for module in CORE:
                module.namespace = fastnn.backend.namespace

    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=400, help="batches per timed run")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # the arithmetic on one thread, as the dispatch is
    except ImportError:
        print("threadpoolctl is missing: BLAS threads not limited")
    rows = args.steps * args.batch_size
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], rows)
    weights = initial_weights(SIZES, seed=0)
    backend = get_backend("cpu")
    xd, yd = backend.asarray(x, "float32"), backend.asarray(y, "int64")
    runs = {"fastnn (today)": fastnn_loop(weights, xd, yd, args.batch_size, None)}
    for variant in VARIANTS:
        runs[f"fastnn, {variant}"] = fastnn_loop(weights, xd, yd, args.batch_size, variant)
    if torch is not None:
        peer = TorchRunner("cpu", x, y, SIZES, 1e-3)
        peer.setup(args.batch_size, weights)
        runs["torch-cpu, no augmentation"] = lambda: peer.epoch(rows)[0]
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(run() / args.steps * 1e6)
    print(
        f"time per training step, {'-'.join(map(str, SIZES))} at batch {args.batch_size}, one thread, "
        f"median of {args.repeats} runs of {args.steps} steps (min-max):"
    )
    base = statistics.median(times["fastnn (today)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<32} {median:7.1f} us ({min(values):.1f}-{max(values):.1f})  x{median / base:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
