"""``python -m bench.profile``: where one training step's time goes, fastnn on NumPy beside PyTorch on the CPU.

Both train the benchmark's network (3072-1024-512-10, ReLU, softmax cross-entropy, Adam, float32)
from the same weights on synthetic data. Each phase of a step is timed on its own, step after step,
and the median over the steps is reported in milliseconds per step, with its share of the step:

- fastnn: the batch gather (``take``), the augmentation (flips and shifts, ``augment_images``; the
  benchmark proper does not augment), each layer's forward and backward pass as the library runs
  them, the loss, the optimizer step, and the number correct. Each Dense layer's matrix products
  are also timed alone, on the same arrays and in the same form as ``Dense`` computes them (the
  bias added in the forward one), so that "Dense, minus its products" is its other work (the bias
  gradient, and the bias where the product does not add it).
- PyTorch: the gather (``index_select``), each ``Linear`` and ReLU forward, the loss, the whole
  autograd backward, ``optimizer.step()``; then ``torch.profiler`` over the same steps splits the
  backward into its operators (self CPU time per step).

Phases are timed one after the other, so a phase cannot overlap the next as it may in a free-running
loop; the sum is close to, not equal to, the time of an untimed step (printed too). The two
frameworks take turns, a step each (fastnn first in even steps, PyTorch first in odd ones), so that
a host whose speed drifts during the run (a shared virtual machine's does, by tens of per cent within
minutes) slows both alike and the two columns stay comparable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from bench.harness import cpu_threads, initial_weights, positive_int, positive_ints, synthetic_data, writable_file
from bench.report import LoadMeter, blas, cpu_model, openblas_idle, products
from bench.torch_peer import torch
from fastnn import kernels_cpu, kernels_onednn
from fastnn.atomic import write_atomic
from fastnn.augment import augment_images
from fastnn.backend import get_backend
from fastnn.fused import matmul, take_rows
from fastnn.layers import Dense
from fastnn.network import Network, count_correct
from fastnn.optimizers import Adam

Timings = dict[str, list[float]]


class Clock:
    """Collects the milliseconds of named phases over many steps."""

    def __init__(self) -> None:
        self.ms: Timings = defaultdict(list)

    def time(self, name: str, work: Callable[[], object]) -> object:
        started = time.perf_counter()
        result = work()
        self.ms[name].append((time.perf_counter() - started) * 1e3)
        return result


def dense_products(layer: Dense, x: np.ndarray, grad_out: np.ndarray) -> dict[str, Callable[[], object]]:
    """The products of ``Dense`` on its own arrays, in the form ``Dense`` runs them."""
    weight = layer.params["W"]
    bias = layer.params["b"]
    products = {"x @ W + b": lambda: matmul(x, weight, bias), "dW = x.T @ dy": lambda: matmul(x.T, grad_out)}
    if layer.input_grad:
        products["dx = dy @ W.T"] = lambda: matmul(grad_out, weight.T)
    return products


def fastnn_stepper(sizes, weights, x, y, batch_size: int) -> tuple[Callable[[int], None], Clock, list[float]]:
    """fastnn's step ``step`` (an untimed step, then the same batch phase by phase), its clock and
    the untimed steps' milliseconds."""
    backend = get_backend("cpu")
    network = Network(sizes, backend=backend)
    network.load_state_dict(weights)
    optimizer, rng = Adam(), backend.rng(1)
    clock = Clock()

    def timed_step(index) -> None:
        xb = clock.time("gather (take)", lambda: take_rows(x, index))
        yb = np.take(y, index, axis=0)
        clock.time("augmentation (not in bench)", lambda: augment_images(xb, rng))
        inputs = [xb]
        for i, layer in enumerate(network.layers):
            inputs.append(clock.time(f"fwd {i} {_name(layer)}", lambda layer=layer: layer.forward(inputs[-1], True)))
        logits, loss_fn = inputs[-1], network.loss_fn
        clock.time("loss forward", lambda: loss_fn.forward(logits, yb))
        grad = clock.time("loss backward", loss_fn.backward)
        grads_out = {}
        for i in reversed(range(len(network.layers))):
            grads_out[i] = grad
            grad = clock.time(f"bwd {i} {_name(network.layers[i])}", lambda i=i, g=grad: network.layers[i].backward(g))
        clock.time("count correct", lambda: count_correct(np.argmax(logits, axis=1), yb))
        clock.time("optimizer (Adam)", lambda: optimizer.step(network.param_grads(), 1e-3))
        for i, layer in enumerate(network.layers):
            if isinstance(layer, Dense):
                for label, work in dense_products(layer, inputs[i], grads_out[i]).items():
                    clock.time(f"  product {i}: {label}", work)

    whole: list[float] = []
    order = rng.permutation(x.shape[0])

    def step(number: int) -> None:
        index = order[(number * batch_size) % (x.shape[0] - batch_size) :][:batch_size]
        started = time.perf_counter()  # an untimed step first, to compare the sum of the phases with
        network.train_step(take_rows(x, index), np.take(y, index, axis=0), optimizer, 1e-3)
        whole.append((time.perf_counter() - started) * 1e3)
        timed_step(index)

    return step, clock, whole


