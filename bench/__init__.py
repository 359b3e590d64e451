"""The backend benchmark: fastnn on every backend present, with PyTorch as the peer.

``python -m bench`` trains the same network (default 3072-1024-512-10, ReLU, softmax cross-entropy,
Adam with lr 1e-3, float32) from the same initial weights on synthetic data that lives on the device,
with fastnn on NumPy and on CuPy and with a plain PyTorch implementation on the CPU and on CUDA, and
reports milliseconds per epoch of 50,000 images, images per second, achieved GFLOP/s and the ratio to
PyTorch on the same device, as a table and as JSON (``--out``).

All runners share this process by default; ``--isolate`` starts each in a process of its own
(``bench/isolated.py``), as users run the frameworks: then PyTorch multiplies on the OpenMP its wheel
brings instead of the copy fastnn loaded first.

What it is not: a benchmark of accuracy (the labels are random) or of data loading (there is none).
PyTorch is optional (``pip install torch``, or the ``bench`` extra); without it the peer rows are missing and the
output says so.
"""

import fastnn  # noqa: F401,E402 - first, so that its OpenBLAS setting comes before NumPy loads OpenBLAS
from fastnn import kernels_onednn  # noqa: E402

# oneDNN (the [onednn] extra) before PyTorch: both run on GNU OpenMP, and the process has one copy of it,
# whichever loads first; loaded first, its idle threads sleep at once (fastnn.openmp), as they do
# in `fastnn train`. PyTorch's threads then wait the same way (its epochs measured the same either way:
# bench/results/README.md). Loaded here, whatever FASTNN_PRODUCTS says, its OpenMP pool is also there
# for bench.harness.cpu_threads to limit, also where a run asks for it with --products onednn.
kernels_onednn.load()
