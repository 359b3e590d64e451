"""Layers: each one's forward pass with its backward pass right below it.

A layer maps ``x`` of shape ``(batch, features_in)`` to ``y`` of shape ``(batch, features_out)``
and caches what its backward pass needs. ``backward(grad_out)`` takes dL/dy, fills ``grads``
(same keys and shapes as ``params``) and returns dL/dx. ``buffers`` holds state that is saved with
the parameters but not trained (BatchNorm's running statistics).

Every layer describes itself as a spec, a small JSON-able dict such as
``{"type": "dense", "n_in": 3072, "n_out": 512, "init": "he"}``, and :func:`build_layer` makes it
again. To add a layer: write the class (``forward``, ``backward``, and ``spec`` and ``from_spec``
if it has arguments), add one line to ``LAYERS`` at the bottom, and test it in tests/test_layers.py.

Nothing here imports NumPy or CuPy: the namespace comes from the arrays themselves
(``fastnn.backend.namespace(x)``), so the same code runs on every backend.
"""

from __future__ import annotations

import math
from typing import Any

from array_api_compat import device

from fastnn.backend import namespace
from fastnn.fused import matmul, relu, relu_grad, sum_rows

Array = Any


class Layer:
    """Base class: no parameters, identity in both directions."""

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.buffers: dict[str, Array] = {}

    def forward(self, x: Array, training: bool = False) -> Array:
        return x

    def backward(self, grad_out: Array) -> Array:
        return grad_out

    def sublayers(self) -> list[Layer]:
        """The layers this one contains (a Residual's body); they own their parameters."""
        return []

    def width_after(self, width: int) -> int:
        """Features out for ``width`` features in; a ValueError if this layer cannot take ``width``."""
        return width

    def spec(self) -> dict[str, Any]:
        """A JSON-able description that :func:`build_layer` turns back into this layer."""
        if type(self) not in LAYER_NAMES:
            raise ValueError(f"{type(self).__name__} has no name in fastnn.layers.LAYERS: add it there to save it")
        return {"type": LAYER_NAMES[type(self)]}

    @classmethod
    def from_spec(cls, arguments: dict[str, Any], rng: Any, dtype: str) -> Layer:
        """Build from a spec's arguments; ``rng`` draws weights, ``dtype`` is the network's."""
        return cls(**arguments)

    @classmethod
    def numbers_in(cls, arguments: dict[str, Any]) -> int:
        """How many numbers (parameters and buffers) a layer built from these spec arguments holds,
        worked out before building it (a checkpoint's spec is checked against its file this way)."""
        return 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


INITIALISERS = {
    # std of the normal distribution the weights are drawn from, given fan-in and fan-out
    "he": lambda fan_in, fan_out: math.sqrt(2.0 / fan_in),
    "xavier": lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)),
}


