"""Two optimizer steps against values worked out by hand in each test."""

import math

import numpy as np
import pytest

from fastnn.optimizers import OPTIMIZERS, SGD, Adam, AdamW


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


def _adam_trajectory(backend, fused, shapes, steps=4, seed=0, dtype="float32"):
    """Params after ``steps`` Adam steps from the same random start and gradients, on ``backend``."""
    rng = np.random.default_rng(seed)
    params = {f"p{i}": backend.asarray(rng.normal(size=s), dtype) for i, s in enumerate(shapes)}
    optimizer = Adam(fused=fused)
    for t in range(steps):
        grads = {name: backend.asarray(rng.normal(scale=10.0**-t, size=p.shape), dtype) for name, p in params.items()}
        optimizer.step([(name, p, grads[name]) for name, p in params.items()], lr=0.01)
    return {name: backend.to_numpy(p) for name, p in params.items()}, optimizer


@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-6), ("float64", 1e-13)])
def test_fused_adam_matches_the_formula(backend, dtype, rtol):
    """The backend's in-place Adam (NumPy blocks, a CuPy kernel) against the generic formula."""
    shapes = [(300, 70), (70,), (5, 3)]
    fused, optimizer = _adam_trajectory(backend, True, shapes, dtype=dtype)
    plain, _ = _adam_trajectory(backend, False, shapes, dtype=dtype)
    expected_kind = {"numpy": True, "cupy": True, "strict": False}[backend.name]
    assert all((step is not None) == expected_kind for step in optimizer._fused_steps.values())
    for name in plain:
        np.testing.assert_allclose(fused[name], plain[name], rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("threads", [1, 3])
def test_numpy_adam_blocks_cover_every_element(monkeypatch, threads, update_engine):
    """Blocks smaller than a row, ragged last blocks, a 0-d and a strided parameter, shared among
    threads: every element updated once, as the formula says (numba: parts of uneven length)."""
    from fastnn import kernels_cpu
    from fastnn.backend import get_backend

    monkeypatch.setattr(kernels_cpu, "BLOCK", 50)
    monkeypatch.setattr(kernels_cpu, "_threads", kernels_cpu.threads())
    kernels_cpu.set_threads(threads)
    _check_numpy_adam_blocks(get_backend("numpy"))


def _check_numpy_adam_blocks(backend):
    shapes = [(37, 11), (123,), (), (9, 200)]
    fused, _ = _adam_trajectory(backend, True, shapes, dtype="float64")
    plain, _ = _adam_trajectory(backend, False, shapes, dtype="float64")
    for name in plain:
        np.testing.assert_allclose(fused[name], plain[name], rtol=1e-13)

    base = np.ones((6, 8))
    strided = base[:, ::2].T  # a non-contiguous view: the update must land in ``base``
    optimizer = Adam()
    optimizer.step([("w", strided, np.full(strided.shape, 0.5))], lr=0.1)
    np.testing.assert_allclose(base[:, ::2], 0.9)
    np.testing.assert_allclose(base[:, 1::2], 1.0)


@pytest.mark.parametrize("lr", ["0.1", float("nan"), float("inf"), -0.1, True])
@pytest.mark.parametrize("make", [Adam, SGD], ids=["adam", "sgd"])
def test_a_bad_learning_rate_is_refused_before_any_change(make, lr):
    param, grad = np.ones(3, dtype=np.float32), np.ones(3, dtype=np.float32)
    optimizer = make()
    with pytest.raises(ValueError, match="learning rate must be a finite number >= 0"):
        optimizer.step([("p", param, grad)], lr)
    np.testing.assert_array_equal(param, np.ones(3))
    assert getattr(optimizer, "t", 0) == 0


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_updates_the_buffer_of_a_0d_parameter(backend, nesterov):
    # A 0-d gradient times 1.0 is a NumPy scalar, not an array: a buffer made that way lost every
    # in-place update. Three steps of gradient 1 at lr 1 from 0: v = 1, 1.9, 2.71 (PyTorch's too), so
    # p = -1, -2.9, -5.61; with Nesterov p -= 1 + 0.9 v: -1.9, -4.61, -8.049.
    optimizer = SGD(momentum=0.9, nesterov=nesterov)
    param = backend.asarray(0.0, "float64")
    for _ in range(3):
        optimizer.step([("p", param, backend.asarray(1.0, "float64"))], 1.0)
    expected = -8.049 if nesterov else -5.61
    np.testing.assert_allclose(backend.to_numpy(param), expected, rtol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(optimizer.velocity["p"]), 2.71, rtol=1e-14)


def test_a_step_leaves_the_callers_host_array_alone(backend):
    # backend.asarray copies on every backend, as it must on a device: the weights a caller hands
    # to load_state_dict stay theirs.
    from fastnn.network import Network

    network = Network([3, 2], "relu", backend=backend, dtype="float64")
    host = {name: np.ones(backend.to_numpy(value).shape) for name, value in network.parameters()}
    network.load_state_dict(host)
    SGD().step([(name, param, param * 0 + 1) for name, param in network.parameters()], 0.5)
    for name, value in host.items():
        np.testing.assert_array_equal(value, 1.0, err_msg=name)
        np.testing.assert_array_equal(backend.to_numpy(dict(network.parameters())[name]), 0.5)


def test_adamw_two_steps_decay_weights_only(backend):
    """Worked by hand: decay ``p <- p * (1 - lr * wd)`` on a matrix, none on a vector, then Adam's step."""
    b1, b2, eps, lr, wd = 0.9, 0.999, 1e-8, 0.01, 0.5
    expected = {}
    for name, decays in (("W", True), ("b", False)):
        p, m, v = 1.0, 0.0, 0.0
        for t, g in enumerate([0.5, -0.3], start=1):
            p *= 1 - lr * wd if decays else 1.0
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p -= lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        expected[name] = p
    optimizer = AdamW(weight_decay=wd, beta1=b1, beta2=b2, eps=eps)
    weight, bias = backend.asarray([[1.0, 1.0]], "float64"), backend.asarray([1.0], "float64")
    for g in (0.5, -0.3):
        grads = backend.asarray([[g, g]], "float64"), backend.asarray([g], "float64")
        optimizer.step([("W", weight, grads[0]), ("b", bias, grads[1])], lr)
    np.testing.assert_allclose(backend.to_numpy(weight), [[expected["W"]] * 2], rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(bias), [expected["b"]], rtol=1e-12)
    assert expected["W"] < expected["b"]


def test_adamw_matches_pytorch(backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    start = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    grads = [{name: rng.normal(size=p.shape) for name, p in start.items()} for _ in range(5)]
    ours = {name: backend.asarray(p, "float64") for name, p in start.items()}
    theirs = {name: torch.tensor(p, requires_grad=True) for name, p in start.items()}
    optimizer = AdamW(weight_decay=0.1)
    reference = torch.optim.AdamW(
        [{"params": [theirs["W"]], "weight_decay": 0.1}, {"params": [theirs["b"]], "weight_decay": 0.0}], lr=0.05
    )
    for step in grads:
        optimizer.step([(name, p, backend.asarray(step[name], "float64")) for name, p in ours.items()], 0.05)
        for name, p in theirs.items():
            p.grad = torch.tensor(step[name])
        reference.step()
    for name in start:
        np.testing.assert_allclose(backend.to_numpy(ours[name]), theirs[name].detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("make", [lambda: AdamW(weight_decay=-0.1), lambda: AdamW(beta2=1.0), lambda: AdamW(eps=0)])
def test_bad_adamw_hyperparameters_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_every_optimizer_is_registered_by_name():
    assert OPTIMIZERS == {"sgd": SGD, "adam": Adam, "adamw": AdamW}
    for make in OPTIMIZERS.values():
        param = np.ones((2, 2))
        make().step([("p", param, np.ones((2, 2)))], 0.1)
        assert np.all(param < 1.0)


def _sgd_trajectory(backend, fused, shapes, momentum, nesterov, steps=4, seed=0, dtype="float32"):
    """Params after ``steps`` SGD steps from the same random start and gradients, on ``backend``."""
    rng = np.random.default_rng(seed)
    params = {f"p{i}": backend.asarray(rng.normal(size=s), dtype) for i, s in enumerate(shapes)}
    optimizer = SGD(momentum=momentum, nesterov=nesterov, fused=fused)
    for t in range(steps):
        grads = {name: backend.asarray(rng.normal(scale=10.0**-t, size=p.shape), dtype) for name, p in params.items()}
        optimizer.step([(name, p, grads[name]) for name, p in params.items()], lr=0.05 * (t + 1))
    return {name: backend.to_numpy(p) for name, p in params.items()}, optimizer


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-6), ("float64", 1e-13)])
def test_fused_sgd_matches_the_formula(backend, monkeypatch, momentum, nesterov, dtype, rtol, update_engine):
    """The backend's in-place SGD (NumPy blocks or numba's loops, shared among threads) against the
    formula in SGD.step."""
    from fastnn import kernels_cpu

    monkeypatch.setattr(kernels_cpu, "BLOCK", 64)  # several blocks and threads even on small arrays
    shapes = [(300, 70), (70,), (5, 3)]
    fused, optimizer = _sgd_trajectory(backend, True, shapes, momentum, nesterov, dtype=dtype)
    plain, _ = _sgd_trajectory(backend, False, shapes, momentum, nesterov, dtype=dtype)
    expected_kind = {"numpy": True, "cupy": False, "strict": False}[backend.name]
    assert all((step is not None) == expected_kind for step in optimizer._fused_steps.values())
    for name in plain:
        np.testing.assert_allclose(fused[name], plain[name], rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("make", [Adam, lambda: SGD(momentum=0.9, nesterov=True)], ids=["adam", "sgd-nesterov"])
def test_numpy_updates_are_the_same_on_any_number_of_threads(monkeypatch, make, update_engine):
    """Sharing the blocks among threads changes no bit: each element is updated by the same operations."""
    from fastnn import kernels_cpu

    monkeypatch.setattr(kernels_cpu, "BLOCK", 1000)
    monkeypatch.setattr(kernels_cpu, "_threads", kernels_cpu.threads())
    results = []
    for threads in (1, 2, 5):
        kernels_cpu.set_threads(threads)
        rng = np.random.default_rng(0)
        param = rng.normal(size=(123, 77)).astype(np.float32)
        optimizer = make()
        for _ in range(3):
            optimizer.step([("w", param, rng.normal(size=param.shape).astype(np.float32))], lr=0.01)
        results.append(param)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_kernel_threads_must_be_a_positive_whole_number(count):
    from fastnn import kernels_cpu

    with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
        kernels_cpu.set_threads(count)
