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
