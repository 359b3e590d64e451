"""Adam's and SGD's updates as compiled loops (numba), for :mod:`fastnn.kernels_cpu`.

Each loop reads every array once and writes the updated ones once, with the element held in
registers through the formula's steps, and splits the elements among the threads (``prange``).
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

PARALLEL_FROM = 1 << 15
"""Arrays this long or longer are shared among the threads; shorter ones (biases) run on one,
where starting the threads would cost more than the work."""


@numba.njit(cache=True)
def _adam_range(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, eps_hat, start, stop):
    for i in range(start, stop):
        gi = g[i]
        mi = m[i] * beta1 + gi * one_minus_beta1  # m <- beta1 m + (1 - beta1) g
        vi = v[i] * beta2 + (gi * gi) * one_minus_beta2  # v <- beta2 v + (1 - beta2) g^2
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - (mi / (np.sqrt(vi) + eps_hat)) * step_size  # p <- p - step m / (sqrt(v) + eps)


@numba.njit(parallel=True, cache=True)
def _adam_parallel(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, eps_hat, parts):
    chunk = (p.size + parts - 1) // parts
    for part in numba.prange(parts):
        _adam_range(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, eps_hat,
                    part * chunk, min(p.size, (part + 1) * chunk))


def adam(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, eps_hat, threads):
    """Adam's update of the flat arrays ``p``, ``m``, ``v`` in place; scalars of their dtype."""
    parts = min(threads, numba.config.NUMBA_NUM_THREADS)
    if p.size < PARALLEL_FROM or parts == 1:
        _adam_range(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, eps_hat, 0, p.size)
        return
    numba.set_num_threads(parts)
    _adam_parallel(p, g, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, eps_hat, parts)


@numba.njit(cache=True)
def _sgd_range(p, g, velocity, has_velocity, lr, momentum, nesterov, start, stop):
    for i in range(start, stop):
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
def _sgd_parallel(p, g, velocity, has_velocity, lr, momentum, nesterov, parts):
    chunk = (p.size + parts - 1) // parts
    for part in numba.prange(parts):
        _sgd_range(p, g, velocity, has_velocity, lr, momentum, nesterov, part * chunk, min(p.size, (part + 1) * chunk))


def sgd(p, g, velocity, has_velocity, lr, momentum, nesterov, threads):
    """SGD's update of the flat arrays in place; ``velocity`` is ignored (pass any array of the
    same shape) when ``has_velocity`` is False."""
    parts = min(threads, numba.config.NUMBA_NUM_THREADS)
    if p.size < PARALLEL_FROM or parts == 1:
        _sgd_range(p, g, velocity, has_velocity, lr, momentum, nesterov, 0, p.size)
        return
    numba.set_num_threads(parts)
    _sgd_parallel(p, g, velocity, has_velocity, lr, momentum, nesterov, parts)
