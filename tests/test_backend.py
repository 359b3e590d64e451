import importlib.util
import sys
import types

import numpy as np
import pytest
from _util import gpu_unavailable

from fastnn.backend import BackendUnavailable, available_backends, get_backend

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def test_round_trip_and_dtype(backend):
    host = np.arange(6, dtype=np.int32).reshape(2, 3)
    on_device = backend.asarray(host, "float32")
    assert on_device.dtype == backend.dtype("float32")
    back = backend.to_numpy(on_device)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, host)


def test_rng_is_seeded_and_on_the_device(backend):
    a, b = backend.rng(7), backend.rng(7)
    for draw in (lambda r: r.normal((3, 4), 2.0), lambda r: r.uniform((5,)), lambda r: r.permutation(10)):
        x, y = draw(a), draw(b)
        assert type(x) is type(backend.asarray([0.0]))
        np.testing.assert_array_equal(backend.to_numpy(x), backend.to_numpy(y))
    assert sorted(backend.to_numpy(backend.rng(1).permutation(10)).tolist()) == list(range(10))
    u = backend.to_numpy(backend.rng(2).uniform((10000,)))
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    ints = backend.to_numpy(backend.rng(3).integers(4, (1000,)))
    assert set(ints.tolist()) == {0, 1, 2, 3}


def test_strict_device_refuses_implicit_host_conversion():
    strict = get_backend("strict")
    with pytest.raises(RuntimeError):
        np.asarray(strict.asarray([1.0, 2.0]))
    with pytest.raises(ValueError, match="different devices"):
        strict.asarray([1.0]) + strict.xp.asarray([1.0])


def test_cpu_names():
    assert get_backend("cpu").name == "numpy" and get_backend("numpy").name == "numpy"


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
def test_gpu_without_cupy_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match=r"pip install cupy-cuda12x.*--device cpu"):
        get_backend("gpu")


def test_gpu_with_cupy_but_no_driver_is_a_clear_error(monkeypatch):
    """CuPy installs on any machine (``pip install cupy-cuda12x`` on a laptop) and fails only at its
    first call to the CUDA driver: that failure, whatever its type, becomes the one-line message."""

    class CUDARuntimeError(RuntimeError):
        pass

    def no_driver():
        raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    runtime = types.SimpleNamespace(getDeviceCount=no_driver)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))
    message = r"^CuPy found no usable CUDA driver \(cudaErrorInsufficientDriver: .*\); use --device cpu$"
    with pytest.raises(BackendUnavailable, match=message):
        get_backend("gpu")
    assert get_backend("auto").name == "numpy"


@pytest.mark.skipif(gpu_unavailable() is None, reason="a GPU is usable here")
def test_auto_falls_back_to_the_cpu_and_says_why():
    backend = get_backend("auto")
    assert backend.name == "numpy"
    assert "running on the CPU" in backend.note


def test_unknown_name():
    with pytest.raises(BackendUnavailable, match="unknown device 'tpu'"):
        get_backend("tpu")


def test_available_backends_lists_all_three():
    status = available_backends()
    assert set(status) == {"numpy", "cupy", "strict"}
    assert status["numpy"].startswith("ok")


def test_namespace_is_array_namespace_kept_per_type(backend):
    from array_api_compat import array_namespace

    from fastnn.backend import namespace

    x = backend.asarray([[1.0, 2.0]], "float32")
    assert namespace(x) is array_namespace(x)
    assert namespace(backend.asarray([3], "int64")) is namespace(x)  # the same type, the same answer
    with pytest.raises(TypeError):
        namespace([1.0, 2.0])


class _EmulatedElementwiseKernel:
    """``cupy.ElementwiseKernel`` run on the host: the kernel's body as NumPy statements on its arguments.

    Each ``T`` argument is a float32 array or a NumPy float32 scalar, so every operation rounds to
    float32 as the device does, and a constant like ``1`` in ``1 - beta1`` is applied to the float32
    value the kernel was given (C's usual arithmetic conversions, NEP 50's weak Python scalars).
    """

    def __init__(self, in_params, out_params, operation, name):
        self.in_names = [p.split()[-1] for p in in_params.split(",")]
        self.out_names = [p.split()[-1] for p in out_params.split(",")]
        self.statements = [line.strip().rstrip(";") for line in operation.strip().splitlines()]

    def __call__(self, *args):
        names = self.in_names + self.out_names
        values = dict(zip(names, args, strict=True), sqrt=np.sqrt)
        for statement in self.statements:
            exec(statement, {}, values)  # noqa: S102 - the kernel's own three lines
        for name, array in zip(self.out_names, args[len(self.in_names) :]):
            array[...] = values[name]


