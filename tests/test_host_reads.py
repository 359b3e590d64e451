"""Nothing in the batch loop waits for the device: checked on a stand-in device that refuses host reads.

On a GPU, a value read back to the host (``float(x)``, ``bool(x)``, ``x.item()``, a boolean mask whose
result size the host must know) waits for all queued work. The stand-in is NumPy with two changes:
- its arrays (a NumPy subclass) raise :class:`HostRead` on those reads while the batch loop runs;
- its namespace and random generator do what CuPy's do where they differ from NumPy's: array-api-compat's
  ``clip`` for CuPy (assignment through boolean masks), and ``RandomState.randint``, which over a range
  that is not a power of two selects the draws to redo on the host (CuPy's ``RandomState._interval``).
"""

import types

import numpy as np
import pytest
from array_api_compat import numpy as compat_numpy
from array_api_compat.common import _aliases

import fastnn.backend as backend_module
import fastnn.train as train_module
from fastnn.backend import CupyBackend, NumpyBackend
from fastnn.config import TrainConfig
from fastnn.network import Network
from fastnn.optimizers import Adam


class HostRead(AssertionError):
    """The host asked the device for a value inside the batch loop."""


class DeviceArray(np.ndarray):
    """A NumPy array that, while ``guarded`` is set, refuses what would read it back to the host."""

    guarded = False

    def _refuse(self, what):
        if DeviceArray.guarded:
            raise HostRead(f"{what} of a device array {self.shape} in the batch loop")

    def __bool__(self):
        self._refuse("bool()")
        return super().__bool__()

    def __int__(self):
        self._refuse("int()")
        return super().__int__()

    def __float__(self):
        self._refuse("float()")
        return super().__float__()

    def __index__(self):
        self._refuse("use as an index")
        return super().__index__()

    def item(self, *args):
        self._refuse("item()")
        return super().item(*args)

    def tolist(self):
        self._refuse("tolist()")
        return super().tolist()

    def __getitem__(self, key):
        self._check_key(key)
        return on_device(super().__getitem__(key))  # CuPy gives a 0-d array for x[0], not a host scalar

    def __array_wrap__(self, array, context=None, return_scalar=False):
        return on_device(array)  # likewise for reductions (sum, argmax) to 0-d

    def __setitem__(self, key, value):
        self._check_key(key)
        super().__setitem__(key, value)

    def _check_key(self, key):
        for part in key if isinstance(key, tuple) else (key,):
            if isinstance(part, np.ndarray) and part.dtype == bool:
                self._refuse("a boolean mask (its result's size)")


def on_device(array):
    return np.asarray(array).view(DeviceArray)


def _results_on_device(function):
    def on_the_device(*args, **kwargs):
        result = function(*args, **kwargs)
        return on_device(result) if isinstance(result, np.ndarray) else result

    return on_the_device


# array-api-compat's CuPy namespace played by NumPy: arrays it makes are device arrays, and its clip is
# array-api-compat's own generic one, which array_api_compat.cupy.clip is
device_namespace = types.ModuleType("device_namespace")
for _name in dir(compat_numpy):
    _value = getattr(compat_numpy, _name)
    if not _name.startswith("_"):
        plain_function = isinstance(_value, (types.FunctionType, types.BuiltinFunctionType))
        setattr(device_namespace, _name, _results_on_device(_value) if plain_function else _value)
device_namespace.clip = lambda x, min=None, max=None: _aliases.clip(x, min, max, xp=np)


class DeviceRandomState:
    """``cupy.random.RandomState`` played by NumPy, including where its randint reads from the device."""

    def __init__(self, seed):
        self._host = np.random.RandomState(seed)

    def random_sample(self, size, dtype="float64"):
        return on_device(self._host.random_sample(size).astype(dtype))

    def normal(self, loc, scale, size, dtype="float32"):
        return on_device(self._host.normal(loc, scale, size).astype(dtype))

    def permutation(self, n):
        return on_device(self._host.permutation(n))

    def randint(self, low, high, size, dtype="int64"):
        span = high - low
        sample = on_device(self._host.randint(0, 2**32, size, dtype=np.uint64))
        if span & (span - 1):  # not a power of two: redraw the values at or past the last whole multiple of span
            limit = 2**32 - 2**32 % span
            redo = sample >= limit
            sample[redo] = on_device(self._host.randint(0, limit, int(np.count_nonzero(redo)), dtype=np.uint64))
        return (sample % span + low).astype(dtype)


device_namespace.random = types.SimpleNamespace(RandomState=DeviceRandomState)


