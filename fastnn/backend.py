"""The one place where the array namespace ``xp`` is chosen.

A :class:`Backend` bundles a namespace with the device its arrays live on and the few things the
rest of fastnn needs from it: putting host data on the device, bringing results back, random
numbers made on the device (:mod:`fastnn.rng`), a synchronisation point for honest timing, and the
optimizers' fused updates and the other fast kernels where the namespace has them (which
:mod:`fastnn.fused` hands to the math core). Everything else in fastnn is written once
against ``backend.xp``.

One subclass per namespace holds what differs, so that no other code asks which one it has:
:class:`NumpyBackend` (the CPU), :class:`CupyBackend` (an NVIDIA GPU) and :class:`StrictBackend`
(``array_api_strict`` on a simulated non-CPU device, where GPU mistakes fail on a CPU).
``get_backend("auto" | "cpu" | "gpu" | "strict")`` resolves a name to one of them.

Only this module and :mod:`fastnn.kernels_cuda` touch CuPy, and only once a GPU is asked for:
importing fastnn never imports CuPy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from fastnn.rng import CupyRNG, DeviceRNG, NumpyRNG

log = logging.getLogger("fastnn")

GPU_INSTALL_HINT = (
    "install CuPy with its CUDA libraries, `pip install cupy-cuda12x[ctk]` (CUDA 12) or "
    "`pip install cupy-cuda13x[ctk]` (CUDA 13), or use --device cpu"
)

AdamStep = Callable[[Any, Any, Any, Any, float, float, float, float], None]
SGDStep = Callable[[Any, Any, Any, float, float, bool], None]
FlipShift = Callable[[Any, Any, Any, Any], Any]
MatMul = Callable[[Any, Any, Any], Any]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Backend:
    """An array namespace and the device its arrays live on; one subclass per namespace.

    ``name`` ("numpy", "cupy", "strict") is a label, recorded in checkpoints and results; what the
    backends do differently is in their methods. ``note`` carries a one-line remark for the user
    (e.g. why "auto" fell back to the CPU). The defaults here fit a device that runs each operation
    as it is called and has no fused updates.
    """

    name: str
    xp: ModuleType
    device: Any = None
    note: str | None = field(default=None, compare=False)

    def asarray(self, host_array: Any, dtype: str | None = None, copy: bool = True) -> Any:
        """A copy of a host (NumPy) array or Python scalar/list on the device, optionally as ``dtype``:
        an in-place step on it never changes the caller's array. NumPy's own result, and the NumPy
        array that array-api-strict wraps, would otherwise share the caller's memory (np.array copies).
        ``copy=False`` lets them share it where the result is only ever read (a data set), which saves
        a copy of the data on the CPU."""
        raise NotImplementedError

    def to_numpy(self, array: Any) -> np.ndarray:
        """The one explicit way back to the host."""
        raise NotImplementedError

    def describe(self) -> str:
        """The namespace and its device in a few words, for the user."""
        raise NotImplementedError

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def rng(self, seed: int | None = None) -> DeviceRNG:
        """A random generator seeded with ``seed`` (None draws a seed), whose arrays are on the device."""
        return DeviceRNG(self, seed)

    def synchronize(self) -> None:
        """Wait for queued device work to finish (a no-op where each operation runs as it is called)."""

    @property
    def gather_batches(self) -> int:
        """How many batches the training loop gathers and augments at once (``train_epoch(gather=)``).

        Each array operation costs the host some microseconds before the device runs it, about ten
        on CuPy, and the gather and augmentation of a batch are about thirty operations, mostly on
        small index arrays: on a GPU, where a step of a small batch is bound by the host, doing them
        for 8 batches at once saves most of that (:class:`CupyBackend`). On the CPU a batch's images
        stay in cache between their augmentation and the first layer's product; eight at once took 4%
        longer a batch there (the default network at batch 256, ``python -m bench.overhead --hidden
        1024,512 --batch-size 256 --threads 2``), so the CPU gathers one batch at a time.
        """
        return 1

    def set_tf32(self, enabled: bool) -> bool:
        """Let float32 matrix products run on TensorFloat-32 tensor cores (NVIDIA Ampere and newer), or not.

        TF32 rounds each input of a product to 10 mantissa bits (float32 has 23) and accumulates in
        float32. Only CuPy on a GPU of compute capability 8.0 or newer has such a mode: returns True
        there, False (and does nothing) elsewhere.
        """
        return False

    @staticmethod
    def fused_adam_step() -> AdamStep | None:
        """This namespace's in-place Adam update (:func:`fastnn.fused.fused_adam_step` says what it
        does), or None where there is none and the optimizer runs its formula as written."""
        return None

    @staticmethod
    def fused_sgd_step() -> SGDStep | None:
        """This namespace's in-place SGD update (:func:`fastnn.fused.fused_sgd_step`), or None."""
        return None

    @staticmethod
    def fused_flip_shift() -> FlipShift | None:
        """This namespace's compiled flips and shifts (:func:`fastnn.fused.fused_flip_shift`), or None."""
        return None

    @staticmethod
    def fused_matmul() -> MatMul | None:
        """This namespace's faster matrix product (:func:`fastnn.fused.matmul`), or None (``a @ b``)."""
        return None

    @staticmethod
    def fused_loop(name: str) -> Callable[..., Any] | None:
        """This namespace's compiled loop ``name`` ("relu", "relu_grad", "take_rows", "sum_rows": the
        functions of :mod:`fastnn.fused`), or None where the formula runs. The loop itself may
        answer None for arrays it does not take, and the formula runs then too."""
        return None


