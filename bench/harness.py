"""What every run of the benchmark shares: the workload, the initial weights, the timing loop, the result.

A *runner* is one (framework, device) pair. It has ``label``, ``framework``, ``device``,
``setup(batch_size, weights)`` (build a fresh model from the host weights), ``epoch(rows)`` (train
once over the first ``rows`` examples in a random order; returns (seconds, mean loss), the device
synchronised before the clock starts and after it stops) and ``describe()`` (a dict for the JSON).
:func:`measure` times all runners on one batch size, interleaved (A, B, B, A, A, B, ...), so that a
change in machine load hits each of them alike, and pairs each fastnn epoch with PyTorch's of the same round.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

EPOCH_IMAGES = 50_000
FLOP_NOTE = (
    "GFLOP/s = 6 x parameters x images per second / 1e9: the standard estimate of a dense network's "
    "training cost (2 FLOPs per weight forward, 4 backward), ignoring biases, activations and the optimizer"
)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (batch sizes, steps, repeats, threads, widths)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def positive_ints(text: str) -> list[int]:
    """An argparse type: a comma-separated list of whole numbers of at least 1, e.g. ``1024,512``."""
    values = [positive_int(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} names no number")
    return values


def writable_file(text: str) -> Path:
    """An argparse type: a file that can be written (its folder exists, it is no folder itself),
    checked before minutes of benchmarking rather than after."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; name a file in it")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.parent} is not a folder; create it first")
    if not os.access(path.parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"{path.parent} is not writable")
    return path


@contextlib.contextmanager
def cpu_threads(threads: int, warn: Callable[[str], None] = print) -> Iterator[None]:
    """Run the block with NumPy's BLAS (and any OpenMP pool: oneDNN's, PyTorch's), fastnn's optimizer updates
    (``fastnn.kernels_cpu``) and PyTorch limited to ``threads``; the
    limits are undone at the end, so that a benchmark run in-process (the tests) leaves the thread
    counts, and with them the rounding of BLAS sums, as they were."""
    from bench.torch_peer import torch
    from fastnn import kernels_cpu

    with contextlib.ExitStack() as undo:
        undo.callback(kernels_cpu.set_threads, kernels_cpu.set_threads(threads))  # fastnn's optimizer updates
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            warn("threadpoolctl is missing (pip install threadpoolctl): BLAS threads not limited")
        else:
            undo.enter_context(threadpool_limits(limits=threads))
        if torch is not None:
            undo.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(threads)
        yield


class Runner(Protocol):
    label: str
    framework: str
    device: str
    reference: bool  # the peer that ratios on its device refer to

    def setup(self, batch_size: int, weights: dict[str, np.ndarray]) -> None: ...

    def epoch(self, rows: int) -> tuple[float, float]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class Workload:
    """The network and the run: ``sizes`` from inputs to classes, Adam with ``lr``, float32."""

    sizes: list[int]
    rows: int = EPOCH_IMAGES
    lr: float = 1e-3
    seed: int = 0

    @property
    def parameters(self) -> int:
        return sum(n_in * n_out + n_out for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]))


