"""fastnn.kernels_onednn: NumPy's float32 products through oneDNN (the ``[onednn]`` extra), and the
choice between it and NumPy's BLAS (fastnn.kernels_cpu.products)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn import kernels_cpu, kernels_onednn
from fastnn.backend import get_backend
from fastnn.fused import matmul
from fastnn.layers import Dense

pytestmark = pytest.mark.skipif(kernels_onednn.load() is None, reason=f"{kernels_onednn.why_not()}")


@pytest.fixture
def onednn():
    previous = kernels_cpu.set_products("onednn")
    yield
    kernels_cpu.set_products(previous)


def _pair(rng, m, k, n, a_transposed, b_transposed):
    a = rng.standard_normal((k, m) if a_transposed else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if b_transposed else (k, n), dtype=np.float32)
    return (a.T if a_transposed else a), (b.T if b_transposed else b)


@pytest.mark.parametrize("path", ["primitive", "sgemm"])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
@pytest.mark.parametrize("m,k,n", [(256, 3072, 1024), (7, 13, 5), (1, 9, 1), (33, 1, 17)])
def test_products_match_float64_as_closely_as_numpy(onednn, monkeypatch, m, k, n, a_transposed, b_transposed, path):
    """Both of oneDNN's ways, the matmul primitive (small outputs) and sgemm (large ones)."""
    monkeypatch.setattr(kernels_onednn, "PRIMITIVE_MAX_OUTPUTS", 1 << 40 if path == "primitive" else 0)
    rng = np.random.default_rng(m + k + n)
    a, b = _pair(rng, m, k, n, a_transposed, b_transposed)
    out = kernels_onednn.matmul(a, b)
    reference = a.astype(np.float64) @ b.astype(np.float64)
    assert out.shape == (m, n) and out.dtype == np.float32 and out.flags.c_contiguous
    numpy_error = np.abs((a @ b) - reference).max()
    # float32 rounding of k products: both libraries' errors are of the same size, not equal
    assert np.abs(out - reference).max() <= 4 * numpy_error + 1e-6 * np.sqrt(k)


@pytest.mark.parametrize("path", ["primitive", "sgemm"])
def test_row_strided_views_are_read_with_their_row_stride(onednn, monkeypatch, path):
    monkeypatch.setattr(kernels_onednn, "PRIMITIVE_MAX_OUTPUTS", 1 << 40 if path == "primitive" else 0)
    rng = np.random.default_rng(1)
    big = rng.standard_normal((40, 70), dtype=np.float32)
    a, b = big[:, :30], big[3:33, 35:60]  # rows not contiguous with each other, each row contiguous
    assert kernels_onednn._operand(a)[2] == 70
    np.testing.assert_allclose(kernels_onednn.matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kernels_onednn.matmul(b.T, a.T), b.T @ a.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: (rng.standard_normal((5, 4)), rng.standard_normal((4, 3))),  # float64
        lambda rng: (rng.standard_normal((5, 8), dtype=np.float32)[:, ::2], np.ones((4, 3), np.float32)),
        lambda rng: (rng.standard_normal((5, 4), dtype=np.float32)[::-1], np.ones((4, 3), np.float32)),
        lambda rng: (np.zeros((0, 4), np.float32), np.ones((4, 3), np.float32)),
        lambda rng: (np.ones((5, 0), np.float32), np.ones((0, 3), np.float32)),
        lambda rng: (rng.standard_normal((2, 5, 4), dtype=np.float32), rng.standard_normal((4, 3), dtype=np.float32)),
        lambda rng: (np.broadcast_to(np.float32(2.0), (5, 4)), np.ones((4, 3), np.float32)),
    ],
    ids=["float64", "column-strided", "reversed", "no-rows", "empty-sum", "3-d", "broadcast"],
)
def test_what_onednn_cannot_read_is_numpys_product_bit_for_bit(onednn, make):
    a, b = make(np.random.default_rng(2))
    out = kernels_onednn.matmul(a, b)
    expected = a @ b
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert np.array_equal(out, expected)


