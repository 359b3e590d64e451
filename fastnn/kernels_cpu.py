"""In-place optimizer updates for NumPy arrays, shared among the CPU's cores; the engine and the
threads they run on, which a training step's elementwise loops (:mod:`fastnn.kernels_loops`) use
too; and which library multiplies NumPy's matrices (:func:`products`: NumPy's BLAS, or oneDNN with
the ``[onednn]`` extra).

Written with array operators, one Adam step on a (3072, 1024) weight makes seven full-size
temporaries and runs on one core. Here the same formulas run in place, in one of two engines:

- ``"numba"`` (with the ``[fast]`` extra installed): one compiled loop per update, which reads each
  array once, keeps the element in registers through all the formula's steps, writes it once,
  the elements shared among the threads. Adam on the default
  network's 3.7 million parameters: 1.8-2.0 ms a step on 2 cores with warm caches (7 ms inside a
  training step, where the moments come from memory), against 11.6 ms for the blocks below.
- ``"numpy"`` (always there): the formulas with ``out=`` into a small scratch buffer, one
  cache-sized block at a time (each block's slices of parameter, gradient, moments and scratch stay
  in the core's cache across the dozen operations), the blocks of a large parameter shared among a
  few threads: NumPy releases the GIL inside each operation, so the threads run on separate cores.

Both do the same float operations in the same order (no fused multiply-add: numba without
``fastmath``), so they give the same bits, and a run may change engine on ``--resume``.

The formulas themselves, and the reference these kernels are tested against, are those of
:mod:`fastnn.optimizers` (``Adam(fused=False)``, ``SGD(fused=False)``); :mod:`fastnn.backend`
hands these kernels out for NumPy arrays (``fused_adam_step``, ``fused_sgd_step``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

BLOCK = 1 << 15
"""Elements updated at a time by one thread: the block's slices of the (up to five) arrays of an
update fill about 640 KiB in float32, which stays in a core's L2 cache; the Python cost of an
operation (about a microsecond) stays small beside its work on the block."""


def _default_threads() -> int:
    """The cores this process may use, at most 8, and at most ``OMP_NUM_THREADS`` where that is a
    whole number (``fastnn experiments`` and ``fastnn tune`` give each worker process its share so)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    told = os.environ.get("OMP_NUM_THREADS", "").strip()
    return max(1, min(8, cores, int(told) if told.isdigit() and int(told) > 0 else cores))


_threads = _default_threads()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


_ENGINES = ("numba", "numpy")
_engine: str | None = None  # chosen at the first update: "numba" where it imports, else "numpy"
_numba: Any = None  # the compiled kernels, once made
_numba_refused: str | None = None  # why this process may not run them (a forked child of one that did)


def engine() -> str:
    """The engine the updates run on: ``"numba"`` (the ``[fast]`` extra) or ``"numpy"``."""
    global _engine
    if _engine is None:
        _engine = "numba" if load_numba() is not None else "numpy"
    return _engine


def set_engine(name: str) -> str:
    """Run the updates on ``name`` (``"numba"`` or ``"numpy"``); returns the previous engine.

    ``"numba"`` needs the ``[fast]`` extra (``pip install 'fastnn[fast]'``). The benchmark and the
    tests use this to compare the two; training takes the default, numba where it is installed.
    """
    global _engine
    if name not in _ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(_ENGINES)}")
    if name == "numba" and load_numba() is None:
        why = _numba_refused or "needs numba: pip install 'fastnn[fast]'"
        raise ValueError(f"the numba engine {why}")
    previous = engine()
    _engine = name
    return previous


def load_numba() -> Any:
    """The compiled kernels (a namespace with ``adam`` and ``sgd``), or None without numba."""
    global _numba
    if _numba is None and _numba_refused is None:
        try:
            from fastnn import kernels_numba
        except Exception:  # not installed, or a numba that refuses this NumPy: the NumPy engine serves
            return None
        _numba = kernels_numba
    return _numba


_PRODUCT_ENGINES = ("onednn", "numpy")
_products: str | None = None  # chosen at the first product: "onednn" where its library loads, else "numpy"


PRODUCTS_SETTING = "FASTNN_PRODUCTS"


def products_setting() -> str | None:
    """The product engine named by the environment variable ``FASTNN_PRODUCTS`` (``onednn`` or
    ``numpy``), or None where it is unset; a ValueError names the problem and the fix."""
    name = os.environ.get(PRODUCTS_SETTING, "").strip()
    if not name:
        return None
    if name not in _PRODUCT_ENGINES:
        raise ValueError(f"{PRODUCTS_SETTING}={name} is not a product engine; set it to onednn or numpy, or unset it")
    _check_available(name, f"{PRODUCTS_SETTING}=onednn, but")
    return name