def synthetic_data(rows: int, features: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random normal inputs (rows, features) float32 and random labels (rows,) int64, on the host."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, features), dtype=np.float32), rng.integers(0, classes, rows, dtype=np.int64)


def initial_weights(sizes: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """He-normal weights and zero biases on the host, in fastnn's naming (``"0.W"`` is (n_in, n_out)).

    Every runner starts from these, so the frameworks train the identical network.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = 2 * i  # Dense, ReLU, Dense, ...: the Dense layers sit at even positions
        weights[f"{layer}.W"] = (rng.standard_normal((n_in, n_out)) * math.sqrt(2.0 / n_in)).astype(np.float32)
        weights[f"{layer}.b"] = np.zeros(n_out, dtype=np.float32)
    return weights


@dataclass
class Result:
    """The timings of one runner on one batch size. ``epoch_ms`` are scaled to 50,000 images."""

    backend: str
    framework: str
    device: str
    batch_size: int
    images_timed: int
    epoch_ms: list[float]
    mean_loss: float
    parameters: int
    reference: bool = False
    ratio_to_torch: float | None = None
    # fastnn's rows: for each PyTorch run on the same device, the median over the rounds of (this
    # epoch / that run's epoch of the same round), which a drift in the machine's speed spares
    paired_ratios: dict[str, float] = field(default_factory=dict)
    # and how far that median can be trusted: a 95% bootstrap interval over the rounds (median_interval)
    paired_intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.epoch_ms)

    @property
    def images_per_s(self) -> float:
        return EPOCH_IMAGES / (self.median_ms / 1e3)

    @property
    def gflops(self) -> float:
        return 6 * self.parameters * self.images_per_s / 1e9

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["epoch_ms"] = {
            "median": self.median_ms,
            "min": min(self.epoch_ms),
            "max": max(self.epoch_ms),
            "all": list(self.epoch_ms),
        }
        out["images_per_s"] = self.images_per_s
        out["gflops"] = self.gflops
        return out


def measure(
    runners: list[Runner],
    workload: Workload,
    batch_size: int,
    epochs: int,
    steps: int | None,
    progress: Any = None,
) -> list[Result]:
    """Warm up every runner with one epoch, then time ``epochs`` epochs of each, interleaved.

    With ``steps`` an "epoch" is ``steps`` batches (the first ``steps * batch_size`` rows), and its
    time is scaled to 50,000 images.
    """
    rows = workload.rows if steps is None else min(workload.rows, steps * batch_size)
    weights = initial_weights(workload.sizes, workload.seed)
    times: dict[str, list[float]] = {r.label: [] for r in runners}
    losses: dict[str, float] = {}
    for runner in runners:
        runner.setup(batch_size, weights)
        runner.epoch(rows)  # warm-up: allocations, BLAS threads, kernel compilation, memory pool
        if progress:
            progress(f"{runner.label} batch {batch_size}: warmed up")
    for i in range(epochs):
        # one round: each runner once, back to back; every other round in reverse order, so that a
        # machine slowing down (or speeding up) through a round weighs on each runner alike
        for runner in runners if i % 2 == 0 else runners[::-1]:
            seconds, losses[runner.label] = runner.epoch(rows)
            times[runner.label].append(seconds * 1e3 * EPOCH_IMAGES / rows)
            if progress:
                progress(f"{runner.label} batch {batch_size}: epoch {i + 1}/{epochs} {times[runner.label][-1]:.0f} ms")
    results = [
        Result(
            backend=r.label,
            framework=r.framework,
            device=r.device,
            batch_size=batch_size,
            images_timed=rows,
            epoch_ms=times[r.label],
            mean_loss=losses[r.label],
            parameters=workload.parameters,
            reference=r.reference,
        )
        for r in runners
    ]
    peers = {res.device: res for res in results if res.reference}
    for res in results:
        peer = peers.get(res.device)
        if peer is not None:
            res.ratio_to_torch = res.median_ms / peer.median_ms
        if res.framework == "fastnn":
            for other in (o for o in results if o.framework == "torch" and o.device == res.device):
                ratios = [a / b for a, b in zip(res.epoch_ms, other.epoch_ms)]
                res.paired_ratios[other.backend] = statistics.median(ratios)
                res.paired_intervals[other.backend] = median_interval(ratios)
    return results


def median_interval(values: list[float], resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """A 95% interval for the median of ``values`` (the rounds' paired ratios): the 2.5th and 97.5th
    percentiles of the medians of ``resamples`` bootstrap resamples (the rounds drawn with
    replacement). A ratio whose interval holds 1.0 is level within what the machine's noise lets this
    many rounds tell; more rounds narrow it. Seeded: the same rounds give the same interval."""
    data = np.asarray(values, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, data.size, size=(resamples, data.size))
    medians = np.median(data[draws], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)
