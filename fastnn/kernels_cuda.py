"""In-place optimizer updates for CuPy arrays, as fused CUDA kernels.

Written with array operators, one Adam step makes seven full-size temporaries and launches a kernel
for each operation. Here the whole update is one ``cupy.ElementwiseKernel``, which reads parameter,
gradient and moments once and writes parameter and moments once. This is the GPU's counterpart of
:mod:`fastnn.kernels_cpu` (NumPy's updates, on the CPU's cores).

The formulas, and the reference this kernel is tested against, are those of
:mod:`fastnn.optimizers` (``Adam(fused=False)``); :mod:`fastnn.backend` hands the kernel out for
CuPy arrays (``CupyBackend.fused_adam_step``). SGD has no kernel here: on CuPy it runs as written.

Only :mod:`fastnn.backend` imports this module, and only once a CuPy backend asks for a fused step,
so that importing fastnn never imports CuPy; CuPy itself is imported when the kernel is first made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

AdamStep = Callable[[Any, Any, Any, Any, float, float, float, float], None]

_adam_kernel = None  # compiled by CuPy at its first call, once per dtype


def adam_step() -> AdamStep:
    """An in-place Adam update for CuPy arrays, one CUDA kernel per parameter: the callable is
    ``step(param, grad, m, v, beta1, beta2, step_size, eps_hat)`` of :func:`fastnn.fused.fused_adam_step`.

    ``1 - beta1`` and ``1 - beta2`` come in as scalars worked out on the host in double precision, as
    the NumPy path has them: in float32 inside the kernel, ``1 - float32(0.999)`` is 0.00099998713,
    1.3e-5 off, against 0.0010000000475 for the rounded exact complement.
    """
    global _adam_kernel
    import cupy

    if _adam_kernel is None:
        _adam_kernel = cupy.ElementwiseKernel(
            "T grad, T beta1, T beta2, T one_minus_beta1, T one_minus_beta2, T step_size, T eps_hat",
            "T param, T m, T v",
            """
            m = beta1 * m + one_minus_beta1 * grad;
            v = beta2 * v + one_minus_beta2 * (grad * grad);
            param -= step_size * m / (sqrt(v) + eps_hat);
            """,
            "fastnn_adam",
        )

    def step(param, grad, m, v, beta1, beta2, step_size, eps_hat):
        scalar = param.dtype.type  # typed scalars, so that T is the parameter's dtype
        betas = scalar(beta1), scalar(beta2), scalar(1.0 - beta1), scalar(1.0 - beta2)
        _adam_kernel(grad, *betas, scalar(step_size), scalar(eps_hat), param, m, v)

    return step
