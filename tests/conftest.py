"""Shared fixtures: every math test runs once per backend.

``numpy`` and ``strict`` (array-api-strict on a simulated non-CPU device) always run; ``cupy`` runs
under the ``gpu`` marker and is skipped where CuPy or a GPU is missing.
"""

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
