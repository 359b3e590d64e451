"""Adam's and SGD's updates, and a step's elementwise work, as compiled loops (numba), for
:mod:`fastnn.kernels_cpu` and :mod:`fastnn.kernels_loops`.

Each loop reads every array once and writes the result once, with the element held in registers
through the formula's steps, the elements shared among the threads (``prange``). The threads are
GNU OpenMP's (numba's ``omp`` layer), the pool that oneDNN's products use too; its idle threads
spin a while where oneDNN multiplies (they start its next product at once) and sleep at once where
OpenBLAS's threads multiply beside them (spinning, they took the cores from those, and an epoch was
28% slower instead of faster): :mod:`fastnn.openmp`. Where GNU OpenMP is not on the
system, numba's own ``workqueue`` pool: its threads sleep too, but it starts a loop in about 30 us,
and a loop over memory, such as ReLU's, ran no faster on two threads than on one there (0.57 ms on
1024 x 1024, against 0.26 ms on GNU OpenMP's two threads and PyTorch's 0.26 ms). Not plain loops
split among Python threads: numba does not vectorize those, about 3x slower.

The steps are those of :mod:`fastnn.optimizers` (the plain formulas, which the tests compare these
loops against) in the same order as the NumPy engine of :mod:`fastnn.kernels_cpu`, and without
``fastmath`` numba fuses no multiply-add, so both engines give the same bits.

Importing this module needs numba (the ``[fast]`` extra); :mod:`fastnn.kernels_cpu` falls back to
its NumPy engine where that import fails. Each loop is compiled at its first call for the dtype it
is given (about a second) and kept in numba's cache on disk for later runs.
"""

from __future__ import annotations

import numba
import numpy as np

from fastnn import openmp

# GNU OpenMP's pool, shared with oneDNN, its idle threads as fastnn.openmp chose; else numba's own
LAYER = "omp" if openmp.load() else "workqueue"
numba.config.THREADING_LAYER = LAYER


@numba.njit(parallel=True, cache=True)
def adam(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, eps_hat):
    """Adam's update of the flat arrays ``p``, ``m``, ``v`` in place, shared among the threads
    (``prange``: numba also knows the arrays' elements apart there, so it uses the SIMD units)."""
    for i in numba.prange(p.size):
        gi = g[i]
        mi = m[i] * beta1 + gi * one_minus_beta1  # m <- beta1 m + (1 - beta1) g
        vi = v[i] * beta2 + (gi * gi) * one_minus_beta2  # v <- beta2 v + (1 - beta2) g^2
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - (mi / (np.sqrt(vi) + eps_hat)) * step_size  # p <- p - step m / (sqrt(v) + eps)


@numba.njit(parallel=True, cache=True)
def sgd(p, g, velocity, has_velocity, lr, momentum, nesterov):
    """SGD's update of the flat arrays in place, shared among the threads; ``velocity`` is ignored
    (pass any array of the same shape) when ``has_velocity`` is False."""
    for i in numba.prange(p.size):
        gi = g[i]
        if not has_velocity:
            t = gi * lr  # p <- p - lr g
        else:
            vi = velocity[i] * momentum + gi  # v <- momentum v + g
            velocity[i] = vi
            if nesterov:
                t = (vi * momentum + gi) * lr  # p <- p - lr (g + momentum v)
            else:
                t = vi * lr  # p <- p - lr v
        p[i] = p[i] - t


@numba.njit(parallel=True, cache=True)
def flip_shift(x, flip, dy, dx, out):
    """``out[b]`` = image ``b`` of ``x`` (rows of three 32x32 planes) mirrored where ``flip[b]`` and
    moved by ``(dy[b], dx[b])`` pixels, 0 where the source falls outside: output pixel (r, c) is input
    pixel (r + dy, c' + dx), c' = 31 - c if flipped else c (:func:`fastnn.augment.augment_images`).
    One image per iteration, shared among the threads; a row whose source row is outside is zeros,
    and the flip is decided per image, outside the loop over a row (4x faster than per pixel).
    Values are copied, so the bits are the formula's."""
    for b in numba.prange(x.shape[0]):
        flipped, shift_row, shift_col = flip[b], dy[b], dx[b]
        for plane in range(3):
            for r in range(32):
                target = plane * 1024 + r * 32
                source_row = r + shift_row
                if source_row < 0 or source_row >= 32:
                    for c in range(32):
                        out[b, target + c] = 0
                    continue
                source = plane * 1024 + source_row * 32
                if flipped:
                    for c in range(32):
                        col = 31 - c + shift_col
                        out[b, target + c] = x[b, source + col] if 0 <= col < 32 else 0
                else:
                    for c in range(32):
                        col = c + shift_col
                        out[b, target + c] = x[b, source + col] if 0 <= col < 32 else 0


@numba.njit(parallel=True, cache=True)
def relu(x, out, zero):
    """``out = max(x, 0)`` over flat arrays, with NumPy's bits: +0.0 for -0.0, NaN kept."""
    for i in numba.prange(x.size):
        xi = x[i]
        out[i] = xi if xi > zero or np.isnan(xi) else zero


@numba.njit(parallel=True, cache=True)
def relu_grad(grad, y, out, one, zero):
    """``out = grad * [y > 0]`` over flat arrays: the mask as 1.0 or 0.0, multiplied in as the formula does."""
    for i in numba.prange(grad.size):
        out[i] = grad[i] * (one if y[i] > zero else zero)


@numba.njit(parallel=True, cache=True)
def take_rows(x, index, out):
    """``out[r] = x[index[r]]`` for the rows of 2-D arrays, the rows shared among the threads; the
    indices must be in range (unchecked here)."""
    for r in numba.prange(index.size):
        out[r, :] = x[index[r], :]


@numba.njit(parallel=True, cache=True)
def sum_rows(x, out, width, zero):
    """``out = sum(x, axis=0)`` for a 2-D ``x``, each thread summing ``width`` columns (the last
    fewer) into a row of its own, from ``zero``, row after row: NumPy's order, so its bits."""
    rows, columns = x.shape
    for part in numba.prange((columns + width - 1) // width):
        first, stop = part * width, min(part * width + width, columns)
        total = np.full(stop - first, zero)  # the thread's own: numba vectorizes the adds into it
        for i in range(rows):
            row = x[i, first:stop]
            for j in range(stop - first):
                total[j] += row[j]
        out[first:stop] = total
