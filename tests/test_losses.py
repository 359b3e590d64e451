"""Losses against an independent float64 reference and against finite differences."""

import numpy as np
import pytest
from _util import numerical_gradient, relative_error

from fastnn.losses import SoftmaxCrossEntropy, SquaredError, one_hot, softmax


def _reference_cross_entropy(logits, labels):
    # the textbook formula, written out longhand in float64
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return -np.mean(np.log(probs[np.arange(len(labels)), labels]))


def test_cross_entropy_matches_reference(backend):
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 4)), np.array([0, 3, 1, 1, 2, 0])
    loss = SoftmaxCrossEntropy().forward(backend.asarray(logits, "float64"), backend.asarray(labels, "int64"))
    np.testing.assert_allclose(float(backend.to_numpy(loss)), _reference_cross_entropy(logits, labels), rtol=1e-12)


def test_cross_entropy_gradient(backend):
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(5, 3)), np.array([2, 0, 1, 2, 2])
    labels_d = backend.asarray(labels, "int64")
    loss_fn = SoftmaxCrossEntropy()
    loss_fn.forward(backend.asarray(logits, "float64"), labels_d)
    analytic = backend.to_numpy(loss_fn.backward())

    def f(z):
        return float(backend.to_numpy(SoftmaxCrossEntropy().forward(backend.asarray(z, "float64"), labels_d)))

    assert relative_error(analytic, numerical_gradient(f, logits)) < 1e-6


def test_cross_entropy_accepts_probability_targets(backend):
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(4, 3)), np.array([2, 0, 1, 1])
    by_label = SoftmaxCrossEntropy().forward(backend.asarray(logits, "float64"), backend.asarray(labels, "int64"))
    rows = backend.asarray(np.eye(3)[labels], "float64")
    by_row = SoftmaxCrossEntropy().forward(backend.asarray(logits, "float64"), rows)
    np.testing.assert_allclose(backend.to_numpy(by_label), backend.to_numpy(by_row), rtol=1e-12)


def test_cross_entropy_is_finite_for_extreme_logits(backend):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]])
    labels = np.array([1, 2])
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(backend.asarray(logits, "float32"), backend.asarray(labels, "int64"))
    loss = float(backend.to_numpy(loss))
    grad = backend.to_numpy(loss_fn.backward())
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss, 1e4, rtol=1e-6)  # the first row costs 2e4 nats, the second 0
    np.testing.assert_allclose(grad, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-7)


def test_softmax_rows_sum_to_one_and_match_reference(backend):
    logits = np.random.default_rng(3).normal(size=(4, 5)) * 10
    probs = backend.to_numpy(softmax(backend.asarray(logits, "float64")))
    reference = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, reference / reference.sum(1, keepdims=True), rtol=1e-12)


def test_one_hot(backend):
    out = one_hot(backend.asarray([2, 0], "int64"), 3, backend.dtype("float32"))
    np.testing.assert_array_equal(backend.to_numpy(out), [[0, 0, 1], [1, 0, 0]])


def test_squared_error_value_and_gradient(backend):
    y, t = np.array([[0.7, 0.2]]), np.array([[0.9, 0.1]])
    loss_fn = SquaredError()
    loss = float(backend.to_numpy(loss_fn.forward(backend.asarray(y, "float64"), backend.asarray(t, "float64"))))
    np.testing.assert_allclose(loss, 0.5 * (0.2**2 + 0.1**2), rtol=1e-12)
    t_d = backend.asarray(t, "float64")

    def f(out):
        return float(backend.to_numpy(SquaredError().forward(backend.asarray(out, "float64"), t_d)))

    assert relative_error(backend.to_numpy(loss_fn.backward()), numerical_gradient(f, y)) < 1e-6


def test_label_smoothing_matches_reference_and_pytorch(backend):
    """``eps`` moves each target row to ``(1 - eps) * onehot + eps / classes``: the loss against that
    formula written out in float64, and against PyTorch's ``cross_entropy(label_smoothing=eps)``."""
    rng = np.random.default_rng(4)
    logits, labels, eps = rng.normal(size=(6, 4)), np.array([0, 3, 1, 1, 2, 0]), 0.3
    loss_fn = SoftmaxCrossEntropy(label_smoothing=eps)
    loss = loss_fn.forward(backend.asarray(logits, "float64"), backend.asarray(labels, "int64"))
    loss = float(backend.to_numpy(loss))
    targets = (1 - eps) * np.eye(4)[labels] + eps / 4
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(loss, -np.mean(np.sum(targets * log_probs, axis=1)), rtol=1e-12)
    torch = pytest.importorskip("torch")
    z = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.cross_entropy(z, torch.tensor(labels), label_smoothing=eps)
    expected.backward()
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(loss_fn.backward()), z.grad.numpy(), rtol=1e-10)


@pytest.mark.parametrize("soft", [False, True], ids=["labels", "probability-rows"])
def test_smoothed_cross_entropy_gradient(backend, soft):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(5, 3))
    targets = rng.dirichlet(np.ones(3), size=5) if soft else np.array([2, 0, 1, 2, 2])
    targets_d = backend.asarray(targets, "float64" if soft else "int64")
    loss_fn = SoftmaxCrossEntropy(label_smoothing=0.2)
    loss_fn.forward(backend.asarray(logits, "float64"), targets_d)

    def f(z):
        loss = SoftmaxCrossEntropy(label_smoothing=0.2).forward(backend.asarray(z, "float64"), targets_d)
        return float(backend.to_numpy(loss))

    assert relative_error(backend.to_numpy(loss_fn.backward()), numerical_gradient(f, logits)) < 1e-6


@pytest.mark.parametrize("eps", [-0.1, 1.0, float("nan")])
def test_bad_label_smoothing_is_refused(eps):
    with pytest.raises(ValueError, match=r"label smoothing must be in \[0, 1\)"):
        SoftmaxCrossEntropy(label_smoothing=eps)
