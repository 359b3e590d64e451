"""A generator's get_state / set_state (fastnn.rng): a restored generator draws what the original would have."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from fastnn.backend import CupyBackend, get_backend


def test_a_device_rng_goes_on_from_its_state(backend):
    rng = backend.rng(3)
    rng.permutation(10)
    state = json.loads(json.dumps(rng.get_state()))  # as a checkpoint stores it
    expected = [backend.to_numpy(rng.uniform((4,))), backend.to_numpy(rng.integers(5, (6,)))]
    other = backend.rng(99)
    other.set_state(state)
    np.testing.assert_array_equal(backend.to_numpy(other.uniform((4,))), expected[0])
    np.testing.assert_array_equal(backend.to_numpy(other.integers(5, (6,))), expected[1])


class NumpyAsCupyRandomState:
    """CuPy's ``RandomState`` as CupyRNG uses it, made with NumPy: seeded with a uint64, and no way
    to read its position back. It checks CupyRNG without a GPU (not cuRAND itself)."""

    def __init__(self, seed):
        self.seed(seed)

    def seed(self, seed):
        assert isinstance(seed, np.uint64)
        self._gen = np.random.default_rng(int(seed))

    def random_sample(self, size, dtype):
        return self._gen.random(size=size).astype(dtype)

    def permutation(self, n):
        return self._gen.permutation(n)


def test_a_cupy_rng_state_starts_a_stream_that_a_restored_rng_repeats():
    xp = SimpleNamespace(random=SimpleNamespace(RandomState=NumpyAsCupyRandomState), minimum=np.minimum)
    fake = CupyBackend(xp)
    for seed in (3, None):
        rng = fake.rng(seed)
        rng.permutation(10)
        state = json.loads(json.dumps(rng.get_state()))
        expected = [rng.uniform((4,)), rng.integers(5, (6,)), rng.permutation(7)]
        other = fake.rng(99)
        other.set_state(state)
        for drawn, wanted in zip([other.uniform((4,)), other.integers(5, (6,)), other.permutation(7)], expected):
            np.testing.assert_array_equal(drawn, wanted)
    assert fake.rng(3).get_state() != fake.rng(4).get_state()
    with pytest.raises(ValueError, match="a random state of 'PCG64' cannot go on with CuPy"):
        other.set_state(get_backend("cpu").rng(0).get_state())
