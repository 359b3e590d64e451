"""Two optimizer steps against values worked out by hand in each test."""

import math

import numpy as np
import pytest

from fastnn.optimizers import SGD, Adam


def _run(backend, optimizer, grads, lr, p0=1.0):
    param = backend.asarray([p0, -p0], "float64")
    for g in grads:
        optimizer.step([("p", param, backend.asarray([g, -g], "float64"))], lr)
    return backend.to_numpy(param)


def test_sgd_two_steps(backend):
    # 1.0 - 0.1*0.5 = 0.95; 0.95 - 0.1*0.2 = 0.93
    np.testing.assert_allclose(_run(backend, SGD(), [0.5, 0.2], 0.1), [0.93, -0.93], rtol=1e-14)


def test_sgd_momentum_two_steps(backend):
    # v1 = 0.5, p1 = 1 - 0.05 = 0.95; v2 = 0.9*0.5 + 0.2 = 0.65, p2 = 0.95 - 0.065 = 0.885
    np.testing.assert_allclose(_run(backend, SGD(momentum=0.9), [0.5, 0.2], 0.1), [0.885, -0.885], rtol=1e-14)


def test_sgd_nesterov_two_steps(backend):
    # v1 = 0.5, p1 = 1 - 0.1*(0.5 + 0.45) = 0.905; v2 = 0.65, p2 = 0.905 - 0.1*(0.2 + 0.585) = 0.8265
    result = _run(backend, SGD(momentum=0.9, nesterov=True), [0.5, 0.2], 0.1)
    np.testing.assert_allclose(result, [0.8265, -0.8265], rtol=1e-14)


def test_sgd_does_not_alias_the_gradient(backend):
    optimizer = SGD(momentum=0.5)
    param, grad = backend.asarray([1.0], "float64"), backend.asarray([1.0], "float64")
    optimizer.step([("p", param, grad)], 0.1)
    optimizer.step([("p", param, grad)], 0.1)
    np.testing.assert_allclose(backend.to_numpy(grad), [1.0])


def test_adam_two_steps(backend):
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.01
    p, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([0.5, -0.3], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
    result = _run(backend, Adam(b1, b2, eps), [0.5, -0.3], lr)
    np.testing.assert_allclose(result, [p, -p], rtol=1e-12)
    # first step of Adam moves every coordinate by about lr, whatever the gradient's size
    assert abs(_run(backend, Adam(), [1e-4], lr)[0] - (1 - lr)) < 1e-6


def test_adam_tracks_parameters_by_name(backend):
    optimizer = Adam()
    a, b = backend.asarray([1.0], "float64"), backend.asarray([1.0], "float64")
    optimizer.step([("a", a, backend.asarray([1.0], "float64")), ("b", b, backend.asarray([-1.0], "float64"))], 0.1)
    assert set(optimizer.m) == {"a", "b"}
    np.testing.assert_allclose(backend.to_numpy(a), [0.9], rtol=1e-6)
    np.testing.assert_allclose(backend.to_numpy(b), [1.1], rtol=1e-6)


@pytest.mark.parametrize("make", [lambda: SGD(momentum=1.0), lambda: SGD(nesterov=True), lambda: Adam(beta1=1.0)])
def test_bad_hyperparameters_are_rejected(make):
    with pytest.raises(ValueError):
        make()
