"""What the benchmark prints and writes: the machine it ran on, a rich table, the JSON file."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.harness import EPOCH_IMAGES, FLOP_NOTE, Result
from bench.torch_peer import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _described(name: str) -> str:
    """What ``fastnn info`` says of ``name`` ("unknown" where the command line is not installed)."""
    try:
        from fastnn_cli import info
    except ImportError:
        return "unknown"
    return getattr(info, f"{name}_description")()


def openblas_idle() -> str:
    return _described("openblas_idle")


def blas() -> str:
    return _described("blas")


def products() -> str:
    return _described("products")


class LoadMeter:
    """How busy the machine was during the run, and how much of that was other processes.

    Linux only (``/proc/stat``); elsewhere :meth:`result` gives None. ``other_cores`` is the average
    number of cores that processes other than this one (and its ``children``) kept busy: 0 on a quiet machine.
    """

    def __init__(self, children: list[int] | None = None) -> None:
        self.children = children or []  # the benchmark's own child processes (--isolate): counted as its own
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [float(v) for v in f.readline().split()[1:]]
            ticks = os.sysconf("SC_CLK_TCK")
            children = 0.0
            for pid in self.children:
                with open(f"/proc/{pid}/stat") as f:
                    # utime and stime, the 14th and 15th fields, counted after the command's ")"
                    children += sum(float(v) for v in f.read().rsplit(")", 1)[1].split()[11:13]) / ticks
        except (OSError, ValueError):
            return None
        idle = fields[3] + fields[4]  # idle and iowait
        own = os.times()
        return sum(fields) / ticks, idle / ticks, own.user + own.system + children, time.monotonic()

    def result(self) -> dict[str, float] | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        total, idle, own, wall = (b - a for a, b in zip(self.start, end))
        busy = total - idle
        return {
            "seconds": wall,
            "busy_cores": busy / wall,
            "this_process_cores": own / wall,
            "other_cores": max(0.0, busy - own) / wall,
        }


def _update_engine() -> str:
    from fastnn import kernels_cpu

    return kernels_cpu.engine()


def _products() -> str:
    """The library of fastnn's CPU products training would use, with its version."""
    from fastnn import kernels_cpu, kernels_onednn

    return f"onednn {kernels_onednn.version()}" if kernels_cpu.products() == "onednn" else "numpy"


def _onednn_idle() -> str | None:
    """How GNU OpenMP's idle threads wait, which oneDNN's products and PyTorch share (bench/__init__.py)."""
    from fastnn import kernels_onednn, openmp

    return openmp.wait_policy if kernels_onednn.load() is not None else None


def machine_info(threads: int, gpu_name: str | None) -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, library versions, BLAS and threads, GPU, load."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": blas(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "openblas_idle_threads": openblas_idle(),
        "update_engine": _update_engine(),
        "products": _products(),
        "onednn_idle_threads": _onednn_idle(),
        # ONEDNN_MAX_CPU_ISA=AVX2 holds oneDNN's products to an AVX2 CPU's kernels, as OPENBLAS_CORETYPE does OpenBLAS's
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "torch": None if torch is None else torch.__version__,
        "gpu": gpu_name,
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch is not None:
        config = torch.__config__.show().splitlines()
        info["torch_threads"] = torch.get_num_threads()
        mkl = next((line for line in config if "Math Kernel Library" in line), None)
        info["torch_blas"] = "MKL " + mkl.split("Version")[1].split()[0] if mkl and "Version" in mkl else "see torch"
        # the peer's instruction sets: MKL_ENABLE_INSTRUCTIONS=AVX2 and ATEN_CPU_CAPABILITY=avx2 hold it to
        # an AVX2 CPU's kernels, as OPENBLAS_CORETYPE=Haswell holds NumPy's products
        info["torch_mkl_instructions"] = os.environ.get("MKL_ENABLE_INSTRUCTIONS", "(unset: the CPU's best)")
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    try:
        import cupy

        info["cupy"] = cupy.__version__
    except Exception:  # any import failure means "no CuPy" here
        info["cupy"] = None
    return info


def table(results: list[Result], title: str) -> Table:
    grid = Table(title=title, caption=FLOP_NOTE, caption_justify="left")
    for name in ("backend", "batch", "ms/epoch (median)", "min–max", "images/s", "GFLOP/s", "× torch"):
        grid.add_column(name, justify="left" if name == "backend" else "right")
    order = {"torch": 1, "fastnn": 2}
    for r in sorted(results, key=lambda r: (r.device, r.batch_size, 0 if r.reference else order[r.framework])):
        ratio = "–" if r.ratio_to_torch is None else f"{r.ratio_to_torch:.3f}"
        grid.add_row(
            escape(r.backend),
            str(r.batch_size),
            f"{r.median_ms:,.0f}",
            f"{min(r.epoch_ms):,.0f}–{max(r.epoch_ms):,.0f}",
            f"{r.images_per_s:,.0f}",
            f"{r.gflops:,.1f}",
            ratio,
        )
    return grid


def print_report(console: Console, results: list[Result], info: dict[str, Any], status: dict[str, str]) -> None:
    console.print(
        f"CPU: {info['cpu']}, {info['cores_usable']} usable cores, {info['threads']} threads · "
        f"numpy {info['numpy']} BLAS: {info['numpy_blas']}",
        markup=False,
    )
    if info.get("torch"):
        console.print(f"torch {info['torch']} ({info['torch_blas']}), {info['torch_threads']} threads", markup=False)
    for name, state in status.items():
        if not state.startswith("ok"):
            console.print(f"{name}: {state}", style="yellow", markup=False)
    load = info.get("load_during_run")
    if load:
        console.print(
            f"machine load during the run: {load['busy_cores']:.2f} cores busy, "
            f"{load['other_cores']:.2f} of them by other processes",
            markup=False,
        )
    console.print(table(results, f"ms per epoch of {EPOCH_IMAGES:,} images"))
    for line in paired_lines(results):
        console.print(line, markup=False)


def paired_lines(results: list[Result]) -> list[str]:
    """fastnn's epochs over PyTorch's of the same round, the median over the rounds (``Result.paired_ratios``)."""
    lines = []
    for r in results:
        if r.paired_ratios:
            pairs = ", ".join(
                f"{ratio:.3f}x {peer}" + _interval(r.paired_intervals.get(peer), len(r.epoch_ms))
                for peer, ratio in r.paired_ratios.items()
            )
            lines.append(f"{r.backend} batch {r.batch_size}, paired by round: {pairs}")
    if lines:
        lines.insert(0, "round by round (median of this epoch / the peer's epoch of the same round, bootstrapped):")
    return lines


def _interval(interval: tuple[float, float] | None, rounds: int) -> str:
    return "" if interval is None else f" (95% interval {interval[0]:.3f}-{interval[1]:.3f} over {rounds} rounds)"


def markdown_table(results: list[Result]) -> str:
    """The same table in Markdown, for ``bench/results/README.md``."""
    lines = [
        "| backend | batch | ms/epoch (median) | min–max | images/s | GFLOP/s | × torch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = {"torch": 1, "fastnn": 2}
    for r in sorted(results, key=lambda r: (r.device, r.batch_size, 0 if r.reference else order[r.framework])):
        ratio = "–" if r.ratio_to_torch is None else f"{r.ratio_to_torch:.3f}"
        lines.append(
            f"| {r.backend} | {r.batch_size} | {r.median_ms:,.0f} | {min(r.epoch_ms):,.0f}–{max(r.epoch_ms):,.0f} "
            f"| {r.images_per_s:,.0f} | {r.gflops:,.1f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"