def test_one_primitive_per_shape_and_layout_made_once(onednn, monkeypatch):
    """The small product of the default network at batch 256 takes the primitive; it is made at the
    first call of its shape and layout and reused; large products take sgemm and make none."""
    monkeypatch.setattr(kernels_onednn, "_primitives", {})
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((256, 1024), dtype=np.float32), rng.standard_normal((1024, 512), dtype=np.float32)
    assert 256 * 512 <= kernels_onednn.PRIMITIVE_MAX_OUTPUTS
    first = kernels_onednn.matmul(x, w)
    made = dict(kernels_onednn._primitives)
    assert len(made) == 1 and None not in made.values()
    again = kernels_onednn.matmul(x.copy(), w.copy())  # other arrays of the same shape and layout
    assert kernels_onednn._primitives == made and np.array_equal(first, again)
    kernels_onednn.matmul(x.T.copy().T, w)  # the same shape, read transposed: a primitive of its own
    assert len(kernels_onednn._primitives) == 2
    big = rng.standard_normal((1024, 1024), dtype=np.float32)
    assert 1024 * 1024 > kernels_onednn.PRIMITIVE_MAX_OUTPUTS
    kernels_onednn.matmul(big, big)
    assert len(kernels_onednn._primitives) == 2
    for rows in range(1, 70):  # a user's many shapes: the cache starts afresh rather than grow for ever
        kernels_onednn.matmul(x[:rows], w)
    assert len(kernels_onednn._primitives) <= 64


@pytest.mark.parametrize("path", ["primitive", "sgemm"])
@pytest.mark.parametrize("bias_kind", ["row", "strided", "float64"])
def test_a_bias_added_inside_the_product_gives_the_bits_of_adding_it_after(onednn, monkeypatch, path, bias_kind):
    """Dense's ``x @ W + b``: the primitive adds a contiguous float32 row in its last step, with the
    bits of the product followed by ``+= b``; any other bias is added after the product."""
    monkeypatch.setattr(kernels_onednn, "PRIMITIVE_MAX_OUTPUTS", 1 << 40 if path == "primitive" else 0)
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((64, 300), dtype=np.float32), rng.standard_normal((300, 40), dtype=np.float32)
    bias = {
        "row": rng.standard_normal(40, dtype=np.float32),
        "strided": rng.standard_normal(80, dtype=np.float32)[::2],
        "float64": rng.standard_normal(40),
    }[bias_kind]
    expected = kernels_onednn.matmul(x, w)
    expected += bias
    out = kernels_onednn.matmul(x, w, bias)
    assert out.dtype == np.float32 and np.array_equal(out, expected)
    np.testing.assert_allclose(out, x.astype(np.float64) @ w + bias, rtol=1e-4, atol=1e-4)


def test_mismatched_shapes_raise_numpys_error(onednn):
    with pytest.raises(ValueError, match="matmul"):
        kernels_onednn.matmul(np.ones((3, 4), np.float32), np.ones((5, 2), np.float32))


def test_the_same_bits_every_time_in_this_process(onednn):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 3072), dtype=np.float32)
    w = rng.standard_normal((3072, 512), dtype=np.float32)
    dy = rng.standard_normal((256, 512), dtype=np.float32)
    first = [kernels_onednn.matmul(x, w), kernels_onednn.matmul(x.T, dy), kernels_onednn.matmul(dy, w.T)]
    for _ in range(3):
        again = [kernels_onednn.matmul(x, w), kernels_onednn.matmul(x.T, dy), kernels_onednn.matmul(dy, w.T)]
        assert all(np.array_equal(p, q) for p, q in zip(first, again))


_DIGEST = """
import hashlib, os, numpy as np
from fastnn import kernels_onednn, openmp
kernels_onednn.load()
rng = np.random.default_rng(4)
x = rng.standard_normal((256, 3072), dtype=np.float32)
w = rng.standard_normal((3072, 1024), dtype=np.float32)
print(hashlib.sha256(kernels_onednn.matmul(x, w).tobytes() + kernels_onednn.matmul(x.T, x @ w).tobytes()).hexdigest())
print(openmp.wait_policy)
print(os.environ.get("OMP_WAIT_POLICY"))
"""


