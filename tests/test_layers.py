"""Every layer's backward pass against central finite differences, on every backend."""

import numpy as np
import pytest
from _util import numerical_gradient, relative_error

from fastnn.layers import Dense, Dropout, LeakyReLU, ReLU, Sigmoid, Tanh, sigmoid


def _input(shape, seed=0):
    x = np.random.default_rng(seed).normal(size=shape)
    # keep clear of ReLU's kink, where a finite difference straddles two slopes
    return np.where(np.abs(x) < 1e-2, 0.5, x)


def _check_input_gradient(backend, layer, x_host):
    """Loss sum(y * g) for a fixed random g: dL/dy = g, so backward(g) must equal dL/dx."""
    g_host = np.random.default_rng(1).normal(size=layer.forward(backend.asarray(x_host, "float64")).shape)
    g = backend.asarray(g_host, "float64")

    def loss(x):
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(x, "float64"))) * g_host))

    layer.forward(backend.asarray(x_host, "float64"))
    analytic = backend.to_numpy(layer.backward(g))
    assert relative_error(analytic, numerical_gradient(loss, x_host)) < 1e-6
    return g, g_host


@pytest.mark.parametrize("layer_cls", [ReLU, LeakyReLU, Sigmoid, Tanh])
def test_activation_gradients(backend, layer_cls):
    _check_input_gradient(backend, layer_cls(), _input((4, 5)))


def test_dense_gradients(backend):
    layer = Dense(5, 3, backend.rng(0), init="he", dtype="float64")
    x_host = _input((4, 5))
    g, g_host = _check_input_gradient(backend, layer, x_host)
    layer.forward(backend.asarray(x_host, "float64"))
    layer.backward(g)
    for key in ("W", "b"):
        original = backend.to_numpy(layer.params[key])

        def loss(p, key=key):
            layer.params[key] = backend.asarray(p, "float64")
            out = float(np.sum(backend.to_numpy(layer.forward(backend.asarray(x_host, "float64"))) * g_host))
            return out

        numeric = numerical_gradient(loss, original)
        layer.params[key] = backend.asarray(original, "float64")
        assert relative_error(backend.to_numpy(layer.grads[key]), numeric) < 1e-6


def test_dense_matches_reference(backend):
    layer = Dense(3, 2, backend.rng(0), dtype="float64")
    w, b = np.arange(6.0).reshape(3, 2) / 10, np.array([0.5, -0.5])
    layer.params = {"W": backend.asarray(w, "float64"), "b": backend.asarray(b, "float64")}
    x = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(backend.to_numpy(layer.forward(backend.asarray(x, "float64"))), x @ w + b)


@pytest.mark.parametrize("init, std", [("he", np.sqrt(2 / 400)), ("xavier", np.sqrt(2 / 600))])
def test_dense_initialisation_scale(backend, init, std):
    weights = backend.to_numpy(Dense(400, 200, backend.rng(0), init=init).params["W"])
    assert weights.dtype == np.float32
    assert abs(weights.std() / std - 1) < 0.02
    assert abs(weights.mean()) < 0.01 * std


def test_unknown_initialiser_is_rejected(backend):
    with pytest.raises(ValueError, match="unknown initialiser 'uniform'"):
        Dense(3, 2, backend.rng(0), init="uniform")


def test_activation_values(backend):
    x = np.array([[-2.0, 0.5, 3.0]])
    xd = backend.asarray(x, "float64")
    np.testing.assert_allclose(backend.to_numpy(ReLU().forward(xd)), [[0, 0.5, 3.0]])
    np.testing.assert_allclose(backend.to_numpy(LeakyReLU(0.1).forward(xd)), [[-0.2, 0.5, 3.0]])
    np.testing.assert_allclose(backend.to_numpy(Tanh().forward(xd)), np.tanh(x))
    np.testing.assert_allclose(backend.to_numpy(Sigmoid().forward(xd)), 1 / (1 + np.exp(-x)))


def test_sigmoid_is_finite_for_extreme_inputs(backend):
    out = backend.to_numpy(sigmoid(backend.asarray([[-1e4, 0.0, 1e4]], "float32")))
    np.testing.assert_array_equal(out, [[0.0, 0.5, 1.0]])


def test_dropout_is_identity_at_evaluation(backend):
    x = backend.asarray(_input((8, 16)), "float32")
    layer = Dropout(0.5, backend.rng(0))
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)), backend.to_numpy(x))
    np.testing.assert_array_equal(backend.to_numpy(layer.backward(x)), backend.to_numpy(x))


def test_dropout_scales_kept_units_and_backward_uses_the_same_mask(backend):
    p = 0.25
    layer = Dropout(p, backend.rng(3))
    x = np.full((200, 100), 2.0)
    y = backend.to_numpy(layer.forward(backend.asarray(x, "float32"), training=True))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2.0 / (1 - p), rtol=1e-6)
    assert abs(kept.mean() - (1 - p)) < 0.01
    grad = backend.to_numpy(layer.backward(backend.asarray(np.ones_like(x), "float32")))
    np.testing.assert_array_equal(grad != 0, kept)
    np.testing.assert_allclose(grad[kept], 1 / (1 - p), rtol=1e-6)


def test_dropout_rejects_bad_probability(backend):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0, backend.rng(0))


def test_dense_without_input_gradient_fills_the_same_parameter_gradients(backend):
    """A first layer skips dL/dx (its input is data) and computes the same dW and db."""
    x = backend.asarray(_input((6, 5)), "float64")
    g = backend.asarray(np.random.default_rng(2).normal(size=(6, 3)), "float64")
    full, first = Dense(5, 3, backend.rng(0), dtype="float64"), Dense(5, 3, backend.rng(0), dtype="float64")
    first.input_grad = False
    full.forward(x)
    first.forward(x)
    assert full.backward(g) is not None
    assert first.backward(g) is None
    for key in ("W", "b"):
        np.testing.assert_array_equal(backend.to_numpy(first.grads[key]), backend.to_numpy(full.grads[key]))