def test_cupy_adam_kernel_rounds_like_the_numpy_path(monkeypatch):
    """The fused CuPy kernel's float32 arithmetic, emulated on the host, against Adam's formula on
    NumPy: four steps of the trajectory that ``test_fused_adam_matches_the_formula`` uses, to its
    float32 tolerance. ``1 - beta2`` worked out in float32 inside the kernel is 1.3e-5 off and fails."""
    import fastnn.kernels_cuda as kernels_cuda
    import fastnn.optimizers as optimizers
    from fastnn.optimizers import Adam

    fake_cupy = types.SimpleNamespace(ElementwiseKernel=_EmulatedElementwiseKernel)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(kernels_cuda, "_adam_kernel", None)
    monkeypatch.setattr(optimizers, "fused_adam_step", lambda xp: kernels_cuda.adam_step())

    def trajectory(fused):
        rng = np.random.default_rng(0)
        param = rng.normal(size=(300, 70)).astype(np.float32)
        optimizer = Adam(fused=fused)
        for t in range(4):
            grad = rng.normal(scale=10.0**-t, size=param.shape).astype(np.float32)
            optimizer.step([("p", param, grad)], lr=0.01)
        return param

    np.testing.assert_allclose(trajectory(True), trajectory(False), rtol=2e-6, atol=2e-8)


class _CupyStartFails:
    """A meta-path finder under which ``import cupy`` raises what CuPy 14 raises where HOME is not
    writable (``docker run --user``): it makes ``~/.cupy/kernel_cache`` when imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "cupy":
            raise PermissionError(13, "Permission denied", "/home/nobody/.cupy")
        return None


def test_cupy_failing_to_start_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_CupyStartFails(), *sys.meta_path])
    with pytest.raises(BackendUnavailable, match=r"^CuPy could not start \(.*Permission denied.*CUPY_CACHE_DIR"):
        get_backend("gpu")
    backend = get_backend("auto")
    assert backend.name == "numpy" and "CuPy could not start" in backend.note


def _fake_cupy_with_a_gpu(arange=np.arange, matmul=np.matmul, compute_capability="90"):
    """A CuPy whose driver reports one GPU; its arrays are NumPy's, its ``arange`` and ``matmul`` replaceable."""
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1)
    device = types.SimpleNamespace(id=0, compute_capability=compute_capability)
    cuda = types.SimpleNamespace(runtime=runtime, Device=lambda: device)
    return types.SimpleNamespace(cuda=cuda, arange=arange, matmul=matmul, float32=np.float32)


class CompileException(Exception):
    pass


def _no_headers(*args, **kwargs):
    raise CompileException("Failed to find CUDA headers\n(the rest of NVRTC's log)")


def _no_cublas(*args, **kwargs):
    raise RuntimeError("CuPy failed to load libcublas.so.12: OSError: libcublas.so.12: cannot open shared object file")


@pytest.mark.parametrize("broken", [{"arange": _no_headers}, {"matmul": _no_cublas}], ids=["kernel", "cublas"])
def test_auto_probes_the_gpu_before_choosing_it(monkeypatch, broken):
    """A driver that reports a GPU, without the CUDA libraries CuPy needs (the headers for its kernels,
    cuBLAS): "gpu" says so in one line, "auto" takes the CPU; with them, CuPy is chosen."""
    import fastnn.backend as backend_module

    monkeypatch.setattr(backend_module, "_cupy_probed", False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy_with_a_gpu(**broken))
    with pytest.raises(BackendUnavailable, match=r"^CuPy cannot run on this GPU \((CompileException|RuntimeError): "):
        get_backend("gpu")
    with pytest.raises(BackendUnavailable, match=r"cupy-cuda12x\[ctk\]"):
        get_backend("gpu")
    assert get_backend("auto").name == "numpy"
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy_with_a_gpu())
    assert get_backend("auto").name == "cupy"


@pytest.mark.parametrize("capability, has_tf32", [("75", False), ("80", True), ("90", True)])
def test_set_tf32_only_where_the_gpu_has_tf32(monkeypatch, capability, has_tf32):
    import fastnn.backend as backend_module

    calls = []
    monkeypatch.setattr(backend_module, "_cupy_set_tf32", calls.append)
    gpu = backend_module.CupyBackend(_fake_cupy_with_a_gpu(compute_capability=capability))
    assert gpu.set_tf32(True) is has_tf32
    assert calls == ([True] if has_tf32 else [])


def test_asarray_copies_unless_told_the_data_is_only_read():
    cpu = get_backend("cpu")
    host = np.arange(6, dtype=np.float32)
    assert not np.shares_memory(cpu.asarray(host, "float32"), host)
    assert np.shares_memory(cpu.asarray(host, "float32", copy=False), host)  # training data: no second copy
    assert not np.shares_memory(cpu.asarray(host, "float64", copy=False), host)  # another dtype is a new array


def test_one_class_per_backend_with_its_name_as_a_label():
    from fastnn.backend import NumpyBackend, StrictBackend

    cpu, strict = get_backend("cpu"), get_backend("strict")
    assert type(cpu) is NumpyBackend and cpu.name == "numpy" and cpu == NumpyBackend()
    assert type(strict) is StrictBackend and strict.name == "strict"
    assert cpu.fused_adam_step() is not None and strict.fused_adam_step() is None