def _check_available(name: str, refusal: str) -> None:
    """A ValueError, ``refusal`` and why, where the product engine ``name`` cannot run here."""
    if name == "onednn":
        from fastnn import kernels_onednn

        if kernels_onednn.load() is None:
            raise ValueError(f"{refusal} {kernels_onednn.why_not()}")


def products() -> str:
    """The library that multiplies ``Dense``'s float32 matrices: ``"onednn"`` (the ``[onednn]``
    extra, :mod:`fastnn.kernels_onednn`) or ``"numpy"`` (NumPy's ``@``, on its BLAS). The default
    is oneDNN where it is installed; ``FASTNN_PRODUCTS=numpy`` (or ``onednn``) chooses."""
    global _products
    if _products is None:
        chosen = products_setting()
        if chosen is None:
            from fastnn import kernels_onednn

            chosen = "onednn" if kernels_onednn.load() is not None else "numpy"
        _products = chosen
    return _products


def set_products(name: str) -> str:
    """Multiply on ``name`` (``"onednn"`` or ``"numpy"``); returns the previous choice.

    ``"onednn"`` needs the ``[onednn]`` extra (``pip install 'fastnn[onednn]'``). The benchmark and
    the tests use this to compare the two; training takes the default, oneDNN where it is installed.
    """
    global _products
    if name not in _PRODUCT_ENGINES:
        raise ValueError(f"unknown product engine {name!r}; choose one of {', '.join(_PRODUCT_ENGINES)}")
    _check_available(name, "the onednn product engine is not available:")
    previous = products()
    _products = name
    return previous


def matmul() -> Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray] | None:
    """oneDNN's ``a @ b (+ bias)`` (:func:`fastnn.kernels_onednn.matmul`) where :func:`products` is "onednn"."""
    if products() == "onednn":
        from fastnn import kernels_onednn

        return kernels_onednn.matmul
    return None


def threads() -> int:
    """How many threads share an update (the main thread included)."""
    return _threads


def set_threads(count: int) -> int:
    """Share each update among ``count`` threads (1: the calling thread alone); returns the previous count.

    The default is the number of cores this process may use, at most 8 and at most ``OMP_NUM_THREADS``
    where that is set (:func:`_default_threads`). ``python -m bench`` sets it
    together with the BLAS and PyTorch thread counts.
    """
    global _threads, _pool
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {count!r}")
    previous, _threads = _threads, count
    with _pool_lock:
        if _pool is not None and count != previous:
            _pool.shutdown(wait=True)
            _pool = None
    return previous


def _forked() -> None:
    global _pool, _pool_lock, _numba, _numba_refused, _engine
    # a forked child has none of the parent's threads (nor a lock one of them held): it starts afresh
    _pool, _pool_lock = None, threading.Lock()
    if _numba is not None and _numba.LAYER == "omp":  # numba kills a child whose loop starts GNU OpenMP's threads
        _numba, _engine = None, None  # chosen afresh: NumPy's
        _numba_refused = "is not for a process forked from one whose numba loops ran on GNU OpenMP's threads"


def numba_threads_description() -> str:
    """Whose threads the numba engine's loops run on, for ``fastnn info``."""
    numba_kernels = load_numba()
    if numba_kernels is None:
        return "no threads: numba is not in use"
    return "GNU OpenMP's threads" if numba_kernels.LAYER == "omp" else "numba's workqueue threads"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_threads - 1, thread_name_prefix="fastnn-update")
        return _pool


BlockUpdate = Callable[[list[np.ndarray], np.ndarray], None]


