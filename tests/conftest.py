"""Shared fixtures: every math test runs once per backend.

``numpy`` and ``strict`` (array-api-strict on a simulated non-CPU device) always run; ``cupy`` runs
under the ``gpu`` marker and is skipped where CuPy or a GPU is missing.
"""

import sys

import pytest

from fastnn.backend import BackendUnavailable, get_backend

BACKENDS = [
    "numpy",
    "strict",
    pytest.param("cupy", marks=pytest.mark.gpu),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    try:
        return get_backend(request.param)
    except BackendUnavailable as exc:
        pytest.skip(f"{request.param} backend unavailable here: {str(exc).split(';')[0]}")


@pytest.fixture(autouse=True)
def full_float32_products():
    """TF32 is a process-wide CuPy setting: a test that turns it on (``fastnn train --tf32``) must not
    leave it on for the tests after it, which compare CuPy with NumPy in float32."""
    yield
    if "cupy" in sys.modules:
        try:
            get_backend("gpu").set_tf32(False)
        except BackendUnavailable:
            pass


@pytest.fixture(params=["numpy", "numba"])
def update_engine(request):
    """Each engine of the CPU optimizer kernels (fastnn.kernels_cpu) in turn; numba's is skipped
    where the ``[fast]`` extra is not installed. The engine in use before is restored after."""
    from fastnn import kernels_cpu

    try:
        previous = kernels_cpu.set_engine(request.param)
    except ValueError as exc:
        pytest.skip(str(exc))
    yield request.param
    kernels_cpu.set_engine(previous)
