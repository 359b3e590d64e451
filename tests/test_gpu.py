"""CuPy against NumPy: the same training steps from the same host-made weights agree to float32 tolerance.

Marked ``gpu`` (``pytest -m gpu`` runs just these); skipped where CuPy or a GPU is missing, as in CPU CI.
The unmarked tests check on the CPU what the GPU run relies on: the float32 error bound of the TF32
test, and that ``bench/gpu_check.sh`` stops at once when its wheels did not travel with it.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn.backend import BackendUnavailable, get_backend
from fastnn.network import Network
from fastnn.optimizers import Adam

SIZES = [48, 32, 16, 10]
LR, STEPS, BATCH = 1e-3, 5, 64


@pytest.fixture(scope="module")
def gpu():
    try:
        return get_backend("gpu")
    except BackendUnavailable as exc:
        pytest.skip(f"no GPU backend here: {str(exc).split(';')[0]}")


def _host_problem(seed=0):
    rng = np.random.default_rng(seed)
    weights = {}
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        weights[f"{2 * i}.W"] = (rng.normal(size=(n_in, n_out)) * np.sqrt(2 / n_in)).astype(np.float32)
        weights[f"{2 * i}.b"] = rng.normal(scale=0.1, size=n_out).astype(np.float32)
    x = rng.normal(size=(STEPS * BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], STEPS * BATCH)
    return weights, x, y


def _train(backend, weights, x, y, fused=True):
    """STEPS Adam steps over fixed consecutive batches; (losses, parameters) back on the host."""
    network = Network(SIZES, backend=backend)
    network.load_state_dict(weights)
    optimizer = Adam(fused=fused)
    xd, yd = backend.asarray(x, "float32"), backend.asarray(y, "int64")
    losses = []
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        loss, _ = network.train_step(xd[batch, :], yd[batch], optimizer, LR)
        losses.append(float(loss))
    return np.array(losses), {name: backend.to_numpy(p) for name, p in network.parameters()}


def _assert_parameters_agree(got, expected):
    # Adam moves each element by about lr whatever the gradient's size, so an element whose gradient
    # is at rounding level may move differently on the two devices; allow a few such, bounded by lr.
    for name in expected:
        close = np.isclose(got[name], expected[name], rtol=1e-4, atol=1e-5)
        assert close.mean() > 0.99, f"{name}: {np.count_nonzero(~close)} of {close.size} elements differ"
        assert np.max(np.abs(got[name] - expected[name])) <= 2 * LR * STEPS, name


@pytest.mark.gpu
def test_numpy_and_cupy_train_alike(gpu):
    weights, x, y = _host_problem()
    cpu_losses, cpu_params = _train(get_backend("cpu"), weights, x, y)
    gpu_losses, gpu_params = _train(gpu, weights, x, y)
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4)
    _assert_parameters_agree(gpu_params, cpu_params)


@pytest.mark.gpu
def test_fused_cupy_adam_matches_the_generic_path(gpu):
    weights, x, y = _host_problem(seed=1)
    fused_losses, fused_params = _train(gpu, weights, x, y, fused=True)
    plain_losses, plain_params = _train(gpu, weights, x, y, fused=False)
    np.testing.assert_allclose(fused_losses, plain_losses, rtol=1e-5)
    _assert_parameters_agree(fused_params, plain_params)


@pytest.mark.gpu
def test_fused_cupy_adam_kernel_on_one_array(gpu):
    """The kernel alone, one step from known state, against the formula evaluated on the host."""
    from fastnn.fused import fused_adam_step

    rng = np.random.default_rng(2)
    p, g, m, v = (rng.normal(size=(257, 33)).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    b1, b2, step_size, eps_hat = 0.9, 0.999, 1e-3, 1e-8
    arrays = [gpu.asarray(a, "float32") for a in (p, g, m, v)]
    fused_adam_step(gpu.xp)(*arrays, b1, b2, step_size, eps_hat)
    m_ref = b1 * m + (1 - b1) * g
    v_ref = b2 * v + (1 - b2) * g * g
    p_ref = p - step_size * m_ref / (np.sqrt(v_ref) + eps_hat)
    for got, expected in zip([arrays[0], arrays[2], arrays[3]], [p_ref, m_ref, v_ref]):
        np.testing.assert_allclose(gpu.to_numpy(got), expected, rtol=1e-5, atol=1e-7)


def float32_dot_error_bound(n: int, sum_of_abs_products: float) -> float:
    """How far a float32 sum of ``n`` products may be from their exact sum, in any order of addition,
    with or without fused multiply-adds: gamma_n * sum |a_i b_i|, gamma_n = n u / (1 - n u), u = 2**-24
    (Higham, Accuracy and Stability of Numerical Algorithms, section 3.1)."""
    u = 2.0**-24
    return n * u / (1 - n * u) * sum_of_abs_products


TF32_N = 1024
TF32_INPUT = 1.0001  # no TF32 form (10 mantissa bits: the nearest are 1 and 1 + 2**-10)


def test_the_float32_bound_holds_for_a_sequential_sum_and_excludes_tf32():
    """A left-to-right float32 sum of the TF32 test's 1,024 products is 9.7e-6 off relative (more than the
    1e-6 once asserted), within the bound; and the bound is tight enough to tell float32 from TF32."""
    products = np.full(TF32_N, TF32_INPUT, dtype=np.float32)
    exact = TF32_N * float(products[0])  # exact in double: 1024 times a 24-bit significand
    sequential = float(np.add.accumulate(products)[-1])
    bound = float32_dot_error_bound(TF32_N, exact)
    assert abs(sequential - exact) > 1e-6 * exact
    assert abs(sequential - exact) <= bound < exact - TF32_N


@pytest.mark.gpu
def test_tf32_rounds_the_inputs_of_products_and_turns_off_again(gpu):
    """TF32 rounds 1.0001 to 1, so its sum of 1,024 products of 1.0001 and 1 is exactly 1024; in float32 it
    is 1024.1 within float32's error bound for that sum. Needs compute capability 8.0 (Ampere) or newer."""
    xp = gpu.xp
    if int(xp.cuda.Device().compute_capability) < 80:
        assert gpu.set_tf32(True) is False  # no TF32 there: the switch says so
        pytest.skip("TF32 needs an Ampere or newer GPU")
    a = xp.full((256, TF32_N), TF32_INPUT, dtype=xp.float32)
    b = xp.ones((TF32_N, 256), dtype=xp.float32)
    try:
        assert gpu.set_tf32(True) is True
        fast = float((a @ b)[0, 0])
    finally:
        gpu.set_tf32(False)
    full = float((a @ b)[0, 0])
    assert fast == 1024.0
    exact = TF32_N * float(np.float32(TF32_INPUT))
    assert abs(full - exact) <= float32_dot_error_bound(TF32_N, exact)


def test_gpu_check_stops_at_once_without_its_wheels(tmp_path):
    """Without the carried wheels every step would fail on a missing array_api_compat: the script says
    so in one line and exits 2, having run nothing. (A Python without site-packages plays the device's.)"""
    root = Path(__file__).resolve().parents[1]
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    (fake_bin / "python3").chmod(0o755)
    (fake_bin / "nvidia-smi").write_text("#!/bin/sh\necho nvidia-smi ran >&2; exit 1\n")
    (fake_bin / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    env.pop("PYTHONPATH", None)
    script = root / "bench" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "array-api-compat or array-api-strict is missing" in done.stdout and "carry .whl" in done.stdout
    assert "nvidia-smi ran" not in done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu-steps.txt"]
