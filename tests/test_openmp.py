"""fastnn.openmp: GNU OpenMP is loaded once, its idle threads asleep unless the user said otherwise,
and numba's loops and oneDNN's products share its pool."""

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
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(env_changes)
    done = subprocess.run([sys.executable, "-c", _REPORT, mode], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_loaded_with_its_idle_threads_asleep_and_the_environment_restored():
    assert _report("plain") == [
        "True True",
        "sleep at once (OMP_WAIT_POLICY=PASSIVE, set by fastnn while GNU OpenMP loaded)",
        "None",  # set only while it loads: libraries loaded later see the user's environment
    ]


def test_the_users_setting_is_kept():
    assert _report("plain", GOMP_SPINCOUNT="1000")[1:] == ["GOMP_SPINCOUNT=1000, from the environment", "None"]


def test_loaded_before_fastnn_says_what_to_export():
    assert _report("preload")[1] == (
        "GNU OpenMP was loaded before fastnn loaded it, so its idle threads wait as they were told then; "
        "export OMP_WAIT_POLICY=PASSIVE to free the cores at once"
    )


def test_numbas_loops_run_on_its_threads():
    numba = pytest.importorskip("numba", reason="the numba engine needs the [fast] extra")
    from fastnn import kernels_numba

    assert kernels_numba.LAYER == "omp"
    assert numba.config.THREADING_LAYER == "omp"

