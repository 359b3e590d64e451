"""Adam's and SGD's updates as compiled loops (numba), for :mod:`fastnn.kernels_cpu`.

Each loop reads every array once and writes the updated ones once, with the element held in
registers through the formula's steps, the elements shared among the threads (``prange``) on
numba's ``workqueue`` pool. (Not its OpenMP pool: those threads spin after each loop, waiting for
the next, and took the cores from the BLAS threads of the matrix products that follow, so that an
epoch was 28% slower instead of faster. Nor plain loops split among Python threads: numba does not
vectorize those, about 3x slower.)

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

# numba's own thread pool, whose idle threads wait on a condition, not its OpenMP layer, whose
# threads spin after each loop and took the cores from the BLAS threads of the products that follow
numba.config.THREADING_LAYER = "workqueue"


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
