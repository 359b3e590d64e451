"""Every layer's backward pass against central finite differences, on every backend."""

import numpy as np
import pytest
from _util import numerical_gradient, relative_error

from fastnn.layers import (
    GELU,
    LAYERS,
    BatchNorm,
    Dense,
    Dropout,
    LayerNorm,
    LeakyReLU,
    ReLU,
    Residual,
    Sigmoid,
    Tanh,
    build_layer,
    sigmoid,
)


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


@pytest.mark.parametrize("layer_cls", [ReLU, LeakyReLU, Sigmoid, Tanh, GELU])
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


def _check_all_gradients(backend, layer, x_host, training):
    """dL/dx and dL/dparam for every parameter, inside residual bodies too, against central finite
    differences of ``L = sum(y * g)`` for a fixed random ``g``."""
    layers = [layer, *layer.sublayers()]
    g_host = np.random.default_rng(1).normal(size=x_host.shape[:1] + (layer.width_after(x_host.shape[1]),))

    def loss():
        y = layer.forward(backend.asarray(x_host, "float64"), training)
        return float(np.sum(backend.to_numpy(y) * g_host))

    layer.forward(backend.asarray(x_host, "float64"), training)
    grad_x = backend.to_numpy(layer.backward(backend.asarray(g_host, "float64")))
    analytic = {(i, key): backend.to_numpy(part.grads[key]) for i, part in enumerate(layers) for key in part.params}

    def loss_at_x(x):
        x_host[...] = x
        return loss()

    original_x = x_host.copy()
    numeric_x = numerical_gradient(loss_at_x, original_x)
    x_host[...] = original_x
    assert relative_error(grad_x, numeric_x) < 1e-6
    for (i, key), grad in analytic.items():
        part, original = layers[i], backend.to_numpy(layers[i].params[key])

        def loss_at_param(p, part=part, key=key):
            part.params[key] = backend.asarray(p, "float64")
            return loss()

        numeric = numerical_gradient(loss_at_param, original)
        part.params[key] = backend.asarray(original, "float64")
        assert relative_error(grad, numeric) < 1e-6, (i, key)


def _norm(cls, backend, n=5, **kwargs):
    """A norm layer in float64 with gain and bias away from 1 and 0, so their gradients matter."""
    layer = cls(n, backend, dtype="float64", **kwargs)
    rng = np.random.default_rng(7)
    layer.params = {"gain": backend.asarray(rng.normal(1.0, 0.5, n), "float64"),
                    "bias": backend.asarray(rng.normal(0.0, 0.5, n), "float64")}
    return layer


def test_layernorm_gradients(backend):
    _check_all_gradients(backend, _norm(LayerNorm, backend), _input((4, 5)), training=True)


@pytest.mark.parametrize("training", [True, False], ids=["batch-statistics", "running-statistics"])
def test_batchnorm_gradients(backend, training):
    layer = _norm(BatchNorm, backend)
    layer.buffers = {"running_mean": backend.asarray(np.linspace(-1, 1, 5), "float64"),
                     "running_var": backend.asarray(np.linspace(0.5, 2, 5), "float64")}
    _check_all_gradients(backend, layer, _input((6, 5)), training)


def test_residual_gradients(backend):
    rng = backend.rng(0)
    body = [_norm(LayerNorm, backend, 4), Dense(4, 6, rng, dtype="float64"), GELU(), Dense(6, 4, rng, dtype="float64")]
    _check_all_gradients(backend, Residual(body), _input((3, 4)), training=True)


def test_batchnorm_normalises_over_the_batch_and_tracks_running_statistics(backend):
    x_host = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4))
    layer = BatchNorm(4, backend, dtype="float64", momentum=0.5)
    y = backend.to_numpy(layer.forward(backend.asarray(x_host, "float64"), training=True))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1.0, rtol=1e-4)  # eps shrinks it a little
    np.testing.assert_allclose(backend.to_numpy(layer.buffers["running_mean"]), 0.5 * x_host.mean(axis=0))
    np.testing.assert_allclose(backend.to_numpy(layer.buffers["running_var"]), 0.5 + 0.5 * x_host.var(axis=0, ddof=1))
    evaluated = backend.to_numpy(layer.forward(backend.asarray(x_host, "float64")))
    expected = (x_host - 0.5 * x_host.mean(axis=0)) / np.sqrt(0.5 + 0.5 * x_host.var(axis=0, ddof=1) + 1e-5)
    np.testing.assert_allclose(evaluated, expected, rtol=1e-12)


