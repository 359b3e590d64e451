"""``python -m bench.ablation``: what each CPU speed-up of fastnn gives, switched back off one by one.

Times fastnn on NumPy with the changes undone cumulatively, from the plain code it started as to
today's, interleaved with the PyTorch peer (one step each in turn, so machine load hits all alike):

1. ``baseline``: every change below undone (the first layer computes dL/dx; Adam as the plain
   formula with full-size temporaries; ReLU's backward with ``where``; Dense's bias added out of place);
2. ``+no-input-grad``: the first layer skips dL/dx (its input is data);
3. ``+fused-adam``: Adam in place, block by block (``fastnn.fused.fused_adam_step``);
4. ``+relu-mask``: ReLU's backward multiplies by the 0/1 mask instead of ``where``;
5. ``+bias-in-place`` (today's code): Dense adds its bias in place.

The old variants are the old code, put back on the layer instances here; the library is unchanged.
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import numpy as np

from bench.harness import cpu_threads, initial_weights, positive_int, synthetic_data
from bench.torch_peer import TorchRunner, torch
from fastnn.backend import get_backend
from fastnn.layers import Dense, ReLU
from fastnn.network import Network
from fastnn.optimizers import Adam
from fastnn.train import train_epoch

STAGES = ["baseline", "+no-input-grad", "+fused-adam", "+relu-mask", "+bias-in-place"]


def _where_relu_backward(self, grad_out):
    return np.where(self._y > 0, grad_out, 0.0)


def _out_of_place_dense_forward(self, x, training=False):
    self._x = x
    return x @ self.params["W"] + self.params["b"]


def fastnn_stage(stage: int, sizes, weights, x, y, batch_size):
    """A function that trains one pass over (x, y) with the changes up to ``stage`` in place."""
    backend = get_backend("cpu")
    network = Network(sizes, backend=backend)
    network.load_state_dict(weights)
    network.layers[0].input_grad = stage < 1
    for layer in network.layers:
        if stage < 3 and isinstance(layer, ReLU):
            layer.backward = types.MethodType(_where_relu_backward, layer)
        if stage < 4 and isinstance(layer, Dense):
            layer.forward = types.MethodType(_out_of_place_dense_forward, layer)
    optimizer, rng = Adam(fused=stage >= 2), backend.rng(1)

    def run() -> float:
        started = time.perf_counter()
        loss_sum, _ = train_epoch(network, optimizer, x, y, batch_size=batch_size, lr=1e-3, rng=rng)
        float(loss_sum)
        return time.perf_counter() - started

    return run


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--steps", type=positive_int, default=20, help="batches per timed run")
    p.add_argument("--repeats", type=positive_int, default=7)
    p.add_argument("--threads", type=positive_int, default=2)
    args = p.parse_args()
    with cpu_threads(args.threads):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    sizes = [3072, 1024, 512, 10]
    rows = args.steps * args.batch_size
    x, y = synthetic_data(rows, sizes[0], sizes[-1])
    weights = initial_weights(sizes)
    runs = {name: fastnn_stage(i, sizes, weights, x, y, args.batch_size) for i, name in enumerate(STAGES)}
    if torch is not None:
        peer = TorchRunner("cpu", x, y, sizes, 1e-3)
        peer.setup(args.batch_size, weights)
        runs = {"torch-cpu": lambda: peer.epoch(rows)[0], **runs}
    for run in runs.values():  # warm-up
        run()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(run() / args.steps * 1e3)
    reference = statistics.median(times["torch-cpu"]) if "torch-cpu" in times else None
    previous = None
    print(f"batch {args.batch_size}, {args.steps} steps x {args.repeats} repeats, {args.threads} threads")
    print(f"{'variant':18s} {'ms/step':>8s} {'min':>7s} {'max':>7s} {'vs prev':>8s} {'x torch':>8s}")
    for name, values in times.items():
        median = statistics.median(values)
        change = "" if previous is None or name == "torch-cpu" else f"{(median / previous - 1) * 100:+.1f}%"
        ratio = "" if reference is None else f"{median / reference:.3f}"
        print(f"{name:18s} {median:8.2f} {min(values):7.2f} {max(values):7.2f} {change:>8s} {ratio:>8s}")
        if name != "torch-cpu":
            previous = median


if __name__ == "__main__":
    main()
