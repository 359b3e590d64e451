"""Random numbers made where the arrays live, so that nothing is copied across per batch.

A backend hands out its generator (``backend.rng(seed)``): :class:`NumpyRNG` on the CPU,
:class:`CupyRNG` on the GPU (cuRAND, through CuPy's ``RandomState``), and the plain
:class:`DeviceRNG`, which draws with NumPy and copies the draws to the device, for array-api-strict's
simulated one. Each draws normal and uniform floats, integers and permutations, and hands out its
state for a run to resume from (``get_state``, ``set_state``).

The generators reach the device through their backend (its ``asarray`` and ``xp``): this module
never imports CuPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fastnn.backend import Backend


class DeviceRNG:
    """Random numbers made where the arrays live, so that nothing is copied across per batch.

    ``normal(shape, std)`` and ``uniform(shape)`` give float arrays, ``integers(high, shape)`` and
    ``permutation(n)`` index arrays, all on the backend's device. This class draws them with NumPy's
    generator and hands them to ``backend.asarray``, which puts them on array-api-strict's simulated
    device; :class:`NumpyRNG` and :class:`CupyRNG` draw them where their arrays live. Make one with
    ``backend.rng(seed)``.
    """

    def __init__(self, backend: Backend, seed: int | None):
        self.backend = backend
        self._gen = np.random.default_rng(seed)

    def normal(self, shape: tuple[int, ...], std: float = 1.0, dtype: str = "float32") -> Any:
        return self.backend.asarray(self._gen.normal(0.0, std, size=shape), dtype)

    def uniform(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        """Uniform on [0, 1)."""
        return self.backend.asarray(self._gen.random(size=shape), dtype)

    def integers(self, high: int, shape: tuple[int, ...]) -> Any:
        """Integers in [0, high)."""
        return self.backend.asarray(self._gen.integers(0, high, size=shape), "int64")

    def permutation(self, n: int) -> Any:
        return self.backend.asarray(self._gen.permutation(n), "int64")

    def get_state(self) -> dict:
        """The generator's state as JSON-able data (to resume a run): NumPy's bit generator's state,
        read without changing it."""
        return self._gen.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Continue from a state :meth:`get_state` returned (on the same kind of backend)."""
        self._gen.bit_generator.state = state


class NumpyRNG(DeviceRNG):
    """NumPy's generator on the CPU, whose uniform floats are drawn in the dtype asked for."""

    def uniform(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        """Uniform on [0, 1)."""
        return self._gen.random(size=shape, dtype=np.dtype(dtype))


CUPY_STREAMS = "cupy RandomState, reseeded per stream"
"""The kind of a CuPy :class:`CupyRNG` state (NumPy's are named by their bit generator, e.g. PCG64)."""


class CupyRNG(DeviceRNG):
    """CuPy's ``RandomState`` (cuRAND) on the GPU, reseeded per stream (:meth:`get_state` says why)."""

    def __init__(self, backend: Backend, seed: int | None):
        self.backend = backend
        self._seed = int(np.random.SeedSequence(seed).entropy)  # a seed of None draws one
        self._streams = 0
        self._gen = backend.xp.random.RandomState(self._stream_seed())

    def normal(self, shape: tuple[int, ...], std: float = 1.0, dtype: str = "float32") -> Any:
        return self._gen.normal(0.0, std, size=shape, dtype=dtype)

    def uniform(self, shape: tuple[int, ...], dtype: str = "float32") -> Any:
        """Uniform on [0, 1)."""
        return self._gen.random_sample(size=shape, dtype=dtype)

    def integers(self, high: int, shape: tuple[int, ...]) -> Any:
        """Integers in [0, high)."""
        # floor(u * high) from uniform floats: CuPy's randint over a range that is not a power of two
        # draws again the values past its limit, and counts them on the host first (a device wait)
        scaled = self._gen.random_sample(size=shape, dtype="float64") * high
        return self.backend.xp.minimum(scaled.astype("int64"), high - 1)  # u * high may round up to high

    def permutation(self, n: int) -> Any:
        return self._gen.permutation(n)

    def get_state(self) -> dict:
        """The generator's state as JSON-able data (to resume a run).

        CuPy's ``RandomState`` keeps its state in cuRAND, whose position the host cannot read back,
        so this starts a new stream, seeded from the seed and the number of streams so far, and
        returns those two numbers: called at the same points of every run (``Trainer`` does, after
        each epoch), the numbers drawn after it are the same whether the run went on or was resumed
        from it.
        """
        self._streams += 1
        self._gen.seed(self._stream_seed())
        return {"bit_generator": CUPY_STREAMS, "seed": self._seed, "streams": self._streams}

    def set_state(self, state: dict) -> None:
        if state.get("bit_generator") != CUPY_STREAMS:
            raise ValueError(f"a random state of {state.get('bit_generator')!r} cannot go on with CuPy")
        self._seed, self._streams = int(state["seed"]), int(state["streams"])
        self._gen.seed(self._stream_seed())

    def _stream_seed(self) -> np.uint64:
        """CuPy's seed of the current stream, mixed from the seed and the stream count: 32 bits (as
        NumPy's RandomState takes too, which stands in for CuPy's in tests) in a NumPy uint64, which
        every CuPy's ``seed`` takes: some cast a seed to uint64 with ``casting="safe"``, which NumPy 2
        refuses for a Python int."""
        return np.uint64(np.random.SeedSequence([self._seed, self._streams]).generate_state(1, np.uint32)[0])