def _host_array(host_array: Any, dtype: str | None, copy: bool) -> np.ndarray:
    """``host_array`` as a NumPy array, as ``dtype`` if given: a new array, or with ``copy=False``
    the caller's own where it already is one of that dtype."""
    dtype = None if dtype is None else np.dtype(dtype)
    return np.array(host_array, dtype=dtype) if copy else np.asarray(host_array, dtype=dtype)


@dataclass(frozen=True)
class NumpyBackend(Backend):
    """NumPy on the CPU, where the host is the device."""

    name: str = field(default="numpy", init=False)
    xp: ModuleType = np
    device: Any = "cpu"

    def asarray(self, host_array: Any, dtype: str | None = None, copy: bool = True) -> Any:
        return _host_array(host_array, dtype, copy)

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def describe(self) -> str:
        return "numpy on the CPU"

    def rng(self, seed: int | None = None) -> DeviceRNG:
        return NumpyRNG(self, seed)

    @staticmethod
    def fused_adam_step() -> AdamStep:
        from fastnn import kernels_cpu  # blocks in cache, shared among the cores

        return kernels_cpu.adam_step()

    @staticmethod
    def fused_sgd_step() -> SGDStep:
        from fastnn import kernels_cpu

        return kernels_cpu.sgd_step()

    @staticmethod
    def fused_flip_shift() -> FlipShift | None:
        from fastnn import kernels_cpu, kernels_loops

        return kernels_loops.flip_shift if kernels_cpu.engine() == "numba" else None  # NumPy's: the formula

    @staticmethod
    def fused_matmul() -> MatMul | None:
        from fastnn import kernels_cpu

        return kernels_cpu.matmul()  # oneDNN's where the [onednn] extra is installed

    @staticmethod
    def fused_loop(name: str) -> Callable[..., Any] | None:
        from fastnn import kernels_cpu, kernels_loops

        return getattr(kernels_loops, name) if kernels_cpu.engine() == "numba" else None  # NumPy's: the formula


@dataclass(frozen=True)
class CupyBackend(Backend):
    """CuPy on an NVIDIA GPU (``device``, a ``cupy.cuda.Device``).

    The host queues work on the GPU and goes on while it runs, hence :meth:`synchronize` for timing
    and the batches gathered eight at a time; random numbers are made on the GPU.
    """

    name: str = field(default="cupy", init=False)

    def asarray(self, host_array: Any, dtype: str | None = None, copy: bool = True) -> Any:
        return self.xp.asarray(_host_array(host_array, dtype, copy=False))  # the transfer is the copy

    def to_numpy(self, array: Any) -> np.ndarray:
        return self.xp.asnumpy(array)

    def describe(self) -> str:
        props = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
        return f"cupy on {props['name'].decode()}"

    def rng(self, seed: int | None = None) -> DeviceRNG:
        return CupyRNG(self, seed)

    def synchronize(self) -> None:
        self.xp.cuda.get_current_stream().synchronize()

    @property
    def gather_batches(self) -> int:
        """Eight: the GPU's step of a small batch is bound by the host (:attr:`Backend.gather_batches`)."""
        return 8

    def set_tf32(self, enabled: bool) -> bool:
        if int(self.xp.cuda.Device().compute_capability) < 80:  # before Ampere: no TF32 tensor cores
            return False
        _cupy_set_tf32(enabled)
        return True

    @staticmethod
    def fused_adam_step() -> AdamStep:
        from fastnn import kernels_cuda  # imports CuPy, which only a CuPy backend may

        return kernels_cuda.adam_step()


@dataclass(frozen=True)
class StrictBackend(Backend):
    """``array_api_strict`` on its simulated non-CPU device (``Device("device1")``).

    Mixing its arrays with another device's, or turning them into NumPy arrays, raises, as on CuPy;
    the optimizers run their formulas as written (no fused updates), and random numbers are drawn by
    NumPy and copied over.
    """

    name: str = field(default="strict", init=False)

    def asarray(self, host_array: Any, dtype: str | None = None, copy: bool = True) -> Any:
        return self.xp.asarray(_host_array(host_array, dtype, copy), device=self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array.to_device(self.xp.Device("CPU_DEVICE")))

    def describe(self) -> str:
        return "array-api-strict on a simulated device"


_auto_noted = False


