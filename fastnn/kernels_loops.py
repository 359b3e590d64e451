"""A training step's elementwise work on all the CPU's cores, as the numba engine's compiled loops
(:mod:`fastnn.kernels_numba`): the augmentation's flips and shifts, ReLU forward and backward, the
batch gather and the bias gradient. NumPy runs each of these on one core.

Each function gives the bits of the formula it stands for (in :mod:`fastnn.fused`, which calls
these through ``NumpyBackend.fused_loop``), and answers None for arrays its loop does not take
(:func:`_loop_ok`), where the formula runs. The engine and the thread count are
:mod:`fastnn.kernels_cpu`'s, which the optimizer updates use too.
"""

from __future__ import annotations

import numpy as np

from fastnn import kernels_cpu


def _compiled():
    """numba's kernels (:mod:`fastnn.kernels_numba`), its loops set to :func:`kernels_cpu.threads` threads."""
    kernels_cpu.numba_threads()
    return kernels_cpu.load_numba()


def flip_shift(x: np.ndarray, flip: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """CIFAR rows ``x`` (batch, 3072) flipped and shifted as :func:`fastnn.augment.augment_images`
    says, by the numba engine's compiled loop (one image per iteration, on all threads): the same
    values as the formula there, which builds a (batch, 3072) index array and gathers through it.
    Only for the numba engine (``NumpyBackend.fused_flip_shift`` hands it out then)."""
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:  # the loop indexes rows of 3072 values unchecked
        raise ValueError(f"flips and shifts need rows of 32x32 colour images (3072 values), got shape {x.shape}")
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    flip, dy, dx = np.asarray(flip, np.bool_), np.asarray(dy, np.int64), np.asarray(dx, np.int64)
    if not flip.shape == dy.shape == dx.shape == (x.shape[0],):
        raise ValueError(f"one flip and one shift (dy, dx) per image: {x.shape[0]} each, got {flip.shape}, "
                         f"{dy.shape}, {dx.shape}")  # fmt: skip
    _compiled().flip_shift(x, flip, dy, dx, out)
    return out


PARALLEL_MIN = 1 << 15
"""Elements below which the elementwise loops below leave the work to NumPy: starting the threads
of a loop costs some microseconds, more than a small array's work."""


def _loop_ok(*arrays: np.ndarray) -> bool:
    """Whether the numba engine's elementwise loops take these arrays: numba engine, one float dtype,
    contiguous, one shape, large enough to share among the threads."""
    first = arrays[0]
    return (
        kernels_cpu.engine() == "numba"
        and first.dtype in (np.float32, np.float64)
        and first.size >= PARALLEL_MIN
        and all(a.dtype == first.dtype and a.shape == first.shape and a.flags.c_contiguous for a in arrays)
    )


def relu(x: np.ndarray) -> np.ndarray | None:
    """``maximum(x, 0)`` as one loop on all threads, the same bits as NumPy's (``ReLU.forward``'s
    formula); None where the loop does not apply (:func:`_loop_ok`) and the formula runs."""
    if not _loop_ok(x):
        return None
    out = np.empty_like(x)
    _compiled().relu(x.reshape(-1), out.reshape(-1), x.dtype.type(0))
    return out


def relu_grad(grad: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """``grad * [y > 0]`` as one loop on all threads, the same bits as ``ReLU.backward``'s formula;
    None where the loop does not apply and the formula runs."""
    if not _loop_ok(grad, y):
        return None
    out = np.empty_like(grad)
    dtype = grad.dtype.type
    _compiled().relu_grad(grad.reshape(-1), y.reshape(-1), out.reshape(-1), dtype(1), dtype(0))
    return out


def take_rows(x: np.ndarray, index: np.ndarray) -> np.ndarray | None:
    """``take(x, index, axis=0)`` for a 2-D ``x``, its rows copied on all threads (NumPy's copies on
    one); None where the loop does not apply (also for indices that are negative or out of range,
    whose meaning or error NumPy gives) and NumPy's ``take`` runs."""
    if (
        x.ndim != 2
        or index.ndim != 1
        or index.dtype.kind not in "iu"
        or not _loop_ok(x)
        or index.size * x.shape[1] < PARALLEL_MIN
        or index.size == 0
        or index.min() < 0
        or index.max() >= x.shape[0]
    ):
        return None
    out = np.empty((index.size, x.shape[1]), dtype=x.dtype)
    _compiled().take_rows(x, index, out)
    return out


def sum_rows(x: np.ndarray) -> np.ndarray | None:
    """``sum(x, axis=0)`` for a 2-D ``x`` (a bias gradient), its columns shared among the threads,
    each column summed in NumPy's order, so with its bits; None where the loop does not apply (also
    for fewer than 16 columns a thread) and NumPy's sum runs."""
    if x.ndim != 2 or not _loop_ok(x):
        return None
    threads = kernels_cpu.numba_threads()
    if x.shape[1] < 16 * threads:
        return None
    out = np.empty(x.shape[1], dtype=x.dtype)
    width = -(-x.shape[1] // threads)
    width = -(-width // 16) * 16  # whole 64-byte lines of float32 to each thread
    kernels_cpu.load_numba().sum_rows(x, out, width, x.dtype.type(0))
    return out
