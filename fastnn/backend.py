"""The one place where the array namespace ``xp`` is chosen.

A :class:`Backend` bundles a namespace (NumPy, CuPy, or ``array_api_strict`` on a simulated
non-CPU device) with the few things the rest of fastnn needs from it: putting host data on the
device, bringing results back, random numbers made on the device, and a synchronisation point for
honest timing. Everything else in fastnn is written once against ``backend.xp``.

``get_backend("auto" | "cpu" | "gpu" | "strict")`` resolves a name to a backend.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_cupy_namespace, is_numpy_namespace

log = logging.getLogger("fastnn")

GPU_INSTALL_HINT = (
    "install CuPy with its CUDA libraries, `pip install cupy-cuda12x[ctk]` (CUDA 12) or "
    "`pip install cupy-cuda13x[ctk]` (CUDA 13), or use --device cpu"
)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


CUPY_STREAMS = "cupy RandomState, reseeded per stream"
"""The kind of a CuPy :class:`DeviceRNG` state (NumPy's are named by their bit generator, e.g. PCG64)."""


class DeviceRNG:
    """Random numbers made where the arrays live, so that nothing is copied across per batch.

    ``normal(shape, std)`` and ``uniform(shape)`` give float arrays, ``permutation(n)`` an index
    array, all on the backend's device.
    """

    def __init__(self, backend: Backend, seed: int | None):
        self.backend = backend
        if backend.name == "cupy":
            self._seed = int(np.random.SeedSequence(seed).entropy)  # a seed of None draws one
            self._streams = 0
            self._gen = backend.xp.random.RandomState(self._stream_seed())
        else:
            self._gen = np.random.default_rng(seed)

    def normal(self, shape: tuple[int, ...], std: float = 1.0, dtype: str = "float32") -> Any:
        if self.backend.name == "cupy":
            return self._gen.normal(0.0, std, size=shape, dtype=dtype)
        return self.backend.asarray(self._gen.normal(0.0, std, size=shape), dtype)

    def uniform(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        """Uniform on [0, 1)."""
        if self.backend.name == "cupy":
            return self._gen.random_sample(size=shape, dtype=dtype)
        if self.backend.name == "numpy":
            return self._gen.random(size=shape, dtype=np.dtype(dtype))
        return self.backend.asarray(self._gen.random(size=shape), dtype)

    def integers(self, high: int, shape: tuple[int, ...]) -> Any:
        """Integers in [0, high)."""
        if self.backend.name == "cupy":
            # floor(u * high) from uniform floats: CuPy's randint over a range that is not a power of two
            # draws again the values past its limit, and counts them on the host first (a device wait)
            scaled = self._gen.random_sample(size=shape, dtype="float64") * high
            return self.backend.xp.minimum(scaled.astype("int64"), high - 1)  # u * high may round up to high
        return self.backend.asarray(self._gen.integers(0, high, size=shape), "int64")

    def permutation(self, n: int) -> Any:
        if self.backend.name == "cupy":
            return self._gen.permutation(n)
        return self.backend.asarray(self._gen.permutation(n), "int64")

    def get_state(self) -> dict:
        """The generator's state as JSON-able data (to resume a run).

        NumPy's is its bit generator's state, read without changing it. CuPy's ``RandomState``
        keeps its state in cuRAND, whose position the host cannot read back, so there this starts
        a new stream, seeded from the seed and the number of streams so far, and returns those two
        numbers: called at the same points of every run (``Trainer`` does, after each epoch), the
        numbers drawn after it are the same whether the run went on or was resumed from it.
        """
        if self.backend.name == "cupy":
            self._streams += 1
            self._gen.seed(self._stream_seed())
            return {"bit_generator": CUPY_STREAMS, "seed": self._seed, "streams": self._streams}
        return self._gen.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Continue from a state :meth:`get_state` returned (on the same kind of backend)."""
        if self.backend.name == "cupy":
            if state.get("bit_generator") != CUPY_STREAMS:
                raise ValueError(f"a random state of {state.get('bit_generator')!r} cannot go on with CuPy")
            self._seed, self._streams = int(state["seed"]), int(state["streams"])
            self._gen.seed(self._stream_seed())
            return
        self._gen.bit_generator.state = state

    def _stream_seed(self) -> np.uint64:
        """CuPy's seed of the current stream, mixed from the seed and the stream count: 32 bits (as
        NumPy's RandomState takes too, which stands in for CuPy's in tests) in a NumPy uint64, which
        every CuPy's ``seed`` takes: some cast a seed to uint64 with ``casting="safe"``, which NumPy 2
        refuses for a Python int."""
        return np.uint64(np.random.SeedSequence([self._seed, self._streams]).generate_state(1, np.uint32)[0])


@dataclass(frozen=True)
class Backend:
    """An array namespace and the device its arrays live on.

    ``note`` carries a one-line remark for the user (e.g. why "auto" fell back to the CPU).
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
        dtype = None if dtype is None else np.dtype(dtype)
        shared = self.name == "cupy" or not copy  # CuPy copies to the device anyway
        host = np.asarray(host_array, dtype=dtype) if shared else np.array(host_array, dtype=dtype)
        if self.name == "numpy":
            return host
        if self.name == "cupy":
            return self.xp.asarray(host)
        return self.xp.asarray(host, device=self.device)

    def to_numpy(self, array: Any) -> np.ndarray:
        """The one explicit way back to the host."""
        if self.name == "cupy":
            return self.xp.asnumpy(array)
        if self.name == "strict":
            return np.asarray(array.to_device(self.xp.Device("CPU_DEVICE")))
        return np.asarray(array)

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def rng(self, seed: int | None = None) -> DeviceRNG:
        return DeviceRNG(self, seed)

    def synchronize(self) -> None:
        """Wait for queued device work to finish (a no-op on the CPU)."""
        if self.name == "cupy":
            self.xp.cuda.get_current_stream().synchronize()

    @property
    def gather_batches(self) -> int:
        """How many batches the training loop gathers and augments at once (``train_epoch(gather=)``).

        Each array operation costs the host some microseconds before the device runs it, about ten
        on CuPy, and the gather and augmentation of a batch are about thirty operations, mostly on
        small index arrays: on a GPU, where a step of a small batch is bound by the host, doing them
        for 8 batches at once saves most of that. On the CPU a batch's images stay in cache between
        their augmentation and the first layer's product; eight at once took 4% longer a batch
        there (the default network at batch 256, ``python -m bench.overhead --hidden 1024,512
        --batch-size 256 --threads 2``), so the CPU gathers one batch at a time.
        """
        return 8 if self.name == "cupy" else 1

    def set_tf32(self, enabled: bool) -> bool:
        """Let float32 matrix products run on TensorFloat-32 tensor cores (NVIDIA Ampere and newer), or not.

        TF32 rounds each input of a product to 10 mantissa bits (float32 has 23) and accumulates in
        float32. Only CuPy on a GPU of compute capability 8.0 or newer has such a mode: returns True
        there, False (and does nothing) elsewhere.
        """
        if self.name != "cupy" or int(self.xp.cuda.Device().compute_capability) < 80:
            return False
        _cupy_set_tf32(enabled)
        return True

    def describe(self) -> str:
        if self.name == "cupy":
            props = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
            return f"cupy on {props['name'].decode()}"
        if self.name == "strict":
            return "array-api-strict on a simulated device"
        return "numpy on the CPU"


def _cupy_backend() -> Backend:
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
    return Backend("cupy", cupy, cupy.cuda.Device())


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


def _strict_backend() -> Backend:
    try:
        import array_api_strict
    except ImportError as exc:
        raise BackendUnavailable("the strict backend needs array-api-strict: pip install array-api-strict") from exc
    return Backend("strict", array_api_strict, array_api_strict.Device("device1"))


_auto_noted = False


def get_backend(name: str = "auto") -> Backend:
    """Resolve ``"auto" | "cpu" | "gpu" | "strict"`` (also ``"numpy"``, ``"cupy"``) to a backend.

    ``"gpu"`` raises :class:`BackendUnavailable` when CuPy or a GPU is missing; ``"auto"`` then
    falls back to the CPU, logs why once, and records it in ``backend.note``.
    """
    global _auto_noted
    key = name.lower()
    if key in ("cpu", "numpy"):
        return Backend("numpy", np, "cpu")
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
            return Backend("numpy", np, "cpu", note=note)
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


# -- fast paths ------------------------------------------------------------------------------------
# The math core writes each formula once against the array API standard, which has no ``out=`` and
# no fused kernels, so each operation of a formula makes a full-size temporary array. Where a
# namespace can do the same formula in place, that version lives here, looked up by namespace;
# ``None`` means "use the portable formula" (array-api-strict, and any other namespace).

AdamStep = Callable[[Any, Any, Any, Any, float, float, float, float], None]


def fused_adam_step(xp: Any) -> AdamStep | None:
    """An in-place Adam update for arrays of namespace ``xp``, or None where there is none.

    The callable is ``step(param, grad, m, v, beta1, beta2, step_size, eps_hat)`` and does in place::

        m     <- beta1 * m + (1 - beta1) * grad
        v     <- beta2 * v + (1 - beta2) * grad**2
        param <- param - step_size * m / (sqrt(v) + eps_hat)

    with the bias corrections folded into the two scalars by the caller:
    ``step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``, ``eps_hat = eps * sqrt(1 - beta2**t)``.
    Each call returns a new callable with its own scratch space: use one per parameter.
    """
    if is_numpy_namespace(xp):
        return _numpy_adam_step()
    if is_cupy_namespace(xp):
        from fastnn import kernels_cuda  # imports CuPy, which only a CuPy array's namespace may

        return kernels_cuda.adam_step()
    return None


def _numpy_adam_step() -> AdamStep:
    from fastnn import kernels_cpu  # blocks in cache, shared among the cores

    return kernels_cpu.adam_step()


SGDStep = Callable[[Any, Any, Any, float, float, bool], None]


def fused_sgd_step(xp: Any) -> SGDStep | None:
    """An in-place SGD update for arrays of namespace ``xp``, or None where there is none.

    The callable is ``step(param, grad, velocity, lr, momentum, nesterov)`` and does the update of
    :class:`fastnn.optimizers.SGD` in place (``velocity`` None without momentum). Each call returns
    a new callable with its own scratch space: use one per parameter.
    """
    if is_numpy_namespace(xp):
        from fastnn import kernels_cpu

        return kernels_cpu.sgd_step()
    return None