def _run(env_changes: dict[str, str | None]) -> list[str]:
    env = dict(os.environ)
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    done = subprocess.run([sys.executable, "-c", _DIGEST], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_same_bits_in_another_process_and_how_the_threads_wait():
    quiet = {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None, "FASTNN_PRODUCTS": None}
    first, second = _run(quiet), _run(quiet)
    assert first[0] == second[0]  # what --resume's bit-identical continuation relies on
    assert first[1] == "spin a while, then sleep (GNU OpenMP's own policy: oneDNN's products share its threads)"
    assert first[2] == "None"  # fastnn sets nothing that OpenMP libraries loaded later (PyTorch's) would see
    told = _run({"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None, "FASTNN_PRODUCTS": None})
    assert told[1] == "OMP_WAIT_POLICY=ACTIVE, from the environment"
    assert told[2] == "ACTIVE"


def test_the_engines_choice():
    assert kernels_cpu.products() in ("onednn", "numpy")
    with pytest.raises(ValueError, match="unknown product engine 'mkl'; choose one of onednn, numpy"):
        kernels_cpu.set_products("mkl")
    previous = kernels_cpu.set_products("numpy")
    try:
        assert kernels_cpu.matmul() is None
        a = np.ones((3, 4), np.float32)
        assert np.array_equal(matmul(a, a.T), a @ a.T)
        kernels_cpu.set_products("onednn")
        assert kernels_cpu.matmul() is kernels_onednn.matmul
    finally:
        kernels_cpu.set_products(previous)


def test_other_namespaces_multiply_with_their_own_operator(onednn):
    strict = get_backend("strict")
    a = strict.asarray(np.ones((3, 4)), "float32")
    out = matmul(a, a.T)  # array-api-strict: no fast product, the operator
    assert strict.to_numpy(out).tolist() == [[4.0] * 3] * 3


def test_dense_on_onednn_matches_dense_on_numpys_blas():
    backend = get_backend("cpu")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 300), dtype=np.float32)
    dy = rng.standard_normal((64, 40), dtype=np.float32)
    results = {}
    for engine in ("numpy", "onednn"):
        previous = kernels_cpu.set_products(engine)
        try:
            layer = Dense(300, 40, backend.rng(0))
            y = layer.forward(x)
            dx = layer.backward(dy)
            results[engine] = (y, layer.grads["W"], layer.grads["b"], dx)
        finally:
            kernels_cpu.set_products(previous)
    for ours, blas in zip(results["onednn"], results["numpy"]):
        np.testing.assert_allclose(ours, blas, rtol=1e-4, atol=1e-4)


_FORK = """
import os, numpy as np
from fastnn import kernels_cpu
from fastnn.fused import matmul
x = np.ones((256, 3072), np.float32)
w = np.ones((3072, 1024), np.float32)
assert kernels_cpu.products() == "onednn"
matmul(x, w)  # the OpenMP pool runs
pid = os.fork()
if pid == 0:
    out = matmul(x, w)
    print("child", kernels_cpu.products(), out[0, 0], flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent", kernels_cpu.products(), matmul(x, w)[0, 0])
"""


def test_a_forked_child_multiplies_with_numpys_blas_instead_of_hanging():
    done = subprocess.run([sys.executable, "-c", _FORK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["child numpy 3072.0", "parent onednn 3072.0"]


@pytest.mark.parametrize(
    "value, expected",
    [("numpy", "matrix products on the CPU: NumPy's BLAS"), ("onednn", "matrix products on the CPU: oneDNN 3."),
     ("", "matrix products on the CPU: oneDNN 3."),
     ("mkl", "Error: FASTNN_PRODUCTS=mkl is not a product engine; set it to onednn or numpy, or unset it")],
)  # fmt: skip
def test_fastnn_products_chooses_the_library_and_a_bad_value_is_one_line(value, expected):
    done = subprocess.run(
        [sys.executable, "-c", "from fastnn_cli.main import cli; cli()", "info"],
        env={**os.environ, "FASTNN_PRODUCTS": value, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == (2 if value == "mkl" else 0), output
    assert expected in output and "Traceback" not in output


def test_fastnn_products_onednn_where_it_is_missing_says_what_to_install(monkeypatch):
    monkeypatch.setenv("FASTNN_PRODUCTS", "onednn")
    monkeypatch.setattr(kernels_onednn, "load", lambda: None)
    monkeypatch.setattr(kernels_onednn, "why_not", lambda: f"oneDNN not found; {kernels_onednn.INSTALL_HINT}")
    expected = r"FASTNN_PRODUCTS=onednn, but oneDNN not found; pip install 'fastnn\[onednn\]'"
    with pytest.raises(ValueError, match=expected):
        kernels_cpu.products_setting()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs PyTorch, whose wheel loads GNU OpenMP")
def test_where_gnu_openmp_came_first_info_says_so():
    code = "import torch; from fastnn import kernels_onednn, openmp; kernels_onednn.load(); print(openmp.wait_policy)"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FASTNN_PRODUCTS")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "GNU OpenMP was loaded before fastnn loaded it, so its idle threads wait as they were told then"
    )  # no advice: oneDNN multiplies, and GNU OpenMP's own policy suits it
