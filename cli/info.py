"""``fastnn info``: the version, the backends that work here, the BLAS in use, GPU details."""

import os
import platform

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastnn import __version__
from fastnn.backend import available_backends


def blas_description() -> str:
    """The BLAS library NumPy calls and its thread count (threadpoolctl, where installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl to see it)"
    import numpy  # noqa: F401  (loads the BLAS so that threadpoolctl can see it)

    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "none found"
    return "; ".join(
        f"{p.get('internal_api')} {p.get('version')} ({p.get('threading_layer', '?')}, "
        f"{p.get('num_threads')} threads, {p.get('architecture', '?')})"
        for p in pools
    )


def update_engine_description() -> str:
    """Which engine runs Adam's and SGD's updates on NumPy arrays (fastnn.kernels_cpu)."""
    from fastnn import kernels_cpu

    if kernels_cpu.engine() == "numba":
        return f"numba (compiled loops, on {kernels_cpu.numba_threads_description()})"
    return "numpy (blocks of array operations; pip install 'fastnn[fast]' for numba's faster loops)"


def products_description() -> str:
    """Which library multiplies Dense's float32 matrices on the CPU (fastnn.kernels_cpu.products)."""
    from fastnn import kernels_cpu, kernels_onednn

    if kernels_cpu.products() == "onednn":
        return f"oneDNN {kernels_onednn.version()} (on GNU OpenMP's threads)"
    why = kernels_onednn.why_not()  # not installed (with what to install), or not on this system
    return "NumPy's BLAS" + (f" ({why})" if why else "")


def openblas_idle_description() -> str:
    """How long OpenBLAS's idle threads spin after a product (see ``fastnn/__init__.py``)."""
    import fastnn

    value = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    if fastnn.openblas_timeout_set:
        return f"sleep at once (OPENBLAS_THREAD_TIMEOUT={value}, set by fastnn)"
    if value is not None:
        return f"OPENBLAS_THREAD_TIMEOUT={value}, from the environment"
    return (
        "spin about 0.1 s after each product (NumPy was loaded before fastnn); "
        f"export OPENBLAS_THREAD_TIMEOUT={fastnn.OPENBLAS_THREAD_TIMEOUT} to free the cores at once"
    )


@click.command()
def info() -> None:
    """Show the version, which backends run on this machine (and why not), and the BLAS."""
    import numpy

    console = Console()
    console.print(f"fastnn {__version__} · Python {platform.python_version()} · numpy {numpy.__version__}")
    console.print(escape(f"CPU: {platform.machine()}, {os.cpu_count()} cores · BLAS: {blas_description()}"))
    console.print(escape(f"optimizer updates and elementwise loops on the CPU: {update_engine_description()}"))
    console.print(escape(f"matrix products on the CPU: {products_description()}"))
    console.print(escape(f"OpenBLAS's idle threads: {openblas_idle_description()}"))
    from fastnn import openmp

    if openmp.loaded_already():  # by oneDNN's products or numba's loops, above
        console.print(escape(f"GNU OpenMP's idle threads: {openmp.wait_policy}"))
    table = Table("backend", "status", title="backends")
    for name, status in available_backends().items():
        style = "green" if status.startswith("ok") else "yellow"
        table.add_row(name, f"[{style}]{escape(status)}[/{style}]")
    console.print(table)
