"""A feed-forward network of layers with softmax and cross-entropy on top.

The assignment's three methods are here: ``forward_pass(x)`` gives class probabilities,
``backward_pass(targets)`` fills the gradient of every parameter (the L2 term included), and
``update_network(optimizer, lr)`` takes one optimizer step. Everything stays on the device the
network was built for; nothing here reads a value back to the host.

A network is built either from widths and an activation (``Network([3072, 512, 10], "relu")``) or
from a list of layer specs (``Network(spec=[...])``, see :mod:`fastnn.layers`), which is also what a
checkpoint records; :func:`bottleneck_spec` writes the spec of Bachmann et al.'s bottleneck MLP.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastnn.backend import namespace
from fastnn.layers import ACTIVATIONS, Dense, Dropout, Layer, build_layer
from fastnn.losses import SoftmaxCrossEntropy, softmax
from fastnn.regularizers import L2

Array = Any

DEFAULT_INIT = {"relu": "he", "leaky_relu": "he", "sigmoid": "xavier", "tanh": "xavier", "gelu": "he"}


class Network:
    """Dense layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` with ``activation`` between them.

    ``sizes`` lists the widths, input first and number of classes last, e.g. ``[3072, 1024, 512, 10]``.
    ``dropout`` is applied after every hidden activation; ``l2`` is the L2 strength (0 for none).
    ``backend`` is a :class:`fastnn.backend.Backend`; weights are drawn on its device from ``seed``.
    Alternatively pass ``spec``, a list of layer specs (then leave out ``sizes``, ``activation``,
    ``init`` and ``dropout``, which the specs hold). ``label_smoothing`` is the loss's (see
    :class:`fastnn.losses.SoftmaxCrossEntropy`).
    """

    def __init__(
        self,
        sizes: Sequence[int] | None = None,
        activation: str = "relu",
        *,
        backend: Any = None,
        init: str | None = None,
        dropout: float = 0.0,
        l2: float = 0.0,
        seed: int | None = 0,
        dtype: str = "float32",
        spec: Sequence[dict[str, Any]] | None = None,
        label_smoothing: float = 0.0,
    ):
        if backend is None or isinstance(backend, str):
            from fastnn.backend import get_backend

            backend = get_backend(backend or "cpu")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backend, self.dtype = backend, dtype
        self.rng = backend.rng(seed)
        self.regularizer = L2(l2)
        self.loss_fn = SoftmaxCrossEntropy(label_smoothing)
        if spec is not None:
            if sizes is not None or init is not None or dropout:
                raise ValueError("give a network either sizes (with activation, init, dropout) or a spec, not both")
            self.layers = [build_layer(layer_spec, self.rng, dtype) for layer_spec in spec]
            self.activation = self.init = self.dropout = None
        else:
            self.layers = self._build(sizes, activation, init, dropout)
            self.activation, self.dropout = activation, dropout
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("a network needs at least one Dense layer")
        if isinstance(self.layers[0], Dense):
            self.layers[0].input_grad = False  # its input is data: dL/dx would never be used
        self.sizes = [dense[0].n_in] + [layer.n_out for layer in dense]
        width = self.sizes[0]
        for layer in self.layers:
            width = layer.width_after(width)
        if width != self.sizes[-1]:
            raise ValueError(f"a network must end with a Dense layer giving the classes; this one ends with {width}")
        if spec is None:
            self.init = dense[0].init

    def _build(self, sizes, activation, init, dropout) -> list[Layer]:
        if sizes is None or len(sizes) < 2:
            raise ValueError(f"need at least two layer sizes (inputs and classes), got {sizes!r}")
        if any(int(s) != s or s < 1 for s in sizes):
            raise ValueError(f"layer sizes must be positive integers, got {list(sizes)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        init = init or DEFAULT_INIT[activation]
        layers: list[Layer] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Dense(int(n_in), int(n_out), self.rng, init=init, dtype=self.dtype))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
                if dropout > 0:
                    layers.append(Dropout(dropout, self.rng))
        return layers

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    # -- the assignment's interface -----------------------------------------------------------
    def logits(self, x: Array, training: bool = False) -> Array:
        """Pre-softmax outputs (batch, classes) for inputs ``x`` (batch, sizes[0])."""
        if not hasattr(x, "ndim"):
            kind = type(x).__name__
            raise TypeError(f"inputs must be an array on the network's device (backend.asarray), not a {kind}")
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(
                f"input has shape {tuple(x.shape)}, but the first layer expects (batch, {self.sizes[0]})"
            )
        first = self.layers[0]
        if isinstance(first, Dense) and x.dtype != first.params["W"].dtype:  # int images: a float64 network
            raise ValueError(
                f"inputs are {str(x.dtype).rsplit('.', 1)[-1]}, the network computes in {self.dtype}: "
                f"put them on the device as backend.asarray(x, {self.dtype!r})"
            )
        for layer in self.layers:
            x = layer.forward(x, training)
        self._logits = x
        return x

    def forward_pass(self, x: Array, training: bool = False) -> Array:
        """Class probabilities (batch, classes): softmax of the last layer's outputs."""
        return softmax(self.logits(x, training))

    def backward_pass(self, targets: Array) -> Array:
        """Gradients of ``loss(targets)`` for every parameter, from the last forward pass.

        ``targets`` are integer labels (batch,) or probability rows (batch, classes).
        Returns the loss (a 0-d device array: cross-entropy plus the L2 penalty).
        """
        logits = getattr(self, "_logits", None)
        if logits is None:
            raise ValueError("backward_pass needs a forward_pass first: it differentiates the last forward pass")
        self.check_labels(targets)
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f"{targets.shape[0]} targets for a forward pass of {logits.shape[0]} inputs")
        loss = self.loss_fn.forward(logits, targets)
        grad = self.loss_fn.backward()
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        if self.regularizer.lam:
            for layer in self._dense():
                layer.grads["W"] = layer.grads["W"] + self.regularizer.gradient(layer.params["W"])
            loss = loss + self.regularizer.penalty([layer.params["W"] for layer in self._dense()])
        return loss

    def update_network(self, optimizer: Any, lr: float) -> None:
        """One optimizer step with learning rate ``lr`` on every parameter."""
        if any(key not in layer.grads for _, layer in self.named_layers() for key in layer.params):
            raise ValueError("update_network needs a backward_pass first: it applies the gradients that computes")
        optimizer.step(self.param_grads(), lr)

    # -- conveniences built on the three methods --------------------------------------------------
    def train_step(self, x: Array, labels: Array, optimizer: Any, lr: float) -> tuple[Array, Array]:
        """Forward, backward and update on one batch; returns (loss, number correct) on the device."""
        self.logits(x, training=True)
        loss = self.backward_pass(labels)
        correct = count_correct(namespace(self._logits).argmax(self._logits, axis=1), labels)
        self.update_network(optimizer, lr)
        return loss, correct

    def loss(self, x: Array, targets: Array) -> Array:
        """Cross-entropy plus L2 penalty on ``(x, targets)`` in evaluation mode (0-d device array)."""
        self.check_labels(targets, values=True)
        logits = self.logits(x)
        loss = SoftmaxCrossEntropy().forward(logits, targets)
        return loss + self.regularizer.penalty([layer.params["W"] for layer in self._dense()])

    def predict(self, x: Array) -> Array:
        """Predicted class indices (batch,)."""
        return namespace(x).argmax(self.logits(x), axis=1)

    def accuracy(self, x: Array, labels: Array) -> float:
        """Fraction of ``labels`` predicted correctly (read back to the host: not for the batch loop)."""
        self.check_labels(labels, values=True)
        return float(count_correct(self.predict(x), labels)) / labels.shape[0]

    def named_layers(self) -> Iterator[tuple[str, Layer]]:
        """``(name, layer)`` for every layer, those inside residual blocks too: ``"3"`` is the fourth
        layer, ``"3.1"`` the second layer of its body."""

        def walk(layers: Sequence[Layer], prefix: str) -> Iterator[tuple[str, Layer]]:
            for i, layer in enumerate(layers):
                yield f"{prefix}{i}", layer
                yield from walk(layer.sublayers(), f"{prefix}{i}.")

        return walk(self.layers, "")

    def parameters(self) -> Iterator[tuple[str, Array]]:
        """``(name, array)`` for every parameter, e.g. ``("0.W", W)`` for the first layer's weights."""
        for prefix, layer in self.named_layers():
            for key, value in layer.params.items():
                yield f"{prefix}.{key}", value

    def buffers(self) -> Iterator[tuple[str, Array]]:
        """``(name, array)`` for every buffer, e.g. ``("2.running_mean", ...)``: saved, not trained."""
        for prefix, layer in self.named_layers():
            for key, value in layer.buffers.items():
                yield f"{prefix}.{key}", value

    def param_grads(self) -> list[tuple[str, Array, Array]]:
        """``(name, param, grad)`` triples, as optimizers take them."""
        return [
            (f"{prefix}.{key}", value, layer.grads[key])
            for prefix, layer in self.named_layers()
            for key, value in layer.params.items()
        ]

    def state_dict(self) -> dict[str, Array]:
        """Parameter and buffer name -> array (on the device); ``backend.to_numpy`` each to save them."""
        return {**dict(self.parameters()), **dict(self.buffers())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy host or device arrays into the parameters and buffers (shapes must match; put on this device)."""
        missing = sorted(set(self.state_dict()) - set(state))
        if missing:
            raise ValueError(f"state is missing parameters {missing}")
        for prefix, layer in self.named_layers():
            for arrays in (layer.params, layer.buffers):
                for key, current in arrays.items():
                    name = f"{prefix}.{key}"
                    value = state[name]
                    if tuple(value.shape) != tuple(current.shape):
                        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
                    xp = namespace(current)
                    if _namespace_or_none(value) is xp:
                        arrays[key] = xp.astype(value, current.dtype, copy=True)
                    else:  # a host array, e.g. from a checkpoint file
                        arrays[key] = self.backend.asarray(value, self.dtype)

    def spec(self) -> list[dict[str, Any]]:
        """The layer specs ``Network(spec=...)`` rebuilds this network from (JSON-able)."""
        return [layer.spec() for layer in self.layers]

    def architecture(self) -> dict[str, Any]:
        """What is needed to rebuild this network (saved in checkpoints): the layer specs, the L2
        strength and the loss's label smoothing (a resumed run trains on the same loss), and for a
        network built from sizes those too, as older fastnn versions read them."""
        built_from_sizes = self.activation is not None
        legacy = {"sizes": list(self.sizes), "activation": self.activation, "init": self.init, "dropout": self.dropout}
        loss = {"l2": self.regularizer.lam, "label_smoothing": self.loss_fn.label_smoothing}
        return {**(legacy if built_from_sizes else {}), **loss, "layers": self.spec()}

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Network([{inner}], l2={self.regularizer.lam}, backend={self.backend.name})"

    # -- helpers -----------------------------------------------------------------------------------
    def _dense(self) -> list[Dense]:
        return [layer for _, layer in self.named_layers() if isinstance(layer, Dense)]

    def check_labels(self, labels: Array, values: bool = False) -> None:
        """Shape and dtype checks; with ``values`` also the range (that reads from the device)."""
        if labels.ndim == 2:
            if labels.shape[1] != self.n_classes:
                raise ValueError(f"targets have {labels.shape[1]} columns, the network has {self.n_classes} classes")
            return
        xp = namespace(labels)
        if labels.ndim != 1 or not xp.isdtype(labels.dtype, "integral"):
            raise ValueError(
                f"labels must be a 1-D integer array of class indices (got ndim={labels.ndim}, dtype={labels.dtype})"
            )
        if values and labels.shape[0]:
            low, high = int(xp.min(labels)), int(xp.max(labels))
            if low < 0 or high >= self.n_classes:
                raise ValueError(f"labels must lie in [0, {self.n_classes}), found values from {low} to {high}")


def bottleneck_spec(
    n_in: int,
    width: int,
    n_blocks: int,
    n_classes: int,
    *,
    expansion: int = 4,
    final_norm: bool = False,
    norm: str | None = "layernorm",
    activation: str = "gelu",
) -> list[dict[str, Any]]:
    """The layer specs of the bottleneck MLP of Bachmann et al. (2023, "Scaling MLPs"):
    ``Dense(n_in, width)``, then ``n_blocks`` residual blocks
    ``x + Dense(e*width, width)(GELU(Dense(width, e*width)(LayerNorm(x))))`` with ``e = expansion``,
    optionally a final LayerNorm, and ``Dense(width, n_classes)``. ``norm`` (a layer name, or None
    for none) and ``activation`` replace the blocks' LayerNorm and GELU."""
    for label, value in (("n_in", n_in), ("width", width), ("n_classes", n_classes), ("expansion", expansion)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a whole number >= 1, got {value!r}")
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 0:
        raise ValueError(f"n_blocks must be a whole number >= 0, got {n_blocks!r}")
    wide = expansion * width

    def block() -> dict[str, Any]:
        body = [
            *([{"type": norm, "n_features": width}] if norm else []),
            {"type": "dense", "n_in": width, "n_out": wide},
            {"type": activation},
            {"type": "dense", "n_in": wide, "n_out": width},
        ]
        return {"type": "residual", "body": body}

    final = [{"type": "layernorm", "n_features": width}] if final_norm else []
    return [
        {"type": "dense", "n_in": n_in, "n_out": width},
        *(block() for _ in range(n_blocks)),
        *final,
        {"type": "dense", "n_in": width, "n_out": n_classes},
    ]


def mlp_spec(
    sizes: Sequence[int], activation: str, *, norm: str | None = None, dropout: float = 0.0
) -> list[dict[str, Any]]:
    """The layer specs of ``Network(sizes, activation, dropout=dropout)`` with a ``norm`` layer
    (a layer name such as ``"batchnorm"``, or None) after each hidden Dense, before its activation:
    ``Dense -> norm -> activation -> dropout`` per hidden layer, then the last Dense."""
    init = DEFAULT_INIT[activation]
    spec: list[dict[str, Any]] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        spec.append({"type": "dense", "n_in": n_in, "n_out": n_out, "init": init})
        if i < len(sizes) - 2:
            spec += [{"type": norm, "n_features": n_out}] if norm else []
            spec.append({"type": activation})
            spec += [{"type": "dropout", "p": dropout}] if dropout else []
    return spec


def count_correct(predicted: Array, labels: Array) -> Array:
    """How many ``predicted`` classes (batch,) equal the labels: a 0-d device array. ``labels`` are
    class indices (batch,) or probability rows (batch, classes)."""
    xp = namespace(predicted)
    if labels.ndim == 2:
        labels = xp.argmax(labels, axis=1)
    return xp.sum(xp.astype(predicted == labels, xp.int64))


def _namespace_or_none(array: Any) -> Any:
    try:
        return namespace(array)
    except TypeError:
        return None
