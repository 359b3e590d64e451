"""fastnn.openmp: GNU OpenMP is loaded once, its idle threads asleep where NumPy's BLAS multiplies
and spinning a while where oneDNN does, unless the user said otherwise; numba's loops and oneDNN's
products share its pool."""

import os
import subprocess
import sys

import pytest

from fastnn import openmp

pytestmark = pytest.mark.skipif(not openmp.load(), reason="GNU OpenMP (libgomp.so.1) is not on this system")

_REPORT = """
import ctypes, os, sys
if sys.argv[1] == "preload":
    ctypes.CDLL("libgomp.so.1")
from fastnn import openmp
print(openmp.load(), openmp.loaded_already())
print(openmp.wait_policy)
print(os.environ.get("OMP_WAIT_POLICY"))
"""


def _report(mode: str, **env_changes: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FASTNN_PRODUCTS")}
    env.update(env_changes)
    done = subprocess.run([sys.executable, "-c", _REPORT, mode], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_beside_numpys_blas_its_idle_threads_sleep_and_the_environment_is_restored():
    assert _report("plain", FASTNN_PRODUCTS="numpy") == [
        "True True",
        "sleep at once (OMP_WAIT_POLICY=PASSIVE, set by fastnn while GNU OpenMP loaded: NumPy's BLAS "
        "multiplies, on threads of its own)",
        "None",  # set only while it loads: libraries loaded later see the user's environment
    ]


def test_where_onednn_multiplies_its_threads_spin_as_gnu_openmp_has_them():
    from fastnn import kernels_onednn

    if not kernels_onednn.installed():
        pytest.skip("the [onednn] extra is not installed")
    assert _report("plain") == [
        "True True",
        "spin a while, then sleep (GNU OpenMP's own policy: oneDNN's products share its threads)",
        "None",
    ]


def test_without_onednn_its_threads_sleep(monkeypatch):
    from fastnn import kernels_onednn

    monkeypatch.delenv("FASTNN_PRODUCTS", raising=False)
    monkeypatch.setattr(kernels_onednn, "installed", lambda: False)
    assert not openmp.products_share_the_pool()
    monkeypatch.setattr(kernels_onednn, "installed", lambda: True)
    assert openmp.products_share_the_pool()
    monkeypatch.setenv("FASTNN_PRODUCTS", "numpy")
    assert not openmp.products_share_the_pool()


def test_the_users_setting_is_kept():
    assert _report("plain", GOMP_SPINCOUNT="1000")[1:] == ["GOMP_SPINCOUNT=1000, from the environment", "None"]


def test_loaded_before_fastnn_says_what_to_export():
    assert _report("preload", FASTNN_PRODUCTS="numpy")[1] == (
        "GNU OpenMP was loaded before fastnn loaded it, so its idle threads wait as they were told then; "
        "export OMP_WAIT_POLICY=PASSIVE to free the cores for NumPy's BLAS at once"
    )


def test_numbas_loops_run_on_its_threads():
    numba = pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    from fastnn import kernels_numba

    assert kernels_numba.LAYER == "omp"
    assert numba.config.THREADING_LAYER == "omp"

