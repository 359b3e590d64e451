"""The CPU optimizer kernels' two engines (fastnn.kernels_cpu): the same bits, and a clear fallback.

How the kernels match the plain formulas is checked in tests/test_optimizers.py, on each engine.
"""

import sys

import numpy as np
import pytest

from fastnn import kernels_cpu
from fastnn.optimizers import SGD, Adam


def _trajectory(make, engine, dtype, shapes, steps=3):
    previous = kernels_cpu.set_engine(engine)
    try:
        rng = np.random.default_rng(0)
        params = {f"p{i}": rng.normal(size=shape).astype(dtype) for i, shape in enumerate(shapes)}
        optimizer = make()
        for _ in range(steps):
            grads = [(name, p, rng.normal(size=p.shape).astype(dtype)) for name, p in params.items()]
            optimizer.step(grads, lr=0.01)
        return params
    finally:
        kernels_cpu.set_engine(previous)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "make",
    [Adam, lambda: SGD(), lambda: SGD(momentum=0.9), lambda: SGD(momentum=0.9, nesterov=True)],
    ids=["adam", "sgd", "sgd-momentum", "sgd-nesterov"],
)
def test_the_two_engines_give_the_same_bits(monkeypatch, make, dtype):
    """numba's loops do NumPy's operations in NumPy's order, without fused multiply-adds, so a run can
    change engine (a laptop without numba resuming a checkpoint) and still end bit-identical."""
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    monkeypatch.setattr(kernels_cpu, "BLOCK", 100)  # several threads' parts on test-sized arrays too
    shapes = [(300, 70), (70,), (), (5, 3)]
    numba_result = _trajectory(make, "numba", dtype, shapes)
    numpy_result = _trajectory(make, "numpy", dtype, shapes)
    for name in numpy_result:
        np.testing.assert_array_equal(numba_result[name], numpy_result[name])


def test_a_strided_parameter_is_updated_by_the_numpy_engine(monkeypatch):
    """numba's loops take contiguous arrays only; a strided view is updated in place all the same."""
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    previous = kernels_cpu.set_engine("numba")
    try:
        rng = np.random.default_rng(1)
        base = rng.normal(size=(40, 30)).astype(np.float32)
        view = base[:, ::2]  # strided: the NumPy engine's path
        expected = view.copy()
        grad = rng.normal(size=view.shape).astype(np.float32)
        Adam(fused=False).step([("w", expected, grad)], lr=0.01)
        Adam().step([("w", view, grad)], lr=0.01)
        np.testing.assert_allclose(base[:, ::2], expected, rtol=2e-6)
    finally:
        kernels_cpu.set_engine(previous)


def test_without_numba_the_numpy_engine_serves(monkeypatch):
    """Where numba is missing (or refuses this NumPy), updates run on NumPy, and asking for numba
    by name says what to install."""
    import fastnn

    monkeypatch.setitem(sys.modules, "fastnn.kernels_numba", None)  # makes the import fail
    monkeypatch.delattr(fastnn, "kernels_numba", raising=False)
    monkeypatch.setattr(kernels_cpu, "_numba", None)
    monkeypatch.setattr(kernels_cpu, "_engine", None)
    assert kernels_cpu.engine() == "numpy"
    with pytest.raises(ValueError, match=r"pip install 'fastnn\[fast\]'"):
        kernels_cpu.set_engine("numba")
    param = np.ones(5, np.float32)
    Adam().step([("w", param, np.ones(5, np.float32))], lr=0.1)
    np.testing.assert_allclose(param, 0.9, rtol=1e-6)  # Adam's first step moves by lr


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="unknown engine 'fortran'; choose one of numba, numpy"):
        kernels_cpu.set_engine("fortran")


# -- the elementwise loops: ReLU forward and backward, the batch gather (numba engine) ----------------


def _odd_values(shape, dtype, seed=0):
    """Random values with the awkward ones among them: -0.0, +0.0, NaN, infinities, tiny and huge."""
    x = np.random.default_rng(seed).normal(size=shape).astype(dtype)
    flat = x.reshape(-1)
    flat[:8] = [-0.0, 0.0, np.nan, -np.nan, np.inf, -np.inf, np.finfo(dtype).tiny, -np.finfo(dtype).max]
    return x


def _bits(a):
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_loops_give_the_formulas_bits(dtype):
    """The loops are the formulas of ReLU (fastnn.fused.relu, relu_grad) to the bit, -0.0 and NaN included."""
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    previous = kernels_cpu.set_engine("numba")
    try:
        x = _odd_values((300, 200), dtype)  # above PARALLEL_MIN: the loops run
        grad = _odd_values((300, 200), dtype, seed=1)
        y = kernels_cpu.relu(x)
        assert y is not None and y.dtype == dtype
        np.testing.assert_array_equal(_bits(y), _bits(np.maximum(x, 0.0)))
        dx = kernels_cpu.relu_grad(grad, y)
        assert dx is not None
        with np.errstate(invalid="ignore"):  # inf * 0.0: NaN, the formula's answer too
            np.testing.assert_array_equal(_bits(dx), _bits(grad * (y > 0).astype(dtype)))
    finally:
        kernels_cpu.set_engine(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(300, 200), (1000, 333), (2000, 40)], ids=str)