class Dense(Layer):
    """Fully connected: ``y = x @ W + b``.

    Shapes: x (batch, n_in), W (n_in, n_out), b (n_out,), y (batch, n_out).
    Backward: ``dW = x.T @ dy``, ``db = sum_batch dy``, ``dx = dy @ W.T``.
    ``init`` is "he" (std sqrt(2/n_in), for ReLU) or "xavier" (std sqrt(2/(n_in+n_out)), for
    sigmoid and tanh); ``rng`` is a :class:`fastnn.rng.DeviceRNG`, so weights are born on the device.
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
        return matmul(x, self.params["W"], self.params["b"])  # x @ W + b, by the backend's fastest product

    def backward(self, grad_out: Array) -> Array | None:
        db = sum_rows(grad_out)  # sum_batch dy, first: dy is still in the cache
        self.grads = {"W": matmul(self._x.T, grad_out), "b": db}  # x.T @ dy
        return matmul(grad_out, self.params["W"].T) if self.input_grad else None  # dy @ W.T

    def __repr__(self) -> str:
        return f"Dense({self.n_in}, {self.n_out}, init={self.init!r})"

    def width_after(self, width: int) -> int:
        if width != self.n_in:
            raise ValueError(f"{self!r} takes {self.n_in} features, but the layer before gives {width}")
        return self.n_out

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "n_in": self.n_in, "n_out": self.n_out, "init": self.init}

    @classmethod
    def from_spec(cls, arguments: dict[str, Any], rng: Any, dtype: str) -> Dense:
        return cls(**arguments, rng=rng, dtype=dtype)

    @classmethod
    def numbers_in(cls, arguments: dict[str, Any]) -> int:
        return _whole(arguments["n_in"]) * _whole(arguments["n_out"]) + _whole(arguments["n_out"])


class ReLU(Layer):
    """``y = max(x, 0)``; ``dx = dy * [x > 0]``.

    The mask is multiplied in as 0.0 and 1.0 rather than chosen with ``where``: on the CPU a
    ``where`` over a random mask mispredicts a branch per element and is about ten times slower.
    """

    def forward(self, x: Array, training: bool = False) -> Array:
        self._y = relu(x)  # max(x, 0), on all the CPU's cores where it can (fastnn.fused.relu)
        return self._y

    def backward(self, grad_out: Array) -> Array:
        return relu_grad(grad_out, self._y)  # dy * [y > 0], y > 0 exactly where x > 0


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

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "slope": self.slope}

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
    The mask is drawn on the device by ``rng`` (a :class:`fastnn.rng.DeviceRNG`).
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

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "p": self.p}

    @classmethod
    def from_spec(cls, arguments: dict[str, Any], rng: Any, dtype: str) -> Dropout:
        return cls(**arguments, rng=rng)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


class GELU(Layer):
    """Gaussian error linear unit, in the tanh approximation (PyTorch's ``gelu(approximate="tanh")``):
    the exact form needs erf, which the array API lacks.

    ``y = x / 2 * (1 + t)`` with ``t = tanh(u)``, ``u = c * (x + a * x**3)``, ``c = sqrt(2 / pi)``,
    ``a = 0.044715``; ``dx = dy * ((1 + t) / 2 + x / 2 * (1 - t**2) * c * (1 + 3 * a * x**2))``.
    """

    C, A = math.sqrt(2.0 / math.pi), 0.044715

    def forward(self, x: Array, training: bool = False) -> Array:
        self._x = x
        self._t = namespace(x).tanh(self.C * (x + self.A * x * x * x))
        return 0.5 * x * (1.0 + self._t)

    def backward(self, grad_out: Array) -> Array:
        x, t = self._x, self._t
        du_dx = self.C * (1.0 + 3.0 * self.A * x * x)
        return grad_out * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)


def _standardize(x: Array, axis: int, eps: float) -> tuple[Array, Array, Array, Array]:
    """``(x_hat, inv_std, mean, var)``: ``x_hat = (x - mean) * inv_std``, ``inv_std = 1/sqrt(var + eps)``,
    mean and (biased) variance taken along ``axis`` and kept as a length-1 axis."""
    xp = namespace(x)
    mean = xp.mean(x, axis=axis, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=axis, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    return centred * inv_std, inv_std, mean, var


def _standardize_backward(grad_x_hat: Array, x_hat: Array, inv_std: Array, axis: int) -> Array:
    """dL/dx from dL/dx_hat when the mean and variance were taken from ``x`` itself along ``axis``:
    ``dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat))``."""
    xp = namespace(grad_x_hat)
    mean_g = xp.mean(grad_x_hat, axis=axis, keepdims=True)
    mean_g_x_hat = xp.mean(grad_x_hat * x_hat, axis=axis, keepdims=True)
    return inv_std * (grad_x_hat - mean_g - x_hat * mean_g_x_hat)


class _Norm(Layer):
    """What LayerNorm and BatchNorm share: ``y = gain * x_hat + bias`` over ``n_features``, with
    ``gain`` starting at 1 and ``bias`` at 0, made on ``backend``'s device."""

    def __init__(self, n_features: int, backend: Any, dtype: str = "float32", eps: float = 1e-5):
        super().__init__()
        if n_features < 1:
            raise ValueError(f"{type(self).__name__} needs a positive number of features, got {n_features}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.n_features, self.eps = n_features, eps
        self.params = {"gain": backend.asarray([1.0] * n_features, dtype),
                       "bias": backend.asarray([0.0] * n_features, dtype)}

    def _affine_backward(self, grad_out: Array, x_hat: Array) -> Array:
        """Fills dL/dgain and dL/dbias; returns dL/dx_hat = dy * gain."""
        xp = namespace(grad_out)
        self.grads = {"gain": xp.sum(grad_out * x_hat, axis=0), "bias": xp.sum(grad_out, axis=0)}
        return grad_out * self.params["gain"]

    def width_after(self, width: int) -> int:
        if width != self.n_features:
            raise ValueError(f"{self!r} normalises {self.n_features} features, but the layer before gives {width}")
        return width

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "n_features": self.n_features, "eps": self.eps}

    @classmethod
    def from_spec(cls, arguments: dict[str, Any], rng: Any, dtype: str) -> Layer:
        return cls(**arguments, backend=rng.backend, dtype=dtype)

    @classmethod
    def numbers_in(cls, arguments: dict[str, Any]) -> int:
        return (4 if cls is BatchNorm else 2) * _whole(arguments["n_features"])  # BatchNorm: + 2 buffers

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.n_features})"


