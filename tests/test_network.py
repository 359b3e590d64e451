"""The whole network: gradients of every parameter (L2 included), learning, and misuse."""

import numpy as np
import pytest
from _util import numerical_gradient, relative_error

from fastnn.network import Network, bottleneck_spec
from fastnn.optimizers import SGD, Adam, AdamW


@pytest.mark.parametrize(
    "sizes, activation",
    [([4, 3], "relu"), ([4, 5, 3], "relu"), ([4, 6, 5, 3], "tanh"), ([4, 5, 3], "sigmoid"), ([4, 5, 3], "leaky_relu")],
)
def test_network_gradients_with_l2(backend, sizes, activation):
    rng = np.random.default_rng(0)
    x_host, labels_host = rng.normal(size=(7, sizes[0])), rng.integers(0, sizes[-1], size=7)
    x, labels = backend.asarray(x_host, "float64"), backend.asarray(labels_host, "int64")
    net = Network(sizes, activation, backend=backend, l2=0.05, seed=1, dtype="float64")
    net.logits(x, training=True)
    net.backward_pass(labels)
    analytic = {name: backend.to_numpy(grad) for name, _, grad in net.param_grads()}
    for name, param in list(net.parameters()):
        original = backend.to_numpy(param)

        def loss(value, name=name):
            net.load_state_dict({**net.state_dict(), name: value})
            return float(backend.to_numpy(net.loss(x, labels)))

        numeric = numerical_gradient(loss, original)
        net.load_state_dict({**net.state_dict(), name: original})
        assert relative_error(analytic[name], numeric) < 1e-6, name


def test_backward_pass_returns_loss_with_penalty(backend):
    rng = np.random.default_rng(0)
    x, labels = backend.asarray(rng.normal(size=(5, 4)), "float64"), backend.asarray([0, 1, 2, 0, 1], "int64")
    plain = Network([4, 6, 3], backend=backend, seed=2, dtype="float64")
    regular = Network([4, 6, 3], backend=backend, seed=2, dtype="float64", l2=0.1)
    plain.forward_pass(x)
    regular.forward_pass(x)
    weights = [backend.to_numpy(p) for name, p in plain.parameters() if name.endswith("W")]
    expected = float(backend.to_numpy(plain.backward_pass(labels))) + 0.05 * sum(np.sum(w**2) for w in weights)
    np.testing.assert_allclose(float(backend.to_numpy(regular.backward_pass(labels))), expected, rtol=1e-12)


def test_forward_pass_gives_probabilities(backend):
    net = Network([3, 8, 4], backend=backend)
    probs = backend.to_numpy(net.forward_pass(backend.asarray(np.ones((2, 3)), "float32")))
    assert probs.shape == (2, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def _blobs(n_per_class=100, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 3], [3, -2], [-3, -2]], dtype=float)
    x = np.concatenate([c + rng.normal(scale=0.8, size=(n_per_class, 2)) for c in centres])
    y = np.repeat(np.arange(3), n_per_class)
    return x, y


@pytest.mark.parametrize("make_optimizer", [Adam, lambda: SGD(momentum=0.9)], ids=["adam", "sgd-momentum"])
def test_network_learns_blobs(backend, make_optimizer):
    optimizer = make_optimizer()
    x_host, y_host = _blobs()
    x, y = backend.asarray(x_host, "float32"), backend.asarray(y_host, "int64")
    net = Network([2, 16, 3], backend=backend, seed=0, dropout=0.1, l2=1e-4)
    rng = backend.rng(0)
    for _ in range(30):
        order = rng.permutation(300)
        for start in range(0, 300, 32):
            index = order[start : min(start + 32, 300)]  # out-of-range slice ends are not portable
            xb = backend.xp.take(x, index, axis=0)
            net.train_step(xb, backend.xp.take(y, index, axis=0), optimizer, 0.01)
    x_test, y_test = _blobs(seed=1)
    accuracy = net.accuracy(backend.asarray(x_test, "float32"), backend.asarray(y_test, "int64"))
    assert accuracy >= 0.95


