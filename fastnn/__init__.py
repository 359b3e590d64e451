"""fastnn: fully-connected neural networks written once against an array namespace ``xp``.

NumPy runs it on the CPU, CuPy on an NVIDIA GPU, and ``array-api-strict`` on a simulated device
that makes GPU-only mistakes fail on a laptop. See ``fastnn.backend`` for the one place where the
namespace is chosen.
"""

import os
import sys

__version__ = "0.1.0"

# OpenBLAS's idle threads spin for 2**28 clock cycles (about a tenth of a second) after each matrix
# product before they sleep, and so took a core from the optimizer's threads that run right after
# the products: Adam's step took 5.4 ms a step instead of 2.9 (bench.profile, batch 256, 2 cores).
# 2**4 cycles lets them sleep at once; waking them for the next product costs microseconds. OpenBLAS
# reads the setting when it loads, with NumPy, so it counts only where fastnn is imported first (the
# `fastnn` command and the benchmark are); a value already in the environment is kept.
OPENBLAS_THREAD_TIMEOUT = "4"
openblas_timeout_set = "numpy" not in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ
if openblas_timeout_set:
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