def torch_stepper(sizes, weights, x, y, batch_size: int) -> tuple[Callable[[int], None], Clock, list[float], Callable]:
    """PyTorch's step ``step`` (untimed, then phase by phase), its clock, the untimed steps'
    milliseconds, and ``operators(steps)``: torch.profiler's self CPU ms per step of each operator."""
    from torch import nn
    from torch.nn import functional as F

    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(n_in, n_out)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights[f"{2 * i}.W"].T))
            linear.bias.copy_(torch.from_numpy(weights[f"{2 * i}.b"]))
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    clock = Clock()
    whole: list[float] = []

    def step_once(index, timed: Clock | None):
        run = timed.time if timed else (lambda name, work: work())
        xb = run("gather (index_select)", lambda: xt.index_select(0, index))
        yb = yt.index_select(0, index)
        out = xb
        for i, layer in enumerate(model):
            out = run(f"fwd {i} {type(layer).__name__}", lambda layer=layer, out=out: layer(out))
        loss = run("loss forward", lambda: F.cross_entropy(out, yb))
        optimizer.zero_grad(set_to_none=True)
        run("backward (autograd, all layers and loss)", loss.backward)
        with torch.no_grad():
            run("count correct", lambda: (out.argmax(1) == yb).sum())
        run("optimizer (Adam fused)", optimizer.step)

    def batch(number: int):
        return order[(number * batch_size) % (x.shape[0] - batch_size) :][:batch_size]

    def step(number: int) -> None:
        started = time.perf_counter()
        step_once(batch(number), None)
        whole.append((time.perf_counter() - started) * 1e3)
        step_once(batch(number), clock)

    def operators(steps: int) -> Timings:
        found: Timings = defaultdict(list)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for number in range(steps):
                step_once(batch(number), None)
        for event in prof.key_averages():
            found[event.key] = [event.self_cpu_time_total / 1e3 / steps]
        return found

    return step, clock, whole, operators


def interleave(steps: list[Callable[[int], None]], count: int) -> None:
    """``count`` steps of each stepper, taking turns, the first one first in even steps and last in odd ones."""
    for number in range(count):
        for step in steps if number % 2 == 0 else steps[::-1]:
            step(number)


def _after_warmup(timings: Timings) -> Timings:
    return {name: values[2:] for name, values in timings.items()}


def _name(layer) -> str:
    return repr(layer) if isinstance(layer, Dense) else type(layer).__name__


def _table(title: str, timings: Timings, whole: list[float]) -> list[str]:
    medians = {name: statistics.median(values) for name, values in timings.items()}
    total = sum(v for k, v in medians.items() if not k.startswith("  ") and "not in bench" not in k)
    lines = [title, f"  {'phase':44s} {'ms/step':>8s} {'share':>6s}"]
    for name, value in medians.items():
        share = "" if name.startswith("  ") or "not in bench" in name else f"{value / total:6.1%}"
        lines.append(f"  {name:44s} {value:8.3f} {share:>6s}")
    lines.append(f"  {'sum of the phases (benchmark step)':44s} {total:8.3f}")
    lines.append(f"  {'an untimed step (median)':44s} {statistics.median(whole):8.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=positive_ints, default=[256, 1024])
    p.add_argument("--steps", type=positive_int, default=30, help="timed steps per batch size and framework")
    p.add_argument("--threads", type=positive_int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--top", type=positive_int, default=12, help="PyTorch operators listed, by self time")
    p.add_argument(
        "--products",
        choices=("onednn", "numpy"),
        default=None,
        help="the library of fastnn's matrix products (default: the one training would use)",
    )
    p.add_argument("--out", type=writable_file, default=None, help="also write the report to this text file")
    args = p.parse_args(argv)
    if args.products == "onednn" and kernels_onednn.load() is None:
        p.error(f"--products onednn needs oneDNN: {kernels_onednn.why_not()}")
    previous_products = kernels_cpu.set_products(args.products) if args.products else None
    try:
        return _profile(args, argv)
    finally:
        if previous_products:
            kernels_cpu.set_products(previous_products)


def _profile(args: argparse.Namespace, argv: list[str] | None) -> int:
    sizes = [3072, 1024, 512, 10]
    weights = initial_weights(sizes)
    load = LoadMeter()
    with cpu_threads(args.threads):
        lines = [
            "python -m bench.profile " + " ".join(sys.argv[1:] if argv is None else argv),
            f"CPU: {cpu_model()}, {os.cpu_count()} cores; NumPy {np.__version__}, BLAS {blas()}; "
            + (f"torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else "no torch"),
            f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
            f"optimizer engine {kernels_cpu.engine()}; OpenBLAS's idle threads: {openblas_idle()}",
            f"fastnn's products: {products()}",
            "load average at start "
            + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        ]
        for batch_size in args.batch_sizes:
            rows = (args.steps + 3) * batch_size
            x, y = synthetic_data(rows, sizes[0], sizes[-1])
            step, clock, whole = fastnn_stepper(sizes, weights, x, y, batch_size)
            steppers = [step]
            if torch is not None:
                torch_step, torch_clock, torch_whole, operators = torch_stepper(sizes, weights, x, y, batch_size)
                steppers.append(torch_step)
            interleave(steppers, args.steps + 2)  # two warm-up steps each, dropped below
            lines += ["", *_table(f"fastnn on NumPy, batch {batch_size}", _after_warmup(clock.ms), whole[2:])]
            if torch is not None:
                title = f"PyTorch, Adam(fused=True), batch {batch_size}"
                lines += ["", *_table(title, _after_warmup(torch_clock.ms), torch_whole[2:])]
                top = sorted(operators(args.steps).items(), key=lambda kv: -kv[1][0])[: args.top]
                lines.append(f"  torch.profiler, self CPU ms per step, top {args.top} operators:")
                lines += [f"    {name:42s} {values[0]:8.3f}" for name, values in top]
    used = load.result()
    if used:
        lines.append(
            f"\nload during the run: {used['busy_cores']:.2f} cores busy, "
            f"{used['other_cores']:.2f} by other processes; load average at end "
            + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        write_atomic(args.out, text.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