@pytest.fixture
def guarded_device(monkeypatch):
    """A CuPy backend (so that its generator is CuPy's) whose arrays refuse host reads from the
    end of train_epoch's checks (which read the labels once, on purpose) until it returns."""
    monkeypatch.setitem(backend_module._NAMESPACES, DeviceArray, device_namespace)
    monkeypatch.setattr(_aliases, "array_namespace", lambda *arrays: device_namespace)  # clip's own lookup
    check_data = train_module.check_data

    def check_then_guard(*args, **kwargs):
        check_data(*args, **kwargs)
        monkeypatch.setattr(DeviceArray, "guarded", True)

    monkeypatch.setattr(train_module, "check_data", check_then_guard)
    return CupyBackend(device_namespace, "device")


def test_the_stand_in_catches_the_reads_it_is_for(guarded_device):
    """Each kind of read the stand-in refuses, refused (so that the next test can fail)."""
    DeviceArray.guarded = True
    try:
        x = on_device([1.0, -2.0, 3.0])
        for read in (lambda: float(x[0]), lambda: bool(x[0] > 0), lambda: x[x > 0], lambda: x.item(0)):
            with pytest.raises(HostRead):
                read()
        with pytest.raises(HostRead):
            device_namespace.clip(x, 0.0, 1.0)
        with pytest.raises(HostRead):
            guarded_device.rng(0)._gen.randint(0, 5, (8,))
    finally:
        DeviceArray.guarded = False


class HostNumbersOnly(train_module.TrainingListener):
    """A listener that checks that the batch loop tells it Python numbers, not device arrays."""

    def batch_finished(self, done, total):
        assert type(done) is int and type(total) is int, (type(done), type(total))


@pytest.mark.parametrize("augment", [True, False], ids=["augment", "plain"])
def test_train_epoch_reads_nothing_from_the_device_in_its_batch_loop(guarded_device, augment):
    """A whole epoch as fastnn train runs it on a GPU (8 batches gathered at once, Adam), with
    augmentation (the default) and without, telling a listener after each batch; the sums it returns
    are the epoch's one read."""
    rng = np.random.default_rng(0)
    network = Network([3072, 16, 10], backend=NumpyBackend())
    for layer in network.layers:
        layer.params = {name: on_device(value) for name, value in getattr(layer, "params", {}).items()}
    assert all(isinstance(p, DeviceArray) for _, p in network.parameters())
    x = on_device(rng.normal(size=(100, 3072)).astype(np.float32))
    y = on_device(rng.integers(0, 10, 100))
    loss_sum, correct = train_module.train_epoch(
        network, Adam(), x, y, batch_size=8, lr=1e-3, rng=guarded_device.rng(0), augment=augment, gather=8,
        listener=HostNumbersOnly(),
    )  # fmt: skip
    DeviceArray.guarded = False
    assert np.isfinite(float(loss_sum)) and 0 <= int(correct) <= 100


def test_cupy_integers_from_uniform_floats_cover_the_range(guarded_device):
    draws = guarded_device.rng(3).integers(5, (5000,))
    assert draws.dtype == np.int64
    counts = np.bincount(np.asarray(draws), minlength=5)
    assert counts.size == 5 and counts.min() > 900  # about 1000 each


def test_mixup_batchnorm_and_adamw_read_nothing_from_the_device(guarded_device):
    """The techniques that change the batch loop (mixup's soft targets, BatchNorm's running statistics,
    label smoothing, AdamW's decay) as TrainConfig builds them, in the same guarded epoch."""
    config = TrainConfig(hidden=(16,), norm="batch", mixup=0.4, label_smoothing=0.1, optimizer="adamw",
                         weight_decay=0.01)  # fmt: skip
    network = config.make_network(NumpyBackend(), 3072, 10)
    for _, layer in network.named_layers():
        layer.params = {name: on_device(value) for name, value in layer.params.items()}
        layer.buffers = {name: on_device(value) for name, value in layer.buffers.items()}
    rng = np.random.default_rng(0)
    x = on_device(rng.normal(size=(100, 3072)).astype(np.float32))
    y = on_device(rng.integers(0, 10, 100))
    loss_sum, correct = train_module.train_epoch(
        network, config.make_optimizer(), x, y, batch_size=8, lr=1e-3, rng=guarded_device.rng(0),
        augment=True, gather=8, mixup=config.make_mixup(),
    )  # fmt: skip
    DeviceArray.guarded = False
    assert np.isfinite(float(loss_sum)) and 0 <= int(correct) <= 100