def test_train_step_returns_device_scalars(backend):
    net = Network([2, 4, 3], backend=backend)
    loss, correct = net.train_step(
        backend.asarray(np.zeros((5, 2)), "float32"), backend.asarray([0, 1, 2, 0, 1], "int64"), Adam(), 0.1
    )
    assert loss.shape == () and correct.shape == ()
    assert 0 <= int(backend.to_numpy(correct)) <= 5


def test_state_dict_round_trip(backend):
    a = Network([5, 7, 3], backend=backend, seed=1)
    b = Network([5, 7, 3], backend=backend, seed=2)
    b.load_state_dict({k: backend.to_numpy(v) for k, v in a.state_dict().items()})
    x = backend.asarray(np.random.default_rng(0).normal(size=(4, 5)), "float32")
    np.testing.assert_array_equal(backend.to_numpy(a.forward_pass(x)), backend.to_numpy(b.forward_pass(x)))
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict({**a.state_dict(), "0.W": np.zeros((2, 2))})


def test_same_seed_same_weights(backend):
    a, b = Network([4, 6, 2], backend=backend, seed=5), Network([4, 6, 2], backend=backend, seed=5)
    for (_, p), (_, q) in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(backend.to_numpy(p), backend.to_numpy(q))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sizes": [10]}, "at least two layer sizes"),
        ({"sizes": [10, 0, 2]}, "positive integers"),
        ({"sizes": [10, 2], "activation": "swish"}, "unknown activation 'swish'"),
        ({"sizes": [10, 2], "init": "orthogonal"}, "unknown initialiser 'orthogonal'"),
        ({"sizes": [10, 2], "dtype": "int32"}, "dtype must be 'float32' or 'float64', got 'int32'"),
        ({"sizes": [10, 4, 2], "dropout": -0.5}, r"dropout must be in \[0, 1\), got -0.5"),
    ],
)
def test_bad_construction_is_a_clear_value_error(backend, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Network(backend=backend, **kwargs)


def test_bad_inputs_are_clear_value_errors(backend):
    net = Network([4, 3], backend=backend)
    with pytest.raises(ValueError, match=r"first layer expects \(batch, 4\)"):
        net.forward_pass(backend.asarray(np.zeros((2, 5)), "float32"))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        net.accuracy(backend.asarray(np.zeros((2, 4)), "float32"), backend.asarray([0, 3], "int64"))
    with pytest.raises(ValueError, match="integer array"):
        net.accuracy(backend.asarray(np.zeros((2, 4)), "float32"), backend.asarray([0.0, 1.0], "float32"))


def test_the_assignments_methods_called_out_of_order_say_so(backend):
    net = Network([4, 3], backend=backend)
    x, labels = backend.asarray(np.zeros((2, 4)), "float32"), backend.asarray([0, 2], "int64")
    with pytest.raises(ValueError, match="backward_pass needs a forward_pass first"):
        net.backward_pass(labels)
    with pytest.raises(ValueError, match="update_network needs a backward_pass first"):
        net.update_network(Adam(), 1e-3)
    net.forward_pass(x)
    with pytest.raises(ValueError, match="3 targets for a forward pass of 2 inputs"):
        net.backward_pass(backend.asarray([0, 1, 2], "int64"))
    with pytest.raises(ValueError, match="integer array"):  # 0.5 would otherwise give a loss of -0.0
        net.backward_pass(backend.asarray([0.5, 1.5], "float32"))
    with pytest.raises(TypeError, match="inputs must be an array on the network's device"):
        net.forward_pass([[0.0] * 4])
    with pytest.raises(ValueError, match="inputs are int64, the network computes in float32"):
        net.forward_pass(backend.asarray(np.zeros((2, 4)), "int64"))


def test_a_backend_may_be_named():
    assert Network([4, 3], backend="cpu").backend.name == "numpy"


def _bottleneck(backend, **kwargs):
    spec = bottleneck_spec(5, 3, 2, 4, final_norm=True)
    return Network(spec=spec, backend=backend, seed=1, dtype="float64", **kwargs)


def test_bottleneck_network_gradients_with_l2(backend):
    """Every parameter of a spec-built network with residual blocks, LayerNorm and GELU, the L2 term
    (on every Dense weight, those in residual bodies too) and label smoothing included."""
    rng = np.random.default_rng(0)
    x, labels = backend.asarray(rng.normal(size=(6, 5)), "float64"), backend.asarray(rng.integers(0, 4, 6), "int64")
    net = _bottleneck(backend, l2=0.05, label_smoothing=0.1)
    assert "1.1.W" in dict(net.parameters()) and "3.gain" in dict(net.parameters())
    net.logits(x, training=True)
    net.backward_pass(labels)
    analytic = {name: backend.to_numpy(grad) for name, _, grad in net.param_grads()}

    def loss():
        net.logits(x, training=True)
        return float(backend.to_numpy(net.backward_pass(labels)))

    for name, param in list(net.parameters()):
        original = backend.to_numpy(param)

        def loss_at(value, name=name):
            net.load_state_dict({**net.state_dict(), name: value})
            return loss()

        numeric = numerical_gradient(loss_at, original)
        net.load_state_dict({**net.state_dict(), name: original})
        assert relative_error(analytic[name], numeric) < 1e-6, name


def test_a_network_round_trips_through_its_spec(backend):
    net = Network([4, 6, 3], "leaky_relu", backend=backend, dropout=0.2)
    assert [layer["type"] for layer in net.spec()] == ["dense", "leaky_relu", "dropout", "dense"]
    again = Network(spec=net.spec(), backend=backend)
    assert again.spec() == net.spec() and again.sizes == [4, 6, 3]
    bottleneck = _bottleneck(backend)
    assert Network(spec=bottleneck.spec(), backend=backend, dtype="float64").spec() == bottleneck.spec()
    assert bottleneck.sizes == [5, 3, 4] and bottleneck.n_classes == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sizes": [4, 3], "spec": [{"type": "dense", "n_in": 4, "n_out": 3}]}, "sizes .* or a spec, not both"),
        ({"spec": [{"type": "relu"}]}, "at least one Dense layer"),
        ({"spec": [{"type": "dense", "n_in": 4, "n_out": 3}, {"type": "dense", "n_in": 5, "n_out": 2}]},
         "takes 5 features, but the layer before gives 3"),
        ({"spec": [{"type": "dense", "n_in": 4, "n_out": 3}, {"type": "layernorm", "n_features": 4}]},
         "normalises 4 features, but the layer before gives 3"),
    ],
)
def test_bad_specs_are_clear_value_errors(backend, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Network(backend=backend, **kwargs)


@pytest.mark.parametrize("n_blocks, message", [(-1, "n_blocks must be"), (1.5, "n_blocks must be")])
def test_bottleneck_spec_checks_its_arguments(n_blocks, message):
    with pytest.raises(ValueError, match=message):
        bottleneck_spec(10, 4, n_blocks, 2)


@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_a_spec_built_network_trains_with_train_epoch(backend, norm):
    """The Trainer's loop, unchanged, on a small bottleneck MLP (its LayerNorms swapped for
    BatchNorms in the second case) with AdamW and label smoothing: the loss falls and evaluate
    scores the held-out split in evaluation mode."""
    from _util import synthetic_split

    from fastnn.train import evaluate, train_epoch

    split = synthetic_split(n_train=256, n_val=96, features=8)
    spec = bottleneck_spec(8, 8, 2, 3)
    for block in spec[1:3]:
        block["body"][0] = {"type": norm, "n_features": 8}
    net = Network(spec=spec, backend=backend, seed=0, label_smoothing=0.1)
    x, y = backend.asarray(split.x_train, "float32"), backend.asarray(split.y_train, "int64")
    optimizer, rng, losses = AdamW(weight_decay=0.05), backend.rng(1), []
    for _ in range(4):
        loss_sum, _ = train_epoch(net, optimizer, x, y, batch_size=32, lr=3e-3, rng=rng)
        losses.append(float(backend.to_numpy(loss_sum)) / x.shape[0])
    assert losses[-1] < 0.5 * losses[0], losses
    _, accuracy = evaluate(net, backend.asarray(split.x_val, "float32"), backend.asarray(split.y_val, "int64"))
    assert accuracy >= 0.9
