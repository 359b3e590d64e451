"""Helpers of the tests: finite differences (float64 on the host), small data, reading CLI output."""

import os
from pathlib import Path

import numpy as np
import pytest

REAL_DATA = os.environ.get("FASTNN_DATA_DIR")
"""The folder with the real CIFAR-10 archive (.ci/run sets it), or None."""

needs_real_data = [
    pytest.mark.data,
    pytest.mark.slow,
    pytest.mark.skipif(
        not REAL_DATA or not (Path(REAL_DATA) / "cifar-10-python.tar.gz").exists(),
        reason="set FASTNN_DATA_DIR to a folder with cifar-10-python.tar.gz",
    ),
]
"""``pytestmark`` of a test module that trains on the real CIFAR-10."""


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function ``f`` at the host array ``x``."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        saved = x[index]
        x[index] = saved + eps
        plus = f(x)
        x[index] = saved - eps
        minus = f(x)
        x[index] = saved
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def synthetic_split(n_train=600, n_val=150, n_test=150, features=20, seed=0):
    """Three separable classes in ``features`` dimensions, shaped like ``fastnn.data.prepare``'s result."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(3, features))

    def part(n):
        y = rng.integers(0, 3, size=n)
        return (centres[y] + rng.normal(size=(n, features))).astype(np.float32), y.astype(np.int64)

    (xt, yt), (xv, yv), (xs, ys) = part(n_train), part(n_val), part(n_test)
    return SimpleNamespace(
        x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys,
        mean=np.zeros(3), std=np.ones(3), class_names=("a", "b", "c"),
    )


def write_learnable_cifar(folder, images_per_batch=10_000, seed=0):
    """An extracted CIFAR-10 folder of the real sizes whose classes are easy to tell apart: each class
    has its own colour (a level per channel) under uniform noise. For end-to-end runs of the CLI
    where the real data is absent (the GPU machine has no copy); returns the data folder."""
    import pickle

    from fastnn.data import CLASS_NAMES, cifar10

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 156, size=(10, 3))
    target = folder / cifar10.FOLDER_NAME
    target.mkdir(parents=True)
    for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
        labels = rng.integers(0, 10, images_per_batch)
        pixels = rng.integers(0, 100, (images_per_batch, 3, 1024), dtype=np.uint8)
        pixels += colours[labels][:, :, None].astype(np.uint8)
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": pixels.reshape(-1, 3072)}
        batch[b"filenames"] = [f"{i}.png".encode() for i in range(images_per_batch)]
        (target / name).write_bytes(pickle.dumps(batch, protocol=4))
    meta = {b"num_cases_per_batch": images_per_batch, b"label_names": [n.encode() for n in CLASS_NAMES]}
    (target / cifar10.META).write_bytes(pickle.dumps({**meta, b"num_vis": 3072}, protocol=4))
    return folder


def printed_test_accuracy(output: str) -> float:
    """The percentage in the "test accuracy NN.NN%" line that fastnn train and fastnn evaluate print."""
    import re

    return float(re.search(r"test accuracy\s+([\d.]+)%", output).group(1))


def gpu_unavailable() -> str | None:
    """Why ``--device gpu`` cannot run here (the backend's message), or None where it can.

    "CuPy is installed" is not "a GPU is usable": CuPy installs on any machine, and then fails at
    its first call to the driver. Tests of the no-GPU messages, and GPU cases, go by this instead.
    """
    from fastnn.backend import BackendUnavailable, get_backend

    try:
        get_backend("gpu")
    except BackendUnavailable as exc:
        return str(exc)
    return None


def readme_tolerance() -> float:
    """How many points a printed accuracy may lie from the README's on another machine: the README
    states it ("within ±X points"), from the spread measured over BLAS kernels and seeds
    (bench/results/blas-kernels.md)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    return float(re.search(r"within\s+±([\d.]+)\s+points", readme).group(1))
