"""In-place optimizer updates for NumPy arrays, shared among the CPU's cores.

Written with array operators, one Adam step on a (3072, 1024) weight makes seven full-size
temporaries and runs on one core. Here the same formulas run with ``out=`` into a small scratch
buffer, one cache-sized block at a time (each block's slices of parameter, gradient, moments and
scratch stay in the core's cache across the dozen operations, so memory is read and written about
once per array), and the blocks of a large parameter are shared among a few threads: NumPy
releases the GIL inside each operation, so the threads run on separate cores.

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

_threads = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def threads() -> int:
    """How many threads share an update (the main thread included)."""
    return _threads


def set_threads(count: int) -> int:
    """Share each update among ``count`` threads (1: the calling thread alone); returns the previous count.

    The default is the number of cores this process may use, at most 8. ``python -m bench`` sets it
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


def _forget_pool() -> None:
    global _pool, _pool_lock
    # a forked child has none of the parent's threads (nor a lock one of them held): it starts afresh
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


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
