"""Each runner in a process of its own (``python -m bench --isolate``), as users run the frameworks.

In one process the frameworks share what a process has one copy of: fastnn loads the system's GNU
OpenMP (``libgomp.so.1``) for oneDNN and numba, and PyTorch, loaded after it, multiplies on that
copy too, instead of the ``libgomp.so.1`` its wheel brings (``torch/lib``), and with the idle policy
fastnn chose for it. A user runs one framework per process, so ``--isolate`` starts each runner in a
child process: PyTorch's child never imports fastnn (:func:`_peer_only`), fastnn's is the product's
own set-up. The parent still alternates the runners round by round (:func:`bench.harness.measure`),
one child at a time working while the others wait on their pipe (their OpenMP threads spin a few
milliseconds after their last region, then sleep).

:class:`ProcessRunner` is a runner (``bench.harness.Runner``) that forwards each call to its child
over a pipe, with pickle; the child makes the same synthetic data from the same seed, so nothing
large crosses the pipe but the initial weights.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class ChildFailed(RuntimeError):
    """The child process could not build its runner, or died."""


class ProcessRunner:
    """A runner in a child process. ``spec``: ``framework`` ("fastnn" or "torch"), ``device``
    ("cpu" or "gpu"), ``threads``, ``rows``, ``sizes``, ``lr`` and the runner's own options
    (fastnn: ``engine``, ``products``, ``tf32``; torch: ``adam``, ``reference``)."""

    def __init__(self, spec: dict[str, Any]):
        env = dict(os.environ)
        if spec.get("products"):
            # the library of fastnn's products as `FASTNN_PRODUCTS=... fastnn train` names it: fastnn.openmp
            # picks GNU OpenMP's wait policy from it when the child starts, which set_products later cannot
            from fastnn.kernels_cpu import PRODUCTS_SETTING

            env[PRODUCTS_SETTING] = spec["products"]
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "isolated.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        identity = self._call(spec)
        # backend: fastnn's "numpy on the CPU" or "cupy on <GPU>", known before setup; None for PyTorch
        self.label, self.framework, self.device, self.reference, self.backend = identity

    def _call(self, message: Any) -> Any:
        try:
            pickle.dump(message, self.process.stdin)
            self.process.stdin.flush()
            status, value = pickle.load(self.process.stdout)
        except (BrokenPipeError, EOFError):
            code = self.process.wait()
            raise ChildFailed(f"the benchmark's child process ended (exit status {code}); its error is above") from None
        if status == "error":
            raise ChildFailed(value)
        return value

    def setup(self, batch_size: int, weights: dict[str, Any]) -> None:
        self._call(("setup", batch_size, weights))

    def epoch(self, rows: int) -> tuple[float, float]:
        return self._call(("epoch", rows))

    def describe(self) -> dict[str, Any]:
        return self._call(("describe",))

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self._call(("exit",))
            except ChildFailed:
                pass
            self.process.wait()


def _peer_only() -> None:
    """Make ``bench`` importable without its ``__init__`` (which imports fastnn and loads its OpenMP):
    PyTorch's child then loads only what PyTorch loads."""
    package = types.ModuleType("bench")
    package.__path__ = [str(HERE)]
    sys.modules["bench"] = package


def _build(spec: dict[str, Any]) -> Any:
    framework, device, threads = spec["framework"], spec["device"], spec["threads"]
    sizes, rows, lr = spec["sizes"], spec["rows"], spec["lr"]
    if framework == "torch":
        _peer_only()
        from bench.harness import synthetic_data
        from bench.torch_peer import TorchRunner, torch

        if torch is None:
            raise ChildFailed("PyTorch is not installed (pip install torch)")
        torch.set_num_threads(threads)
        x, y = synthetic_data(rows, sizes[0], sizes[-1])
        return TorchRunner("cuda" if device == "gpu" else "cpu", x, y, sizes, lr, spec["adam"], spec["reference"])
    from bench.fastnn_run import FastnnRunner
    from bench.harness import cpu_threads, synthetic_data
    from fastnn.backend import get_backend

    cpu_threads(threads, lambda message: print(message, file=sys.stderr)).__enter__()  # for the child's life
    x, y = synthetic_data(rows, sizes[0], sizes[-1])
    return FastnnRunner(
        get_backend(device), x, y, sizes, lr, 0, tf32=spec.get("tf32", False),
        engine=spec.get("engine"), products=spec.get("products"),
    )  # fmt: skip


def _serve() -> None:
    """The child: build the runner the first message describes, then answer calls until "exit"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends its children
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # anything printed goes to stderr, not into the pipe
    requests = sys.stdin.buffer

    def reply(status: str, value: Any) -> None:
        pickle.dump((status, value), replies)
        replies.flush()

    try:
        runner = _build(pickle.load(requests))
    except Exception as exc:  # the parent says it in one line
        reply("error", f"{type(exc).__name__}: {exc}")
        return
    backend = runner.backend.describe() if runner.framework == "fastnn" else None
    reply("ok", (runner.label, runner.framework, runner.device, runner.reference, backend))
    while True:
        try:
            message = pickle.load(requests)
        except EOFError:  # the parent ended without a word (interrupted): so does the child
            return
        if message[0] == "exit":
            reply("ok", None)
            return
        try:
            reply("ok", _answer(runner, message))
        except Exception as exc:  # the parent raises it as ChildFailed, in one line
            reply("error", f"{type(exc).__name__}: {exc}")


def _answer(runner: Any, message: tuple) -> Any:
    """What the runner says to one call: ("setup", batch_size, weights), ("epoch", rows), ("describe",)."""
    if message[0] == "setup":
        return runner.setup(*message[1:])
    if message[0] == "epoch":
        return runner.epoch(*message[1:])
    if message[0] == "describe":
        info = runner.describe()
        openmp = sys.modules.get("fastnn.openmp")
        info["process"] = {
            "pid": os.getpid(),
            "fastnn_imported": "fastnn" in sys.modules,
            "openmp": _openmp(),
            "openmp_wait": openmp.wait_policy if openmp else None,  # as fastnn set it up, for its children
        }
        return info
    raise ValueError(f"unknown call {message[0]!r}")


def _openmp() -> list[str]:
    """The OpenMP libraries this process has loaded (``/proc/self/maps``; empty off Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1]}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


if __name__ == "__main__":
    # run by path, Python put bench/ first on the path, where bench/profile.py would hide the standard
    # library's profile: the project's root instead, whence the child imports bench and fastnn as the parent did
    sys.path[0] = str(HERE.parent)
    _serve()
