"""Layers: each one's forward pass with its backward pass right below it.

A layer maps ``x`` of shape ``(batch, features_in)`` to ``y`` of shape ``(batch, features_out)``
and caches what its backward pass needs. ``backward(grad_out)`` takes dL/dy, fills ``grads``
(same keys and shapes as ``params``) and returns dL/dx.

Nothing here imports NumPy or CuPy: the namespace comes from the arrays themselves
(``fastnn.backend.namespace(x)``), so the same code runs on every backend.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from fastnn.backend import namespace

Array = Any


class Layer:
    """Base class: no parameters, identity in both directions."""

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}

    def forward(self, x: Array, training: bool = False) -> Array:
        return x

    def backward(self, grad_out: Array) -> Array:
        return grad_out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


INITIALISERS = {
    # std of the normal distribution the weights are drawn from, given fan-in and fan-out
    "he": lambda fan_in, fan_out: math.sqrt(2.0 / fan_in),
    "xavier": lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)),
}
INITIALISERS["glorot"] = INITIALISERS["xavier"]


class Dense(Layer):
    """Fully connected: ``y = x @ W + b``.

    Shapes: x (batch, n_in), W (n_in, n_out), b (n_out,), y (batch, n_out).
    Backward: ``dW = x.T @ dy``, ``db = sum_batch dy``, ``dx = dy @ W.T``.
    ``init`` is "he" (std sqrt(2/n_in), for ReLU) or "xavier" (std sqrt(2/(n_in+n_out)), for
    sigmoid and tanh); ``rng`` is a :class:`fastnn.backend.DeviceRNG`, so weights are born on the device.
    With ``input_grad`` False, ``backward`` skips ``dx`` and returns None: a network's first layer
    sees only data, whose gradient nobody uses, and ``dx`` is a third of that layer's backward work.
    """

    def __init__(self, n_in: int, n_out: int, rng: Any, init: str = "he", dtype: str = "float32"):
        super().__init__()
        if init not in INITIALISERS:
            raise ValueError(f"unknown initialiser {init!r}; choose one of {', '.join(sorted(INITIALISERS))}")
        if n_in < 1 or n_out < 1:
            raise ValueError(f"Dense needs positive sizes, got {n_in} -> {n_out}")
        self.n_in, self.n_out, self.init = n_in, n_out, init
        weight = rng.normal((n_in, n_out), INITIALISERS[init](n_in, n_out), dtype)
        xp = namespace(weight)
        self.params = {"W": weight, "b": xp.zeros((n_out,), dtype=weight.dtype, device=device(weight))}
        self.input_grad = True
        self._x: Array = None

    def forward(self, x: Array, training: bool = False) -> Array:
        self._x = x
        y = x @ self.params["W"]
        y += self.params["b"]  # in place: one (batch, n_out) array fewer
        return y

    def backward(self, grad_out: Array) -> Array | None:
        xp = namespace(grad_out)
        self.grads = {"W": self._x.T @ grad_out, "b": xp.sum(grad_out, axis=0)}
        return grad_out @ self.params["W"].T if self.input_grad else None

    def __repr__(self) -> str:
        return f"Dense({self.n_in}, {self.n_out}, init={self.init!r})"


class ReLU(Layer):
    """``y = max(x, 0)``; ``dx = dy * [x > 0]``.

    The mask is multiplied in as 0.0 and 1.0 rather than chosen with ``where``: on the CPU a
    ``where`` over a random mask mispredicts a branch per element and is about ten times slower.
    """

    def forward(self, x: Array, training: bool = False) -> Array:
        self._y = namespace(x).maximum(x, 0.0)
        return self._y

    def backward(self, grad_out: Array) -> Array:
        xp = namespace(grad_out)
        return grad_out * xp.astype(self._y > 0, grad_out.dtype)


class LeakyReLU(Layer):
    """``y = x if x > 0 else slope * x``; ``dx = dy * (1 if x > 0 else slope)``."""

    def __init__(self, slope: float = 0.01):
        super().__init__()
        self.slope = slope

    def forward(self, x: Array, training: bool = False) -> Array:
        # the local slope, 1 or ``slope``, as a float array: multiplying by it is faster than ``where`` (see ReLU)
        positive = namespace(x).astype(x > 0, x.dtype)
        self._slope = self.slope + (1.0 - self.slope) * positive
        return x * self._slope

    def backward(self, grad_out: Array) -> Array:
        return grad_out * self._slope

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``; ``dx = dy * y * (1 - y)``."""

    def forward(self, x: Array, training: bool = False) -> Array:
        self._y = sigmoid(x)
        return self._y

    def backward(self, grad_out: Array) -> Array:
        return grad_out * self._y * (1.0 - self._y)


class Tanh(Layer):
    """``y = tanh(x)``; ``dx = dy * (1 - y**2)``."""

    def forward(self, x: Array, training: bool = False) -> Array:
        self._y = namespace(x).tanh(x)
        return self._y

    def backward(self, grad_out: Array) -> Array:
        return grad_out * (1.0 - self._y * self._y)


class Dropout(Layer):
    """Inverted dropout: in training ``y = x * m / (1 - p)`` with ``m ~ Bernoulli(1 - p)``.

    At evaluation it is the identity, so no rescaling is needed then. ``dx = dy * m / (1 - p)``.
    The mask is drawn on the device by ``rng`` (a :class:`fastnn.backend.DeviceRNG`).
    """

    def __init__(self, p: float, rng: Any):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.rng = p, rng
        self._scale: Array = None

    def forward(self, x: Array, training: bool = False) -> Array:
        if not training or self.p == 0.0:
            self._scale = None
            return x
        xp = namespace(x)
        keep = self.rng.uniform(tuple(x.shape), dtype=_dtype_name(x)) >= self.p
        self._scale = xp.astype(keep, x.dtype) * (1.0 / (1.0 - self.p))
        return x * self._scale

    def backward(self, grad_out: Array) -> Array:
        return grad_out if self._scale is None else grad_out * self._scale

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


def sigmoid(x: Array) -> Array:
    """Logistic function, computed without overflow for large ``|x|``."""
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _dtype_name(x: Array) -> str:
    xp = namespace(x)
    return "float64" if x.dtype == xp.float64 else "float32"


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh}