def _update(arrays: list[np.ndarray], block_update: BlockUpdate, scratch: dict) -> None:
    """Apply ``block_update(slices, t)`` to matching blocks of ``arrays`` (all of one shape), with
    ``t`` a scratch block of the same size; the blocks are shared among :func:`threads` threads."""
    first = arrays[0]
    if not all(a.flags.c_contiguous for a in arrays):  # rare (a strided view): one pass, full-size scratch
        block_update(arrays, np.empty_like(first))
        return
    flat = [a.reshape(-1) for a in arrays]  # views, as the arrays are contiguous
    size = first.size
    if size == 0:
        return
    parts = min(_threads, -(-size // BLOCK))
    # whole blocks per thread, so that each thread's share starts on a block boundary
    blocks_per_part = -(-size // (BLOCK * parts))
    bounds = [(i * blocks_per_part * BLOCK, min(size, (i + 1) * blocks_per_part * BLOCK)) for i in range(parts)]

    def run(slot: int) -> None:
        start, stop = bounds[slot]
        key = (slot, first.dtype, BLOCK)
        t = scratch.get(key)
        if t is None:
            t = scratch[key] = np.empty(BLOCK, dtype=first.dtype)
        for block_start in range(start, stop, BLOCK):
            block_stop = min(block_start + BLOCK, stop)
            block_update([a[block_start:block_stop] for a in flat], t[: block_stop - block_start])

    if parts == 1:
        run(0)
        return
    futures = [_executor().submit(run, slot) for slot in range(1, parts)]
    run(0)
    for future in futures:
        future.result()


def numba_threads() -> int:
    """numba's loops on :func:`threads` threads (at most the pool numba started with); returns how many."""
    import numba

    count = max(1, min(_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(count)
    return count


def _compiled_ok(arrays: tuple[np.ndarray, ...]) -> bool:
    """Whether the compiled loops take these arrays: contiguous, float32 or float64, one dtype."""
    dtype = arrays[0].dtype
    return dtype in (np.float32, np.float64) and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays)


AdamStep = Callable[[Any, Any, Any, Any, float, float, float, float], None]


def adam_step() -> AdamStep:
    """An in-place Adam update with its own scratch space (use one per parameter)::

        m     <- beta1 * m + (1 - beta1) * grad
        v     <- beta2 * v + (1 - beta2) * grad**2
        param <- param - step_size * m / (sqrt(v) + eps_hat)

    ``step_size`` and ``eps_hat`` carry the bias corrections (see :class:`fastnn.optimizers.Adam`).
    """
    scratch: dict = {}

    def step(param, grad, m, v, beta1, beta2, step_size, eps_hat):
        arrays = (param, grad, m, v)
        if engine() == "numba" and _compiled_ok(arrays):
            scalar = param.dtype.type  # scalars of the arrays' dtype, as NumPy casts Python floats
            flat = [a.reshape(-1) for a in arrays]
            scalars = (scalar(beta1), scalar(beta2), scalar(1.0 - beta1), scalar(1.0 - beta2), scalar(step_size),
                       scalar(eps_hat))  # fmt: skip
            numba_threads()
            _numba.adam(*flat, *scalars)
            return

        def block(arrays, t):
            p, g, mb, vb = arrays
            np.multiply(mb, beta1, out=mb)  # m <- beta1 m + (1 - beta1) g
            np.multiply(g, 1.0 - beta1, out=t)
            np.add(mb, t, out=mb)
            np.multiply(vb, beta2, out=vb)  # v <- beta2 v + (1 - beta2) g^2
            np.multiply(g, g, out=t)
            np.multiply(t, 1.0 - beta2, out=t)
            np.add(vb, t, out=vb)
            np.sqrt(vb, out=t)  # p <- p - step_size m / (sqrt(v) + eps_hat)
            np.add(t, eps_hat, out=t)
            np.divide(mb, t, out=t)
            np.multiply(t, step_size, out=t)
            np.subtract(p, t, out=p)

        _update([param, grad, m, v], block, scratch)

    return step


SGDStep = Callable[[Any, Any, Any, float, float, bool], None]


def sgd_step() -> SGDStep:
    """An in-place SGD update with its own scratch space (use one per parameter)::

        velocity <- momentum * velocity + grad                  (skipped when momentum is 0)
        param    <- param - lr * velocity                        (momentum 0: velocity is grad)
        param    <- param - lr * (grad + momentum * velocity)    (nesterov)

    ``velocity`` is None when ``momentum`` is 0.
    """
    scratch: dict = {}

    def step(param, grad, velocity, lr, momentum, nesterov):
        arrays = (param, grad) if velocity is None else (param, grad, velocity)
        if engine() == "numba" and _compiled_ok(arrays):
            scalar = param.dtype.type
            flat = [a.reshape(-1) for a in arrays]
            velocity_flat, settings = flat[-1], (velocity is not None, scalar(lr), scalar(momentum), bool(nesterov))
            numba_threads()
            _numba.sgd(flat[0], flat[1], velocity_flat, *settings)
            return

        def block(arrays, t):
            p, g = arrays[0], arrays[1]
            if velocity is None:
                np.multiply(g, lr, out=t)
            else:
                vb = arrays[2]
                np.multiply(vb, momentum, out=vb)
                np.add(vb, g, out=vb)
                if nesterov:
                    np.multiply(vb, momentum, out=t)
                    np.add(t, g, out=t)
                    np.multiply(t, lr, out=t)
                else:
                    np.multiply(vb, lr, out=t)
            np.subtract(p, t, out=p)

        _update([param, grad] if velocity is None else [param, grad, velocity], block, scratch)

    return step