def test_every_layer_round_trips_through_its_spec(backend):
    rng = backend.rng(0)
    layers = [
        Dense(4, 3, rng, init="xavier"), ReLU(), LeakyReLU(0.2), Sigmoid(), Tanh(), GELU(), Dropout(0.3, rng),
        LayerNorm(3, backend, eps=1e-3), BatchNorm(3, backend, momentum=0.2),
        Residual([LayerNorm(3, backend), Dense(3, 3, rng), GELU()]),
    ]
    assert {layer.spec()["type"] for layer in layers} == set(LAYERS)
    for layer in layers:
        rebuilt = build_layer(layer.spec(), rng)
        assert type(rebuilt) is type(layer) and rebuilt.spec() == layer.spec()
        for key, value in layer.params.items():
            assert rebuilt.params[key].shape == value.shape


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "conv"}, "unknown layer 'conv'; a layer spec's type is one of dense, relu"),
        ("dense", "unknown layer 'dense'"),
        ({"type": "dense", "n_in": 3}, "does not fit its type .*n_out"),
        ({"type": "relu", "slope": 0.1}, "does not fit its type"),
        ({"type": "residual", "body": [{"type": "dense", "n_in": 3, "n_out": 4}]}, "keep the width: it takes 3"),
    ],
)
def test_bad_layer_specs_are_clear_value_errors(backend, spec, message):
    with pytest.raises(ValueError, match=message):
        layer = build_layer(spec, backend.rng(0))
        layer.width_after(3)


def test_a_layer_missing_from_the_registry_says_so():
    class Square(ReLU):
        pass

    with pytest.raises(ValueError, match="Square has no name in fastnn.layers.LAYERS"):
        Square().spec()


def test_layers_match_pytorch(backend):
    """GELU (tanh form), LayerNorm and BatchNorm (training, then evaluation): outputs and gradients."""
    torch = pytest.importorskip("torch")
    x_host = np.random.default_rng(0).normal(1.0, 2.0, size=(8, 5))
    g_host = np.random.default_rng(1).normal(size=(8, 5))
    ours = {"gelu": GELU(), "layernorm": _norm(LayerNorm, backend), "batchnorm": _norm(BatchNorm, backend)}
    theirs = {"gelu": torch.nn.GELU(approximate="tanh"), "layernorm": torch.nn.LayerNorm(5).double(),
              "batchnorm": torch.nn.BatchNorm1d(5).double()}
    for name, layer in ours.items():
        reference = theirs[name]
        with torch.no_grad():
            for ours_key, torch_key in (("gain", "weight"), ("bias", "bias")):
                if ours_key in layer.params:
                    getattr(reference, torch_key).copy_(torch.from_numpy(backend.to_numpy(layer.params[ours_key])))
        for training in (True, False):
            reference.train(training)
            x = torch.tensor(x_host, requires_grad=True)
            y = reference(x)
            (y * torch.from_numpy(g_host)).sum().backward()
            out = layer.forward(backend.asarray(x_host, "float64"), training)
            np.testing.assert_allclose(backend.to_numpy(out), y.detach().numpy(), rtol=1e-10, atol=1e-12)
            grad_x = layer.backward(backend.asarray(g_host, "float64"))
            np.testing.assert_allclose(backend.to_numpy(grad_x), x.grad.numpy(), rtol=1e-9, atol=1e-12)
            for ours_key, torch_key in (("gain", "weight"), ("bias", "bias")):
                if ours_key in layer.params:
                    expected = getattr(reference, torch_key).grad.numpy()
                    np.testing.assert_allclose(backend.to_numpy(layer.grads[ours_key]), expected, rtol=1e-9)
                    getattr(reference, torch_key).grad = None
        if name == "batchnorm":
            np.testing.assert_allclose(backend.to_numpy(layer.buffers["running_mean"]), reference.running_mean.numpy())
            np.testing.assert_allclose(backend.to_numpy(layer.buffers["running_var"]), reference.running_var.numpy())