class LayerNorm(_Norm):
    """Normalises each example over its features (Ba et al., 2016), the same in training and evaluation.

    ``x_hat = (x - mean_f x) / sqrt(var_f x + eps)``, ``y = gain * x_hat + bias``; x, y (batch, n_features).
    Backward: ``dgain = sum_batch dy * x_hat``, ``dbias = sum_batch dy``, and with ``g = dy * gain``
    ``dx = (g - mean_f g - x_hat * mean_f(g * x_hat)) / sqrt(var_f x + eps)``.
    """

    def forward(self, x: Array, training: bool = False) -> Array:
        self._x_hat, self._inv_std, _, _ = _standardize(x, axis=1, eps=self.eps)
        return self._x_hat * self.params["gain"] + self.params["bias"]

    def backward(self, grad_out: Array) -> Array:
        grad_x_hat = self._affine_backward(grad_out, self._x_hat)
        return _standardize_backward(grad_x_hat, self._x_hat, self._inv_std, axis=1)


class BatchNorm(_Norm):
    """Normalises each feature over the batch (Ioffe & Szegedy, 2015).

    Training: ``x_hat = (x - mean_b x) / sqrt(var_b x + eps)``, ``y = gain * x_hat + bias``, and the
    buffers follow the batches: ``running_mean <- (1 - m) running_mean + m mean_b x``, likewise
    ``running_var`` with the unbiased batch variance (as PyTorch does; ``m`` is ``momentum``).
    Backward: as LayerNorm's with the means over the batch instead of the features.
    Evaluation: ``x_hat = (x - running_mean) / sqrt(running_var + eps)``, a fixed affine map, so
    ``dx = dy * gain / sqrt(running_var + eps)``.
    """

    def __init__(self, n_features: int, backend: Any, dtype: str = "float32", eps: float = 1e-5,
                 momentum: float = 0.1):
        super().__init__(n_features, backend, dtype, eps)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.buffers = {"running_mean": backend.asarray([0.0] * n_features, dtype),
                        "running_var": backend.asarray([1.0] * n_features, dtype)}

    def forward(self, x: Array, training: bool = False) -> Array:
        self._training = training
        if training:
            self._x_hat, self._inv_std, mean, var = _standardize(x, axis=0, eps=self.eps)
            batch, m = x.shape[0], self.momentum
            unbiased = var[0, :] * (batch / max(batch - 1, 1))
            self.buffers["running_mean"] = (1.0 - m) * self.buffers["running_mean"] + m * mean[0, :]
            self.buffers["running_var"] = (1.0 - m) * self.buffers["running_var"] + m * unbiased
        else:
            self._inv_std = 1.0 / namespace(x).sqrt(self.buffers["running_var"] + self.eps)
            self._x_hat = (x - self.buffers["running_mean"]) * self._inv_std
        return self._x_hat * self.params["gain"] + self.params["bias"]

    def backward(self, grad_out: Array) -> Array:
        grad_x_hat = self._affine_backward(grad_out, self._x_hat)
        if not self._training:
            return grad_x_hat * self._inv_std
        return _standardize_backward(grad_x_hat, self._x_hat, self._inv_std, axis=0)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "momentum": self.momentum}


