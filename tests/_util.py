"""Finite-difference helpers for the gradient tests (float64 on the host)."""

import numpy as np


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
