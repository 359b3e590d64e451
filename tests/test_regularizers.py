import numpy as np
import pytest
from _util import numerical_gradient, relative_error

from fastnn.regularizers import L2


def test_l2_penalty_and_gradient(backend):
    w = np.random.default_rng(0).normal(size=(4, 3))
    reg = L2(0.3)
    penalty = float(backend.to_numpy(reg.penalty([backend.asarray(w, "float64")])))
    np.testing.assert_allclose(penalty, 0.15 * np.sum(w**2), rtol=1e-12)

    def f(a):
        return float(backend.to_numpy(reg.penalty([backend.asarray(a, "float64")])))

    analytic = backend.to_numpy(reg.gradient(backend.asarray(w, "float64")))
    assert relative_error(analytic, numerical_gradient(f, w)) < 1e-6


def test_zero_strength_costs_nothing():
    assert L2(0.0).penalty([]) == 0.0


def test_negative_strength_is_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        L2(-1e-3)
