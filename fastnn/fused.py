"""The math core's door to each backend's fast kernels: one function per operation, which hands
out (or runs) the backend's own version where it has one and the portable formula where it has not.

The math core writes each formula once against the array API standard, which has no ``out=`` and
no fused kernels, so each operation of a formula makes a full-size temporary array, and NumPy runs
each on one core. Where a namespace can do better (NumPy with the ``[fast]`` and ``[onednn]``
extras: :mod:`fastnn.kernels_cpu`, :mod:`fastnn.kernels_loops`; CuPy: :mod:`fastnn.kernels_cuda`),
its backend class (:mod:`fastnn.backend`) hands that version out; ``None`` means "use the portable
formula" (array-api-strict, and any other namespace). The layers and optimizers know their arrays,
not the backend, so these functions look the backend class up by namespace.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import is_cupy_namespace, is_numpy_namespace

from fastnn.backend import AdamStep, Backend, CupyBackend, FlipShift, NumpyBackend, SGDStep, namespace


def fused_adam_step(xp: Any) -> AdamStep | None:
    """An in-place Adam update for arrays of namespace ``xp``, or None where there is none.

    The callable is ``step(param, grad, m, v, beta1, beta2, step_size, eps_hat)`` and does in place::

        m     <- beta1 * m + (1 - beta1) * grad
        v     <- beta2 * v + (1 - beta2) * grad**2
        param <- param - step_size * m / (sqrt(v) + eps_hat)

    with the bias corrections folded into the two scalars by the caller:
    ``step_size = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``, ``eps_hat = eps * sqrt(1 - beta2**t)``.
    Each call returns a new callable with its own scratch space: use one per parameter.
    NumPy's is :func:`fastnn.kernels_cpu.adam_step`, CuPy's :func:`fastnn.kernels_cuda.adam_step`.
    """
    return _backend_class(xp).fused_adam_step()


def fused_sgd_step(xp: Any) -> SGDStep | None:
    """An in-place SGD update for arrays of namespace ``xp``, or None where there is none.

    The callable is ``step(param, grad, velocity, lr, momentum, nesterov)`` and does the update of
    :class:`fastnn.optimizers.SGD` in place (``velocity`` None without momentum). Each call returns
    a new callable with its own scratch space: use one per parameter. Only NumPy has one
    (:func:`fastnn.kernels_cpu.sgd_step`).
    """
    return _backend_class(xp).fused_sgd_step()


def _backend_class(xp: Any) -> type[Backend]:
    """The backend class of namespace ``xp``; the base class, which has no fused updates, for any
    namespace but NumPy's and CuPy's."""
    if is_numpy_namespace(xp):
        return NumpyBackend
    if is_cupy_namespace(xp):
        return CupyBackend
    return Backend


def fused_flip_shift(xp: Any) -> FlipShift | None:
    """Random flips and shifts of CIFAR rows as one compiled loop for arrays of namespace ``xp``, or
    None where there is none and :func:`fastnn.augment.augment_images` runs its formula. The callable
    is ``flip_shift(x, flip, dy, dx)`` and returns the new rows; only NumPy with the numba engine has
    one (:func:`fastnn.kernels_loops.flip_shift`)."""
    return _backend_class(xp).fused_flip_shift()


def matmul(a: Any, b: Any, bias: Any = None) -> Any:
    """``a @ b``, plus ``bias`` added to each row where given; for NumPy's float32 matrices with the
    ``[onednn]`` extra, by oneDNN (:mod:`fastnn.kernels_onednn`: the same product, faster than
    OpenBLAS on AVX-512 CPUs, the bias added inside the product where it can), chosen by
    :func:`fastnn.kernels_cpu.products`. ``Dense`` makes its three products through this."""
    fast = _backend_class(namespace(a)).fused_matmul()
    if fast is not None:
        return fast(a, b, bias)
    out = a @ b
    if bias is not None:
        out += bias  # in place: one (batch, n_out) array fewer
    return out


def _loop(name: str, *arrays: Any) -> Any:
    """The compiled loop ``name``'s answer for ``arrays`` (:meth:`Backend.fused_loop`), or None."""
    fast = _backend_class(namespace(arrays[0])).fused_loop(name)
    return None if fast is None else fast(*arrays)


def relu(x: Any) -> Any:
    """``maximum(x, 0)``; for NumPy's large float arrays with the numba engine, one loop on all the
    cores (:func:`fastnn.kernels_loops.relu`: NumPy's runs on one), the same bits. ``ReLU`` uses it."""
    y = _loop("relu", x)
    return namespace(x).maximum(x, 0.0) if y is None else y


def relu_grad(grad: Any, y: Any) -> Any:
    """``grad * [y > 0]``, the mask as 0.0 and 1.0 (:class:`fastnn.layers.ReLU` says why not
    ``where``); on NumPy with the numba engine one loop on all the cores, the same bits."""
    out = _loop("relu_grad", grad, y)
    return grad * namespace(grad).astype(y > 0, grad.dtype) if out is None else out


def take_rows(x: Any, index: Any) -> Any:
    """``take(x, index, axis=0)``: the training loop's batch gather; on NumPy with the numba engine
    the rows of a 2-D ``x`` are copied on all the cores (:func:`fastnn.kernels_loops.take_rows`)."""
    rows = _loop("take_rows", x, index)
    return namespace(x).take(x, index, axis=0) if rows is None else rows


def sum_rows(x: Any) -> Any:
    """``sum(x, axis=0)`` of a 2-D ``x``: ``Dense``'s bias gradient; on NumPy with the numba engine
    the columns are shared among the cores (:func:`fastnn.kernels_loops.sum_rows`), the same bits."""
    total = _loop("sum_rows", x)
    return namespace(x).sum(x, axis=0) if total is None else total
