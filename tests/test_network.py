"""The whole network: gradients of every parameter (L2 included), learning, and misuse."""

import numpy as np
import pytest
from _util import numerical_gradient, relative_error

from fastnn.network import Network
from fastnn.optimizers import SGD, Adam


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
