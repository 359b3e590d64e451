"""Mixup and test-time flip averaging against the same operations written out in NumPy."""

import random

import numpy as np
import pytest

from fastnn import kernels_cpu, kernels_loops
from fastnn.augment import Mixup, augment_images, flip_averaged_probabilities, hflip
from fastnn.backend import get_backend
from fastnn.network import Network


def _images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3072))


def test_mixup_blends_pairs_of_rows_and_their_targets(backend):
    """Same lambda (a Beta(alpha, alpha) draw from the seed) and the same pairing (a permutation
    from the device generator's seed) as a NumPy reconstruction."""
    x_host, labels = np.random.default_rng(0).normal(size=(6, 4)), np.array([0, 2, 1, 1, 0, 2])
    mixed_x, mixed_t = Mixup(0.8, seed=5)(
        backend.asarray(x_host, "float64"), backend.asarray(labels, "int64"), 3, backend.rng(9)
    )
    lam = random.Random(5).betavariate(0.8, 0.8)
    partner = backend.to_numpy(backend.rng(9).permutation(6))
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(backend.to_numpy(mixed_x), lam * x_host + (1 - lam) * x_host[partner], rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(mixed_t), lam * onehot + (1 - lam) * onehot[partner], rtol=1e-12)
    assert 0 < lam < 1 and not np.allclose(backend.to_numpy(mixed_x), x_host)


def test_mixup_of_probability_rows_keeps_them_distributions(backend):
    rows = np.random.default_rng(1).dirichlet(np.ones(4), size=8)
    mixer = Mixup(1.0, seed=0)
    for _ in range(3):  # a new lambda each call
        _, mixed = mixer(backend.asarray(np.zeros((8, 2)), "float64"), backend.asarray(rows, "float64"), 4,
                         backend.rng(0))
        mixed = backend.to_numpy(mixed)
        np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-12)
        assert np.all(mixed >= 0)


@pytest.mark.parametrize("alpha", [0, -1, float("nan"), "0.8"])
def test_bad_mixup_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="mixup alpha must be a finite number > 0"):
        Mixup(alpha)


def test_hflip_mirrors_each_plane(backend):
    x_host = _images(3)
    flipped = backend.to_numpy(hflip(backend.asarray(x_host, "float64")))
    np.testing.assert_array_equal(flipped, x_host.reshape(3, 3, 32, 32)[..., ::-1].reshape(3, 3072))
    with pytest.raises(ValueError, match="3072 values"):
        hflip(backend.asarray(np.zeros((2, 10)), "float64"))


def test_flip_averaged_probabilities(backend):
    net = Network([3072, 8, 5], backend=backend, seed=0, dtype="float64")
    x_host = _images(7, seed=1)
    mirrored = x_host.reshape(7, 3, 32, 32)[..., ::-1].reshape(7, 3072)
    expected = 0.5 * (backend.to_numpy(net.forward_pass(backend.asarray(x_host, "float64")))
                      + backend.to_numpy(net.forward_pass(backend.asarray(mirrored, "float64"))))
    for batch_size in (7, 3):
        averaged = flip_averaged_probabilities(net, backend.asarray(x_host, "float64"), batch_size=batch_size)
        np.testing.assert_allclose(backend.to_numpy(averaged), expected, rtol=1e-12)
    empty = flip_averaged_probabilities(net, backend.asarray(np.zeros((0, 3072)), "float64"))
    assert tuple(empty.shape) == (0, 5)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        flip_averaged_probabilities(net, backend.asarray(x_host, "float64"), batch_size=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shift", [0, 2, 5])
def test_compiled_flips_and_shifts_give_the_formulas_bits(dtype, shift):
    """With the numba engine, NumPy's flips and shifts are one compiled loop
    (``kernels_numba.flip_shift``); it must give exactly the pixels of the formula in
    ``augment_images``, from the same random draws, so that a run's images do not depend on numba."""
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    backend = get_backend("cpu")
    whole = np.random.default_rng(1).normal(size=(66, 3072)).astype(dtype)
    x = whole[::2]  # 33 rows, a strided view
    results = {}
    previous = kernels_cpu.engine()
    try:
        for engine in ("numba", "numpy"):
            kernels_cpu.set_engine(engine)
            rng = backend.rng(7)
            results[engine] = [augment_images(x, rng, shift) for _ in range(3)]
    finally:
        kernels_cpu.set_engine(previous)
    for compiled, formula in zip(results["numba"], results["numpy"]):
        assert compiled.dtype == formula.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(compiled, formula)
    assert not np.array_equal(results["numba"][0], results["numba"][1]) or shift == 0


def test_compiled_flips_and_shifts_refuse_rows_that_are_not_images():
    """The compiled loop indexes 3072 values per row without bounds checks, so it refuses other widths."""
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    with pytest.raises(ValueError, match="rows of 32x32 colour images"):
        kernels_loops.flip_shift(np.zeros((4, 100), np.float32), np.zeros(4, bool), np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="one flip and one shift"):
        kernels_loops.flip_shift(np.zeros((4, 3072), np.float32), np.zeros(3, bool), np.zeros(4, int), np.zeros(4, int))
