"""The numba engine's elementwise loops of a training step (fastnn.kernels_loops): the formulas'
bits, and NumPy's formula for what a loop does not take."""

import numpy as np
import pytest

from fastnn import kernels_cpu, kernels_loops


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
        y = kernels_loops.relu(x)
        assert y is not None and y.dtype == dtype
        np.testing.assert_array_equal(_bits(y), _bits(np.maximum(x, 0.0)))
        dx = kernels_loops.relu_grad(grad, y)
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
        total = kernels_loops.sum_rows(x)
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
        assert kernels_loops.relu(np.ones((10, 10), np.float32)) is None  # below PARALLEL_MIN
        assert kernels_loops.relu(np.ones((600, 200), np.float32)[::2]) is None  # strided
        assert kernels_loops.relu(np.ones((300, 200), np.int64)) is None
        assert kernels_loops.relu_grad(big, big.astype(np.float64)) is None
        assert kernels_loops.relu_grad(big, big[:, :100].copy()) is None
        assert kernels_loops.take_rows(big, np.array([0, 1])) is None  # too few rows to share
        assert kernels_loops.sum_rows(np.ones((8000, 5), np.float32)) is None  # too few columns to share
        assert kernels_loops.sum_rows(big.reshape(-1)) is None  # not 2-D
        kernels_cpu.set_engine("numpy")
        assert kernels_loops.relu(big) is None and kernels_loops.take_rows(big, np.arange(300)) is None
        assert kernels_loops.sum_rows(big) is None
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
        rows = kernels_loops.take_rows(x, index)
        assert rows is not None and rows.flags.c_contiguous
        np.testing.assert_array_equal(_bits(rows), _bits(np.take(x, index, axis=0)))
        np.testing.assert_array_equal(_bits(kernels_loops.take_rows(x, index.astype(np.int32))), _bits(rows))
        # negative indices mean what they mean to NumPy, and one past the end is NumPy's error, not a stray read
        negative = index - 1000
        assert kernels_loops.take_rows(x, negative) is None
        np.testing.assert_array_equal(_bits(take_rows(x, negative)), _bits(rows))
        with pytest.raises(IndexError):
            take_rows(x, np.append(index, 1000))
    finally:
        kernels_cpu.set_engine(previous)
