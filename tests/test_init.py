"""fastnn/__init__.py: OpenBLAS's idle threads are told to sleep at once, where fastnn loads before NumPy."""

import os
import subprocess
import sys

import pytest

PROBE = (
    "import os, sys\n"
    "if sys.argv[1] == 'numpy-first': import numpy\n"
    "import fastnn\n"
    "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), fastnn.openblas_timeout_set)\n"
)


@pytest.mark.parametrize(
    "order, preset, expected",
    [
        ("fastnn-first", None, "4 True"),  # set before NumPy loads OpenBLAS
        ("numpy-first", None, "None False"),  # too late to count: left alone, and `fastnn info` says so
        ("fastnn-first", "30", "30 False"),  # the user's own value is kept
    ],
)
def test_openblas_thread_timeout(order, preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    out = subprocess.run([sys.executable, "-c", PROBE, order], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == expected.split()


def test_info_says_how_openblas_threads_wait():
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    command = [sys.executable, "-c", "from fastnn_cli.main import cli; cli()", "info"]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stdout.split())
    assert "OpenBLAS's idle threads: sleep at once (OPENBLAS_THREAD_TIMEOUT=4, set by fastnn)" in said