class Residual(Layer):
    """A skip connection around ``body``, a list of layers: ``y = x + body(x)``.

    Backward: ``dx = dy + body.backward(dy)``, the body's layers run backwards filling their own
    gradients. The body must give as many features as it takes.
    """

    def __init__(self, body: list[Layer]):
        super().__init__()
        if not body:
            raise ValueError("a residual block needs at least one layer in its body")
        self.body = list(body)

    def forward(self, x: Array, training: bool = False) -> Array:
        out = x
        for layer in self.body:
            out = layer.forward(out, training)
        return x + out

    def backward(self, grad_out: Array) -> Array:
        grad = grad_out
        for layer in reversed(self.body):
            grad = layer.backward(grad)
        return grad_out + grad

    def sublayers(self) -> list[Layer]:
        return self.body

    def width_after(self, width: int) -> int:
        out = width
        for layer in self.body:
            out = layer.width_after(out)
        if out != width:
            raise ValueError(f"a residual body must keep the width: it takes {width} features and gives {out}")
        return width

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "body": [layer.spec() for layer in self.body]}

    @classmethod
    def from_spec(cls, arguments: dict[str, Any], rng: Any, dtype: str) -> Residual:
        return cls([build_layer(spec, rng, dtype) for spec in arguments["body"]])

    @classmethod
    def numbers_in(cls, arguments: dict[str, Any]) -> int:
        return sum(numbers_in(spec) for spec in arguments["body"])

    def __repr__(self) -> str:
        return f"Residual([{', '.join(repr(layer) for layer in self.body)}])"


def sigmoid(x: Array) -> Array:
    """Logistic function, computed without overflow for large ``|x|``."""
    xp = namespace(x)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _dtype_name(x: Array) -> str:
    xp = namespace(x)
    return "float64" if x.dtype == xp.float64 else "float32"


def _layer_class(spec: Any) -> tuple[type[Layer], dict[str, Any]]:
    """The class a spec names and the spec's arguments; a ValueError for an unknown type."""
    if not isinstance(spec, dict) or spec.get("type") not in LAYERS:
        found = spec.get("type") if isinstance(spec, dict) else spec
        raise ValueError(f"unknown layer {found!r}; a layer spec's type is one of {', '.join(LAYERS)}")
    return LAYERS[spec["type"]], {key: value for key, value in spec.items() if key != "type"}


def build_layer(spec: dict[str, Any], rng: Any, dtype: str = "float32") -> Layer:
    """The layer a spec describes (see :meth:`Layer.spec`); a ValueError names what is wrong with it."""
    cls, arguments = _layer_class(spec)
    try:
        return cls.from_spec(arguments, rng, dtype)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"layer spec {spec!r} does not fit its type ({type(exc).__name__}: {exc})") from exc


def numbers_in(spec: dict[str, Any]) -> int:
    """How many numbers the layer a spec describes holds, without building it (see :meth:`Layer.numbers_in`)."""
    cls, arguments = _layer_class(spec)
    try:
        return cls.numbers_in(arguments)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"layer spec {spec!r} does not fit its type ({type(exc).__name__}: {exc})") from exc


def _whole(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{n!r} is not a whole number")
    return n


ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "sigmoid": Sigmoid, "tanh": Tanh, "gelu": GELU}
"""The activations a ``Network(sizes, activation)`` puts between its Dense layers."""

LAYERS: dict[str, type[Layer]] = {
    "dense": Dense,
    **ACTIVATIONS,
    "dropout": Dropout,
    "layernorm": LayerNorm,
    "batchnorm": BatchNorm,
    "residual": Residual,
}
"""Every layer by the name its spec carries."""

LAYER_NAMES = {cls: name for name, cls in LAYERS.items()}