def test_sum_rows_gives_numpys_bits(dtype, shape):
    """The bias gradient's loop sums each column in NumPy's order (a row at a time, from +0.0), so
    to the bit, -0.0 and NaN included; the columns split unevenly among the threads too."""
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    from fastnn.fused import sum_rows

    x = _odd_values(shape, dtype)
    x[:, 3] = -0.0  # NumPy starts from +0.0: a column of -0.0 sums to +0.0
    previous = kernels_cpu.set_engine("numba")
    try:
        total = kernels_cpu.sum_rows(x)
        assert total is not None and total.dtype == dtype and total.shape == (shape[1],)
        with np.errstate(invalid="ignore"):  # inf + -inf: NaN, NumPy's answer too
            expected = np.sum(x, axis=0)
        np.testing.assert_array_equal(_bits(total), _bits(expected))
        np.testing.assert_array_equal(_bits(sum_rows(x)), _bits(expected))
    finally:
        kernels_cpu.set_engine(previous)


def test_the_loops_leave_what_they_do_not_take_to_numpy():
    """Small, strided, integer or mixed arrays, and the NumPy engine: None, and the formula runs."""
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    big = np.ones((300, 200), np.float32)
    previous = kernels_cpu.set_engine("numba")
    try:
        assert kernels_cpu.relu(np.ones((10, 10), np.float32)) is None  # below PARALLEL_MIN
        assert kernels_cpu.relu(np.ones((600, 200), np.float32)[::2]) is None  # strided
        assert kernels_cpu.relu(np.ones((300, 200), np.int64)) is None
        assert kernels_cpu.relu_grad(big, big.astype(np.float64)) is None
        assert kernels_cpu.relu_grad(big, big[:, :100].copy()) is None
        assert kernels_cpu.take_rows(big, np.array([0, 1])) is None  # too few rows to share
        assert kernels_cpu.sum_rows(np.ones((8000, 5), np.float32)) is None  # too few columns to share
        assert kernels_cpu.sum_rows(big.reshape(-1)) is None  # not 2-D
        kernels_cpu.set_engine("numpy")
        assert kernels_cpu.relu(big) is None and kernels_cpu.take_rows(big, np.arange(300)) is None
        assert kernels_cpu.sum_rows(big) is None
    finally:
        kernels_cpu.set_engine(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_take_rows_copies_numpys_rows(dtype):
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    from fastnn.fused import take_rows

    x = _odd_values((1000, 300), dtype)
    index = np.random.default_rng(2).permutation(1000)[:400]
    previous = kernels_cpu.set_engine("numba")
    try:
        rows = kernels_cpu.take_rows(x, index)
        assert rows is not None and rows.flags.c_contiguous
        np.testing.assert_array_equal(_bits(rows), _bits(np.take(x, index, axis=0)))
        np.testing.assert_array_equal(_bits(kernels_cpu.take_rows(x, index.astype(np.int32))), _bits(rows))
        # negative indices mean what they mean to NumPy, and one past the end is NumPy's error, not a stray read
        negative = index - 1000
        assert kernels_cpu.take_rows(x, negative) is None
        np.testing.assert_array_equal(_bits(take_rows(x, negative)), _bits(rows))
        with pytest.raises(IndexError):
            take_rows(x, np.append(index, 1000))
    finally:
        kernels_cpu.set_engine(previous)


_FORKED_LOOPS = """
import os, numpy as np
from fastnn import kernels_cpu
from fastnn.fused import relu
import numba
x = np.full((300, 200), -1.0, np.float32)
assert kernels_cpu.engine() == "numba"
relu(x)  # numba's loop starts its threads
print("layer", numba.threading_layer(), flush=True)
pid = os.fork()
if pid == 0:
    print("child", kernels_cpu.engine(), float(relu(x).sum()), flush=True)
    try:
        kernels_cpu.set_engine("numba")
    except ValueError as exc:
        print("refused:", exc, flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("parent", kernels_cpu.engine(), float(relu(x).sum()), os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_runs_the_numpy_engine_instead_of_being_killed():
    """numba kills a forked child whose loop starts GNU OpenMP's threads ("fork() called from a process
    already using GNU OpenMP"); the child runs the formulas on NumPy instead."""
    pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    import subprocess

    done = subprocess.run([sys.executable, "-c", _FORKED_LOOPS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if lines[0] != "layer omp":
        pytest.skip(f"numba runs on another threading layer here ({lines[0]}): nothing to refuse")
    assert lines[1:] == [
        "child numpy 0.0",
        "refused: the numba engine is not for a process forked from one whose numba loops ran on GNU OpenMP's "
        "threads",
        "parent numba 0.0 0",
    ]


def test_the_default_thread_count_takes_a_workers_share(monkeypatch):
    """``fastnn experiments`` and ``fastnn tune`` start their workers with OMP_NUM_THREADS set to a share
    of the cores: the updates and loops keep to it, as the products do, rather than oversubscribe."""
    monkeypatch.setattr(kernels_cpu.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert kernels_cpu._default_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert kernels_cpu._default_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    assert kernels_cpu._default_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # a nested list: not a count fastnn reads
    assert kernels_cpu._default_threads() == 4