def get_backend(name: str = "auto") -> Backend:
    """Resolve ``"auto" | "cpu" | "gpu" | "strict"`` (also ``"numpy"``, ``"cupy"``) to a backend.

    ``"gpu"`` raises :class:`BackendUnavailable` when CuPy or a GPU is missing; ``"auto"`` then
    falls back to the CPU, logs why once, and records it in ``backend.note``.
    """
    global _auto_noted
    key = name.lower()
    if key in ("cpu", "numpy"):
        return NumpyBackend()
    if key in ("gpu", "cupy", "cuda"):
        return _cupy_backend()
    if key == "strict":
        return _strict_backend()
    if key == "auto":
        try:
            return _cupy_backend()
        except BackendUnavailable as exc:
            why = str(exc).split(";")[0]  # the reason; `fastnn info` gives the fix in full
            note = f"running on the CPU: {why} (`fastnn info` says how to use a GPU)"
            if not _auto_noted:
                log.info(note)
                _auto_noted = True
            return NumpyBackend(note=note)
    raise BackendUnavailable(f"unknown device {name!r}; choose one of auto, cpu, gpu")


def available_backends() -> dict[str, str]:
    """Each backend name mapped to "ok" or the reason it cannot run here."""
    status = {}
    for key in ("numpy", "cupy", "strict"):
        try:
            status[key] = "ok: " + get_backend(key).describe()
        except BackendUnavailable as exc:
            status[key] = f"unavailable: {exc}"
    return status


def gpu_ids() -> list[str]:
    """The GPUs this process may use, by the names CUDA_VISIBLE_DEVICES gives them; [] where CuPy
    or a GPU is missing. Worker processes take one each (``fastnn tune --workers``)."""
    try:
        cupy = get_backend("gpu").xp
    except BackendUnavailable:
        return []
    count = cupy.cuda.runtime.getDeviceCount()
    visible = [name.strip() for name in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if name.strip()]
    return (visible or [str(i) for i in range(count)])[:count]


def _cupy_backend() -> CupyBackend:
    try:
        import cupy
    except ImportError as exc:  # a broken CUDA install raises other ImportErrors than "no module"
        raise BackendUnavailable(f"CuPy is not importable ({exc}); {GPU_INSTALL_HINT}") from exc
    except OSError as exc:  # CuPy 14 makes its kernel cache, ~/.cupy/kernel_cache, when imported
        raise BackendUnavailable(
            f"CuPy could not start ({exc}); set CUPY_CACHE_DIR to a folder you can write, or use --device cpu"
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when no driver is present
        raise BackendUnavailable(f"CuPy found no usable CUDA driver ({exc}); use --device cpu") from exc
    if count < 1:
        raise BackendUnavailable("CuPy found no GPU; use --device cpu")
    _probe_cupy(cupy)
    return CupyBackend(cupy, cupy.cuda.Device())


_cupy_probed = False


def _probe_cupy(cupy: ModuleType) -> None:
    """Run a small kernel and a matrix product once, so that a GPU without the CUDA libraries CuPy
    loads (NVRTC and the CUDA headers for its kernels, cuBLAS for products) is found before training
    starts rather than at its first step: a driver that reports a GPU says nothing of them."""
    global _cupy_probed
    if _cupy_probed:
        return
    try:
        a = cupy.arange(4, dtype=cupy.float32).reshape(2, 2)
        cupy.matmul(a, a + 1).sum().item()  # item() waits for the three kernels and reports their errors
    except Exception as exc:  # CompileException, CUDARuntimeError, or a library that failed to load
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise BackendUnavailable(f"CuPy cannot run on this GPU ({reason}); {GPU_INSTALL_HINT}") from exc
    _cupy_probed = True


def _cupy_set_tf32(enabled: bool) -> None:
    # CuPy reads CUPY_TF32 once, at its first float32 product, and keeps the answer; set_compute_type
    # (not in CuPy's documented API, hence the fallback) changes it at any time.
    os.environ["CUPY_TF32"] = "1" if enabled else "0"
    try:
        from cupy._core import _routines_linalg as linalg

        mode = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
        linalg.set_compute_type(np.float32, mode)
    except (ImportError, AttributeError):  # pragma: no cover - another CuPy layout; the variable still holds
        log.debug("cupy: no set_compute_type; CUPY_TF32 applies from the first float32 product")


def _strict_backend() -> StrictBackend:
    try:
        import array_api_strict
    except ImportError as exc:
        raise BackendUnavailable("the strict backend needs array-api-strict: pip install array-api-strict") from exc
    return StrictBackend(array_api_strict, array_api_strict.Device("device1"))


# -- the namespace of an array, and its fast paths -------------------------------------------------

_NAMESPACES: dict[type, ModuleType] = {}


def namespace(array: Any) -> ModuleType:
    """The array-API namespace of ``array`` (``array_api_compat.array_namespace``), looked up once per type.

    Every layer asks for the namespace of its input in every step. The lookup tries each known
    library in turn and costs about 5 microseconds, which counts where the host is the bottleneck: a
    small batch on a GPU (``python -m bench.overhead``). For NumPy, CuPy and array-api-strict an
    array's type decides its namespace, so the answer is kept per type.
    """
    kind = type(array)
    xp = _NAMESPACES.get(kind)
    if xp is None:
        xp = _NAMESPACES[kind] = array_namespace(array)
    return xp
