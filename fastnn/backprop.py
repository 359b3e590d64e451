"""Backpropagation by hand, checked by machine: the full trace of one gradient step (assignment task 1).

What it is for: a small fully-connected network whose neurons all use the sigmoid, one input ``x``, one
target ``t``, the loss ``L = 1/2 * sum_i (y_i - t_i)^2`` and a learning rate ``eta``. It computes and
writes out every number a person computes on paper -- each neuron's ``z`` and activation, the loss,
each neuron's delta, the gradient of every weight and bias, the updated parameters ``w - eta * grad``
-- and, for one chosen weight, the chain rule with the numbers substituted. The trace renders as rich
text for the terminal, as Markdown or as LaTeX for a report.

What it is not: the training code (``fastnn.layers``, ``fastnn.network``). It runs on the host in
float64 with NumPy, one example and no batches, so that each number can be held against a hand
computation.

Index convention (Nielsen's book): layer 0 is the input ``x``, layer ``L`` the output ``y``, neurons
are numbered from 1. ``w^l_{j,k}`` joins neuron ``k`` of layer ``l-1`` to neuron ``j`` of layer ``l``;
``b^l_j`` is the bias of neuron ``j`` of layer ``l``. In the input file ``layers[l-1]["weights"]`` is
the matrix ``W^l`` of shape ``(n_l, n_{l-1})``: ``weights[j-1][k-1] = w^l_{j,k}``, one row per neuron of
layer ``l``, so that ``z^l = W^l a^{l-1} + b^l``. In the code the layer index ``l`` is spelled ``ell``
(a lone ``l`` reads like ``1``), and per-layer values are dicts keyed by it: ``trace.z[ell]``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONVENTION = (
    "w^l_{j,k} joins neuron k of layer l-1 to neuron j of layer l (layer 0 is the input x, "
    "neurons count from 1); b^l_j is the bias of neuron j of layer l"
)


MAX_PARAMETERS = 10_000
"""The most weights and biases a problem may have: a trace is written for a person to follow by hand,
and each parameter adds lines to it (a 3000x3000 network took minutes and wrote hundreds of MB)."""
MAX_LAYERS = 20
MAX_FILE_BYTES = 2**20
"""The largest problem file read: a problem at the parameter limit takes a few hundred kB."""


class ProblemError(ValueError):
    """A problem file or a weight index that cannot be used; the message names the key and the fix."""


# --------------------------------------------------------------------------------------------------
# The problem: input, target, learning rate, parameters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One fully-connected sigmoid layer ``l``: ``weights`` (n_l, n_{l-1}) and ``biases`` (n_l,)."""

    weights: np.ndarray
    biases: np.ndarray


@dataclass(frozen=True)
class Problem:
    """Everything one step needs: ``x`` (n_0,), ``target`` (n_L,), ``learning_rate``, ``layers[l-1]``."""

    x: np.ndarray
    target: np.ndarray
    learning_rate: float
    layers: tuple[Layer, ...]

    @property
    def sizes(self) -> list[int]:
        """Neurons per layer, input first: ``[n_0, n_1, ..., n_L]``."""
        return [len(self.x)] + [len(layer.biases) for layer in self.layers]


_TOP_KEYS = {
    "x": 'add "x": [0.5, 0.5, 0.1], the input vector',
    "target": 'add "target": [0.9, 0.1], one value per output neuron',
    "learning_rate": 'add "learning_rate": 0.1',
    "layers": 'add "layers": [{"weights": [[...], ...], "biases": [...]}, ...], one entry per layer '
    "after the input (see fastnn backprop --example)",
}
_LAYER_KEYS = {
    "weights": 'add "weights": one row per neuron of this layer, one number per neuron of the layer before',
    "biases": 'add "biases": one number per neuron of this layer',
}


def _check_keys(mapping: object, expected: dict[str, str], where: str) -> dict:
    if not isinstance(mapping, dict):
        raise ProblemError(f"{where or 'the file'} must be an object with the keys {', '.join(expected)}")
    prefix = f"{where}." if where else ""
    for key in mapping:
        if not str(key).startswith("_") and key not in expected:
            raise ProblemError(
                f"unknown key {prefix}{key}: use {', '.join(expected)} (keys starting with '_' are ignored)"
            )
    for key, fix in expected.items():
        if key not in mapping:
            raise ProblemError(f"missing key {prefix}{key}: {fix}")
    return mapping


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProblemError(f"{key} is {value!r}, not a number: write a plain number such as 0.1")
    try:
        number = float(value)
    except OverflowError:  # a whole number of hundreds of digits
        raise ProblemError(f"{key} is a whole number too large for a float: write a finite number") from None
    if not math.isfinite(number):
        raise ProblemError(f"{key} is {value!r}: write a finite number")
    return number


def _vector(value: object, key: str) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise ProblemError(f"{key} must be a non-empty list of numbers, e.g. [0.5, 0.5, 0.1]")
    return np.array([_number(v, f"{key}[{i}]") for i, v in enumerate(value)], dtype=np.float64)


def _matrix(value: object, key: str, layer: int) -> np.ndarray:
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise ProblemError(
            f"{key} must be a list of rows, one row (a list of numbers) per neuron of layer {layer}"
        )
    rows = [_vector(row, f"{key}[{j}]") for j, row in enumerate(value)]
    for j, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise ProblemError(
                f"{key}[{j}] has {_count(len(row), 'number')} but {key}[0] has {len(rows[0])}: every row needs "
                f"one weight per neuron of layer {layer - 1}"
            )
    return np.stack(rows)


def parse_problem(data: object) -> Problem:
    """Check a decoded JSON/TOML document and turn it into a :class:`Problem` (float64 arrays).

    Raises :class:`ProblemError` with a one-line message naming the key and the fix: missing or
    unknown keys, non-numbers, shapes that do not chain (``layers[i].weights`` must have as many
    columns as the layer before has neurons, ``biases`` one entry per row, ``target`` one entry per
    output neuron). Keys starting with ``_`` are ignored anywhere.
    """
    data = _check_keys(data, _TOP_KEYS, "")
    x = _vector(data["x"], "x")
    target = _vector(data["target"], "target")
    learning_rate = _number(data["learning_rate"], "learning_rate")
    if not learning_rate > 0:
        raise ProblemError(f"learning_rate is {learning_rate:g}: write a number > 0, e.g. 0.1")
    if not isinstance(data["layers"], list) or not data["layers"]:
        raise ProblemError(f"layers must be a non-empty list: {_TOP_KEYS['layers']}")
    if len(data["layers"]) > MAX_LAYERS:
        raise ProblemError(f"layers has {len(data['layers'])} entries; a trace is for at most {MAX_LAYERS} layers")
    layers = []
    previous_name, previous_size = "layer 0 (x)", len(x)
    for i, entry in enumerate(data["layers"]):
        key = f"layers[{i}]"
        entry = _check_keys(entry, _LAYER_KEYS, key)
        weights = _matrix(entry["weights"], f"{key}.weights", layer=i + 1)
        biases = _vector(entry["biases"], f"{key}.biases")
        if weights.shape[1] != previous_size:
            raise ProblemError(
                f"{key}.weights has {_count(weights.shape[1], 'column')} but {previous_name} has "
                f"{_count(previous_size, 'neuron')}: give each row one weight per neuron of layer {i} "
                f"(shape: neurons of layer {i + 1} x neurons of layer {i})"
            )
        if len(biases) != weights.shape[0]:
            raise ProblemError(
                f"{key}.biases has {_count(len(biases), 'number')} but {key}.weights has "
                f"{_count(weights.shape[0], 'row')}: "
                "give one bias per neuron, i.e. per row of weights"
            )
        layers.append(Layer(weights, biases))
        previous_name, previous_size = f"layer {i + 1} ({key})", weights.shape[0]
    parameters = sum(layer.weights.size + layer.biases.size for layer in layers)
    if parameters > MAX_PARAMETERS:
        raise ProblemError(
            f"the network has {parameters:,} weights and biases; a trace, written to be followed by hand, "
            f"is for at most {MAX_PARAMETERS:,}: use a smaller network"
        )
    if len(target) != previous_size:
        raise ProblemError(
            f"target has {_count(len(target), 'number')} but the last layer has {_count(previous_size, 'neuron')}: "
            "give one target per output neuron"
        )
    return Problem(x, target, learning_rate, tuple(layers))


def problem_from_text(text: str, kind: str, name: str = "the file") -> Problem:
    """Decode ``text`` as ``kind`` ("json" or "toml") and :func:`parse_problem` it."""
    if len(text) > MAX_FILE_BYTES:
        raise ProblemError(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MiB, too large for a problem file")
    try:
        data = json.loads(text) if kind == "json" else tomllib.loads(text)
    except RecursionError:
        raise ProblemError(f"{name} nests lists or tables too deeply to be a problem file") from None
    except json.JSONDecodeError as err:
        raise ProblemError(
            f"{name} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}): fix the syntax, "
            "compare with fastnn backprop --example"
        ) from None
    except tomllib.TOMLDecodeError as err:
        reason = " ".join(str(err).split())
        raise ProblemError(f"{name} is not valid TOML ({reason}): fix the syntax") from None
    except ValueError as err:  # e.g. a whole number of more digits than Python converts
        raise ProblemError(f"{name} cannot be read ({err})") from None
    return parse_problem(data)


def load_problem(path: str | Path) -> Problem:
    """Read a problem from a ``.json`` or ``.toml`` file (chosen by extension)."""
    path = Path(path)
    kind = {".json": "json", ".toml": "toml"}.get(path.suffix.lower())
    if kind is None:
        raise ProblemError(f"{path}: unknown file type {path.suffix!r}: use a .json or a .toml file")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)  # no more than that is ever read into memory
    except OSError as err:
        raise ProblemError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ProblemError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MiB, too large for a problem file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProblemError(f"{path} is not UTF-8 text: save it as a UTF-8 .{kind} file") from None
    return problem_from_text(text, kind, str(path))


def example_problem(hidden: int = 2) -> dict:
    """The assignment's task 1 as a problem document: x = [0.5, 0.5, 0.1], t = [0.9, 0.1], eta = 0.1.

    A 3-``hidden``-2 network. The weights and biases are placeholders (0.1, 0.2, ... in row order),
    marked so by the ``_note`` key, to be replaced with the values of the assignment's figure.
    """
    sizes = [3, hidden, 2]
    layers = []
    for ell in range(1, len(sizes)):
        n_out, n_in = sizes[ell], sizes[ell - 1]
        kind = "output" if ell == len(sizes) - 1 else "hidden"
        layers.append(
            {
                "_layer": f"layer {ell} ({kind}): {n_out} neurons; weights[j-1][k-1] = w^{ell}_{{j,k}}, "
                f"{n_out} rows x {n_in} columns",
                "weights": [[round(0.1 * (j * n_in + k + 1), 10) for k in range(n_in)] for j in range(n_out)],
                "biases": [round(0.1 * (j + 1), 10) for j in range(n_out)],
            }
        )
    return {
        "_note": "PLACEHOLDER weights and biases: replace them with the values of the assignment's figure",
        "_convention": f"{CONVENTION}; layers[l-1].weights[j-1][k-1] = w^l_{{j,k}}, "
        "shape (neurons of layer l, neurons of layer l-1)",
        "x": [0.5, 0.5, 0.1],
        "target": [0.9, 0.1],
        "learning_rate": 0.1,
        "layers": layers,
    }


def dump_problem(document: dict) -> str:
    """JSON text of a problem document with each list of numbers on one line (rows of a matrix)."""

    def dump(value: object, indent: str) -> str:
        inner = indent + "  "
        if isinstance(value, dict):
            items = [f"{inner}{json.dumps(k)}: {dump(v, inner)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{indent}}}"
        if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
            return "[\n" + ",\n".join(inner + dump(v, inner) for v in value) + f"\n{indent}]"
        return json.dumps(value)

    return dump(document, "") + "\n"


# --------------------------------------------------------------------------------------------------
# The computation: forward and backward, layer by layer
# --------------------------------------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``sigma(z) = 1 / (1 + exp(-z))``, written as ``(1 + tanh(z/2)) / 2`` so that no exp overflows.

    Its derivative, used by the backward pass: ``sigma'(z) = sigma(z) * (1 - sigma(z))``.
    """
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass(frozen=True)
class Trace:
    """Every number of one step, keyed by the 1-based layer ``l`` (``a[0]`` is ``x``, ``a[L]`` is ``y``).

    Shapes: ``z[l]``, ``a[l]``, ``delta[l]``, ``grad_b[l]``, ``new_b[l]`` are (n_l,);
    ``grad_w[l]`` and ``new_w[l]`` are (n_l, n_{l-1}) like ``problem.layers[l-1].weights``.
    """

    problem: Problem
    z: dict[int, np.ndarray]
    a: dict[int, np.ndarray]
    loss: float
    delta: dict[int, np.ndarray]
    grad_w: dict[int, np.ndarray]
    grad_b: dict[int, np.ndarray]
    new_w: dict[int, np.ndarray]
    new_b: dict[int, np.ndarray]

    @property
    def depth(self) -> int:
        """``L``, the number of layers after the input."""
        return len(self.problem.layers)


def loss(problem: Problem) -> float:
    """``L = 1/2 * sum_i (y_i - t_i)^2`` after a forward pass (what finite differences perturb)."""
    return trace(problem).loss


def trace(problem: Problem) -> Trace:
    """One forward and one backward pass, and the update ``w <- w - eta * dL/dw``.

    Forward, for ``l = 1..L``::         Backward, for ``l = L..1``::

        z^l = W^l a^{l-1} + b^l             delta^L = (y - t) * y * (1 - y)
        a^l = sigma(z^l)                    delta^l = (W^{l+1}.T delta^{l+1}) * a^l * (1 - a^l)
        y = a^L                             dL/dW^l = outer(delta^l, a^{l-1}),  dL/db^l = delta^l
    """
    layers = dict(enumerate(problem.layers, start=1))
    depth = len(layers)
    z, a = {}, {0: problem.x}
    with np.errstate(over="ignore", invalid="ignore"):  # checked below, with a message of our own
        for ell, layer in layers.items():
            z[ell] = layer.weights @ a[ell - 1] + layer.biases
            a[ell] = sigmoid(z[ell])
        y, t = a[depth], problem.target
        loss_value = float(0.5 * np.sum((y - t) ** 2))

        delta = {depth: (y - t) * y * (1.0 - y)}
        for ell in range(depth - 1, 0, -1):
            delta[ell] = (layers[ell + 1].weights.T @ delta[ell + 1]) * a[ell] * (1.0 - a[ell])
        grad_w = {ell: np.outer(delta[ell], a[ell - 1]) for ell in layers}
        grad_b = {ell: delta[ell].copy() for ell in layers}
        eta = problem.learning_rate
        new_w = {ell: layer.weights - eta * grad_w[ell] for ell, layer in layers.items()}
        new_b = {ell: layer.biases - eta * grad_b[ell] for ell, layer in layers.items()}
    computed = [*z.values(), *grad_w.values(), *new_w.values(), *new_b.values(), np.array(loss_value)]
    if not all(np.all(np.isfinite(values)) for values in computed):
        raise ProblemError(
            "the numbers overflow double precision (a sum or product passed 1.8e308); "
            "use inputs, weights and learning rate of ordinary size"
        )
    return Trace(problem, z, a, loss_value, dict(sorted(delta.items())), grad_w, grad_b, new_w, new_b)


def parse_weight(spec: str, problem: Problem) -> tuple[int, int, int]:
    """Read a weight index ``"l,j,k"`` or ``"w^l_{j,k}"`` (1-based) and check it exists in ``problem``."""
    parts = [p for p in re.split(r"[\s,^_{}wW]+", spec) if p]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ProblemError(f"weight {spec!r} is not of the form l,j,k or w^l_{{j,k}}: write e.g. 1,1,1")
    ell, j, k = (int(p) for p in parts)
    sizes = problem.sizes
    depth = len(sizes) - 1
    if not 1 <= ell <= depth:
        raise ProblemError(f"weight {spec!r}: there is no layer {ell}; the layers are 1..{depth} (0 is the input)")
    if not 1 <= j <= sizes[ell]:
        raise ProblemError(f"weight {spec!r}: neuron j={j} does not exist, layer {ell} has neurons 1..{sizes[ell]}")
    if not 1 <= k <= sizes[ell - 1]:
        raise ProblemError(
            f"weight {spec!r}: neuron k={k} does not exist, layer {ell - 1} has neurons 1..{sizes[ell - 1]}"
        )
    return ell, j, k


# --------------------------------------------------------------------------------------------------
# Writing it down: one notation for the terminal, one for LaTeX (Markdown uses the LaTeX one)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notation:
    """How symbols and numbers are spelled: ``style`` is "text" (terminal), "markdown" or "latex".

    Markdown and LaTeX share the LaTeX spelling of mathematics; they differ only in :meth:`code`.
    """

    style: str = "text"
    digits: int = 6

    @property
    def latex(self) -> bool:
        return self.style != "text"

    def sym(self, base: str, layer: int | str | None, sub: str) -> str:
        """``base^layer_sub``, e.g. ``w^1_{1,2}`` (plain) or ``w^{1}_{1,2}`` (LaTeX)."""
        def script(mark: str, text: str) -> str:
            return f"{mark}{text}" if len(text) == 1 and not self.latex else f"{mark}{{{text}}}"

        return base + ("" if layer is None else script("^", str(layer))) + script("_", sub)

    def w(self, ell: int | str, j: int | str, k: int | str) -> str:
        return self.sym("w", ell, f"{j},{k}")

    def b(self, ell: int | str, j: int | str) -> str:
        return self.sym("b", ell, str(j))

    def z(self, ell: int | str, j: int | str) -> str:
        return self.sym("z", ell, str(j))

    def delta(self, ell: int | str, j: int | str) -> str:
        return self.sym(r"\delta" if self.latex else "δ", ell, str(j))

    def act(self, ell: int | str, j: int | str, depth: int | str) -> str:
        """The activation of neuron ``j`` of layer ``l``, called ``x_j`` for the input, ``y_j`` for the output."""
        if ell == 0:
            return self.sym("x", None, str(j))
        return self.sym("y", None, str(j)) if ell == depth else self.sym("a", ell, str(j))

    def t(self, j: int | str) -> str:
        return self.sym("t", None, str(j))

    def d(self, top: str, bottom: str) -> str:
        """The partial derivative of ``top`` by ``bottom``."""
        if self.latex:
            return rf"\frac{{\partial {top}}}{{\partial {bottom}}}"
        return f"∂{top}/∂{bottom}"

    @property
    def dot(self) -> str:
        return r" \cdot " if self.latex else " · "

    @property
    def eta(self) -> str:
        return r"\eta" if self.latex else "η"

    @property
    def arrow(self) -> str:
        return r"\leftarrow" if self.latex else "←"

    def sum(self, index: str) -> str:
        return rf"\sum_{{{index}}} " if self.latex else f"Σ_{index} "

    def brackets(self, inside: str) -> str:
        return rf"\left[{inside}\right]" if self.latex else f"[{inside}]"

    def big_brackets(self) -> tuple[str, str]:
        """Brackets that may open and close on different lines."""
        return (r"\Bigl[", r"\Bigr]") if self.latex else ("[", "]")

    def sigmoid(self, arg: str, prime: bool = False) -> str:
        name = (r"\sigma" if self.latex else "σ") + ("'" if prime else "")
        return f"{name}({arg})"

    def code(self, text: str) -> str:
        """A piece of the input file inside prose."""
        return {"markdown": f"`{text}`", "latex": rf"\texttt{{{text}}}"}.get(self.style, text)

    def math(self, text: str) -> str:
        """Inline mathematics inside prose or a table cell."""
        return f"${text}$" if self.latex else text

    def num(self, value: float, factor: bool = False) -> str:
        """``value`` to ``digits`` significant digits; in parentheses if it is a negative ``factor``."""
        text = f"{value:.{self.digits}g}"
        if self.latex and "e" in text:
            mantissa, exponent = text.split("e")
            text = rf"{mantissa} \cdot 10^{{{int(exponent)}}}"
        return f"({text})" if factor and value < 0 else text

    def times(self, *factors: str) -> str:
        return self.dot.join(factors)

    def one_minus(self, text: str) -> str:
        return f"(1 - {text})"


# --------------------------------------------------------------------------------------------------
# The report: a list of blocks, built once, rendered three ways
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    """Cells are finished strings; the columns in ``formulas`` hold arithmetic written out (may wrap)."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    formulas: tuple[int, ...] = ()


@dataclass(frozen=True)
class Equations:
    """``lhs = steps[0] = steps[1] = ...``, one step a line, as on paper.

    A step given as a tuple of pieces is one line on the terminal and one piece a line in LaTeX,
    where a line cannot wrap by itself.
    """

    lhs: str
    steps: list[str | tuple[str, ...]]


@dataclass(frozen=True)
class ChainRule:
    """The chain rule for one weight: the equations, and the value its own arithmetic gives."""

    blocks: list[Equations | Paragraph]
    gradient: float


def _z_numbers(tr: Trace, n: Notation, ell: int, j: int) -> str:
    """``w^l_{j,1} a^{l-1}_1 + ... + b^l_j`` with the numbers in."""
    layer = tr.problem.layers[ell - 1]
    terms = [n.times(n.num(w, True), n.num(a, True)) for w, a in zip(layer.weights[j - 1], tr.a[ell - 1])]
    return " + ".join(terms + [n.num(layer.biases[j - 1], True)])


def _delta_formula(n: Notation, ell: int | str, j: int | str, depth: int | str) -> str:
    """``delta^l_j`` in symbols: through ``y`` for the output layer, through ``delta^{l+1}`` below it.

    ``ell`` and ``depth`` may be symbols ("l", "L") for the general formula.
    """
    if ell == depth:
        y = n.act(ell, j, depth)
        return n.times(f"({y} - {n.t(j)})", y + n.one_minus(y))
    above = ell + 1 if isinstance(ell, int) else f"{ell}+1"
    a = n.act(ell, j, depth)
    return n.times(a + n.one_minus(a), n.sum("i") + n.w(above, "i", j) + " " + n.delta(above, "i"))


def _delta_numbers(tr: Trace, n: Notation, ell: int, j: int) -> str:
    """:func:`_delta_formula` with the numbers in."""
    a = tr.a[ell][j - 1]
    if ell == tr.depth:
        return n.times(f"({n.num(a)} - {n.num(tr.problem.target[j - 1], True)})", n.num(a), n.one_minus(n.num(a)))
    weights, deltas = tr.problem.layers[ell].weights[:, j - 1], tr.delta[ell + 1]
    paths = " + ".join(n.times(n.num(w, True), n.num(d, True)) for w, d in zip(weights, deltas))
    return n.times(n.num(a), n.one_minus(n.num(a)), n.brackets(paths))


def _split_sum(n: Notation, terms: list[str], tail: str) -> tuple[str, ...]:
    """``[term_1 + term_2 + ...]`` followed by ``tail``, one term a piece (see :class:`Equations`)."""
    left, right = n.big_brackets()
    pieces = [left + terms[0]] + [f"+ {term}" for term in terms[1:]]
    pieces[-1] += right + tail
    return tuple(pieces)


def chain_rule(tr: Trace, weight: tuple[int, int, int], n: Notation) -> ChainRule:
    """``dL/dw^l_{j,k}`` written out factor by factor, then with the numbers, then evaluated.

    Output layer (``l = L``): ``dL/dy_j * dy_j/dz^L_j * dz^L_j/dw^L_{j,k} = (y_j - t_j) y_j (1 - y_j) a^{L-1}_k``.
    Lower layers: a sum over the neurons ``i`` of layer ``l+1``, the paths from ``w`` to the loss,
    ``sum_i dL/dz^{l+1}_i * w^{l+1}_{i,j} * a^l_j (1 - a^l_j) * a^{l-1}_k``, where ``dL/dz^{l+1}_i`` is
    written out through ``y`` when ``l+1 = L`` and is ``delta^{l+1}_i`` otherwise (then the deltas
    from the output down to layer ``l+1`` follow, each with its numbers). The value is computed from
    the factors shown, not taken from :func:`trace`'s gradients; the update ``w - eta * dL/dw`` ends it.
    """
    ell, j, k = weight
    depth, a, eta = tr.depth, tr.a, tr.problem.learning_rate
    y, t = a[depth], tr.problem.target
    w_sym = n.w(ell, j, k)
    lhs = n.d("L", w_sym)
    a_in, a_in_sym = a[ell - 1][k - 1], n.act(ell - 1, k, depth)
    blocks = []
    if ell == depth:
        yj, tj, y_sym = y[j - 1], t[j - 1], n.act(depth, j, depth)
        gradient = (yj - tj) * yj * (1.0 - yj) * a_in
        steps = [
            n.times(n.d("L", y_sym), n.d(y_sym, n.z(depth, j)), n.d(n.z(depth, j), w_sym)),
            n.times(f"({y_sym} - {n.t(j)})", y_sym + n.one_minus(y_sym), a_in_sym),
            n.times(f"({n.num(yj)} - {n.num(tj, True)})", n.num(yj), n.one_minus(n.num(yj)), n.num(a_in, True)),
            n.num(gradient),
        ]
        blocks.append(Equations(lhs, steps))
    else:
        aj, a_sym = a[ell][j - 1], n.act(ell, j, depth)
        w_next = tr.problem.layers[ell].weights[:, j - 1]
        if ell + 1 == depth:
            y_sym, z_sym = n.act(depth, "i", depth), n.z(depth, "i")
            path_sym = [n.d("L", y_sym), n.d(y_sym, z_sym), n.d(z_sym, a_sym)]
            path_formula = [f"({y_sym} - {n.t('i')})", y_sym + n.one_minus(y_sym), n.w(depth, "i", j)]
            upstream = (y - t) * y * (1.0 - y)
            path_numbers = [
                n.times(f"({n.num(yi)} - {n.num(ti, True)})", n.num(yi), n.one_minus(n.num(yi)), n.num(w, True))
                for yi, ti, w in zip(y, t, w_next)
            ]
        else:
            z_sym = n.z(ell + 1, "i")
            path_sym = [n.d("L", z_sym), n.d(z_sym, a_sym)]
            path_formula = [n.delta(ell + 1, "i"), n.w(ell + 1, "i", j)]
            upstream = tr.delta[ell + 1]
            path_numbers = [n.times(n.num(d, True), n.num(w, True)) for d, w in zip(upstream, w_next)]
        paths = upstream * w_next
        gradient = float(np.sum(paths)) * aj * (1.0 - aj) * a_in
        steps = [
            n.sum("i") + n.times(*path_sym, n.d(a_sym, n.z(ell, j)), n.d(n.z(ell, j), w_sym)),
            n.sum("i") + n.times(*path_formula, a_sym + n.one_minus(a_sym), a_in_sym),
            _split_sum(n, path_numbers, n.times("", n.num(aj), n.one_minus(n.num(aj)), n.num(a_in, True))),
            n.times(n.brackets(" + ".join(n.num(p, True) for p in paths)), n.num(aj * (1.0 - aj)),
                    n.num(a_in, True)),
            n.num(gradient),
        ]
        blocks.append(Equations(lhs, steps))
        if ell + 1 < depth:  # the sum used delta^{l+1}: show where it comes from, from the output down
            blocks.append(Paragraph(f"where, from the output layer down to layer {n.math(str(ell + 1))}:"))
            blocks += [
                Equations(n.delta(upper, i), [_delta_formula(n, upper, i, depth), _delta_numbers(tr, n, upper, i),
                                              n.num(tr.delta[upper][i - 1])])
                for upper in range(depth, ell, -1) for i in range(1, len(tr.delta[upper]) + 1)
            ]
    old = tr.problem.layers[ell - 1].weights[j - 1, k - 1]
    blocks.append(Equations(
        f"{w_sym} {n.arrow} {w_sym} - {n.eta}{n.dot}{lhs}",
        [n.times(f"{n.num(old)} - {n.num(eta)}", n.num(gradient, True)), n.num(old - eta * gradient)],
    ))
    return ChainRule(blocks, gradient)


def _layer_title(ell: int, depth: int) -> str:
    return f"Layer {ell} ({'output' if ell == depth else 'hidden'})"


def _overview(tr: Trace, n: Notation) -> list:
    m, depth = n.math, tr.depth
    half = r"\frac{1}{2}" if n.latex else "1/2"
    logistic = r"\frac{1}{1 + e^{-z}}" if n.latex else "1/(1 + e^(-z))"
    w_ljk, b_lj = n.w("l", "j", "k"), n.b("l", "j")
    z_def = f"{n.z('l', 'j')} = {n.sum('k')}{w_ljk} {n.sym('a', 'l-1', 'k')} + {b_lj}"
    return [
        Heading(f"Backpropagation trace: one gradient step on a {'-'.join(map(str, tr.problem.sizes))} "
                "sigmoid network", 1),
        Paragraph(
            f"Convention: {m(w_ljk)} joins neuron {m('k')} of layer {m('l-1')} to neuron {m('j')} of layer "
            f"{m('l')}; {m(b_lj)} is the bias of neuron {m('j')} of layer {m('l')}. Layer 0 is the input "
            f"{m('x')}, layer {m(f'L = {depth}')} the output {m('y')}; neurons count from 1. In the file, "
            f"{n.code('layers[l-1].weights[j-1][k-1]')} is {m(w_ljk)}."
        ),
        Paragraph(
            f"Each neuron: {m(z_def)} and "
            f"{m(n.sym('a', 'l', 'j') + ' = ' + n.sigmoid(n.z('l', 'j')))}, with "
            f"{m(n.sigmoid('z') + ' = ' + logistic)}. Loss {m(f'L = {half} ' + n.sum('i') + '(y_i - t_i)^2')}, "
            f"learning rate {m(n.eta + ' = ' + n.num(tr.problem.learning_rate))}."
        ),
    ]


def _forward(tr: Trace, n: Notation) -> list:
    m, depth, problem = n.math, tr.depth, tr.problem
    blocks: list = [
        Heading("Forward pass"),
        Table("Input (layer 0)", ["k", m(n.act(0, "k", depth))],
              [[str(k), m(n.num(v))] for k, v in enumerate(problem.x, start=1)]),
    ]
    for ell in range(1, depth + 1):
        z_sum = f"{n.sum('k')}{n.w(ell, 'j', 'k')} {n.act(ell - 1, 'k', depth)} + {n.b(ell, 'j')}"
        headers = ["j", m(f"{n.z(ell, 'j')} = {z_sum}"), m(n.z(ell, "j")),
                   m(f"{n.act(ell, 'j', depth)} = {n.sigmoid(n.z(ell, 'j'))}")]
        rows = [[str(j), m(_z_numbers(tr, n, ell, j)), m(n.num(tr.z[ell][j - 1])), m(n.num(tr.a[ell][j - 1]))]
                for j in range(1, len(tr.z[ell]) + 1)]
        if ell == depth:
            headers.append(m(n.t("j")))
            for row, target in zip(rows, problem.target):
                row.append(m(n.num(target)))
        blocks.append(Table(_layer_title(ell, depth), headers, rows, formulas=(1,)))
    half = r"\frac{1}{2}" if n.latex else "1/2"
    squares = " + ".join(f"({n.num(yi)} - {n.num(ti, True)})^2" for yi, ti in zip(tr.a[depth], problem.target))
    blocks.append(Equations("L", [f"{half} {n.sum('i')}(y_i - t_i)^2", f"{half} {n.brackets(squares)}",
                                  n.num(tr.loss)]))
    return blocks


def _backward(tr: Trace, n: Notation) -> list:
    m, depth = n.math, tr.depth
    sigma_z = n.sigmoid("z")
    derivative = f"{n.sigmoid('z', prime=True)} = {n.times(sigma_z, n.one_minus(sigma_z))}"
    blocks: list = [
        Heading("Backward pass"),
        Paragraph(
            f"{m(n.delta('l', 'j') + ' = ' + n.d('L', n.z('l', 'j')))}, using {m(derivative)}; from the output "
            f"layer {m('L')} down: {m(n.delta('L', 'j') + ' = ' + _delta_formula(n, 'L', 'j', 'L'))} and "
            f"{m(n.delta('l', 'j') + ' = ' + _delta_formula(n, 'l', 'j', 'L'))} for {m('l < L')}."
        ),
    ]
    for ell in range(depth, 0, -1):
        rows = [[str(j), m(_delta_numbers(tr, n, ell, j)), m(n.num(tr.delta[ell][j - 1]))]
                for j in range(1, len(tr.delta[ell]) + 1)]
        headers = ["j", m(f"{n.delta(ell, 'j')} = {_delta_formula(n, ell, 'j', depth)}"), m(n.delta(ell, "j"))]
        blocks.append(Table(_layer_title(ell, depth), headers, rows, formulas=(1,)))
    return blocks


def _update(tr: Trace, n: Notation) -> list:
    m, problem = n.math, tr.problem
    new_p = f"p - {n.eta}{n.dot}{n.d('L', 'p')}"
    blocks: list = [
        Heading("Gradients and updated parameters"),
        Paragraph(
            f"{m(n.d('L', n.w('l', 'j', 'k')) + ' = ' + n.delta('l', 'j') + ' ' + n.sym('a', 'l-1', 'k'))} and "
            f"{m(n.d('L', n.b('l', 'j')) + ' = ' + n.delta('l', 'j'))}; each parameter {m('p')} becomes "
            f"{m(new_p)} with {m(n.eta + ' = ' + n.num(problem.learning_rate))}."
        ),
    ]
    for ell, layer in enumerate(problem.layers, start=1):
        delta, a_in = tr.delta[ell], tr.a[ell - 1]
        rows = [[m(n.w(ell, j, k)), m(n.num(layer.weights[j - 1, k - 1])), m(n.num(tr.grad_w[ell][j - 1, k - 1])),
                 m(n.times(n.num(delta[j - 1]), n.num(a_in[k - 1], True))), m(n.num(tr.new_w[ell][j - 1, k - 1]))]
                for j in range(1, len(delta) + 1) for k in range(1, len(a_in) + 1)]
        rows += [[m(n.b(ell, j)), m(n.num(layer.biases[j - 1])), m(n.num(tr.grad_b[ell][j - 1])),
                  m(n.delta(ell, j)), m(n.num(tr.new_b[ell][j - 1]))]
                 for j in range(1, len(delta) + 1)]
        headers = ["p", "value", m(n.d("L", "p")), m(n.times(n.delta(ell, "j"), n.act(ell - 1, "k", tr.depth))),
                   m(new_p)]
        blocks.append(Table(_layer_title(ell, tr.depth), headers, rows, formulas=(3,)))
    return blocks


def _chain(tr: Trace, weight: tuple[int, int, int], n: Notation) -> list:
    m, depth = n.math, tr.depth
    ell, j, k = weight
    w_sym, z_sym, a_sym = m(n.w(ell, j, k)), m(n.z(ell, j)), m(n.act(ell, j, depth))
    if ell == depth:
        path = f"through {z_sym} and {a_sym}"
    else:
        path = f"through {z_sym} and {a_sym}, then through every neuron {m('i')} of layer {ell + 1} that {a_sym} feeds"
    return [
        Heading(f"Chain rule for {w_sym}"),
        Paragraph(f"From {w_sym} to the loss {path}:"),
        *chain_rule(tr, weight, n).blocks,
    ]


def build_report(tr: Trace, weight: tuple[int, int, int], n: Notation) -> list:
    """The whole trace as blocks (headings, prose, tables, equations), in the order of a paper solution:
    conventions, forward pass and loss, backward pass (deltas), gradients and updates, the chain rule."""
    return _overview(tr, n) + _forward(tr, n) + _backward(tr, n) + _update(tr, n) + _chain(tr, weight, n)


# --------------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------------


def render_text(tr: Trace, weight: tuple[int, int, int], console: Console, digits: int = 6) -> None:
    """Print the trace on a rich ``console``: rules for headings, tables, equations one step a line."""
    for block in build_report(tr, weight, Notation("text", digits)):
        if isinstance(block, Heading):
            console.print()
            if block.level == 1:
                console.rule(Text(block.text, style="bold"))
            else:
                console.print(Text(block.text, style="bold underline"))
        elif isinstance(block, Paragraph):
            console.print(Text(block.text))
        elif isinstance(block, Table):
            console.print(Text(block.title, style="italic"))
            table = RichTable(box=box.SIMPLE_HEAD, padding=(0, 1))
            for i, header in enumerate(block.headers):
                formula = i in block.formulas
                table.add_column(Text(header), justify="left" if formula else "right", no_wrap=not formula)
            for row in block.rows:
                table.add_row(*(Text(cell) for cell in row))
            console.print(table)
        else:
            indent = " " * len(block.lhs)
            for i, step in enumerate(block.steps):
                step = " ".join(step) if isinstance(step, tuple) else step
                console.print(Text(f"{block.lhs if i == 0 else indent} = {step}"), soft_wrap=True)
            console.print()


def _markdown(blocks: list) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Table):
            lines = [f"**{block.title}**", "", "| " + " | ".join(block.headers) + " |",
                     "|" + "|".join("---" for _ in block.headers) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        else:
            out.append("$$\n" + _aligned(block, "aligned") + "\n$$")
    return "\n\n".join(out) + "\n"


def _aligned(block: Equations, environment: str) -> str:
    lines = []
    for i, step in enumerate(block.steps):
        first, *rest = step if isinstance(step, tuple) else (step,)
        lines += [f"{block.lhs if i == 0 else ''} &= {first}"] + [rf"&\qquad {piece}" for piece in rest]
    return f"\\begin{{{environment}}}\n" + " \\\\\n".join(lines) + f"\n\\end{{{environment}}}"


def _latex(blocks: list) -> str:
    out = ["% fastnn backprop trace; needs \\usepackage{amsmath}"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(("\\section*{" if block.level == 1 else "\\subsection*{") + block.text + "}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Table):
            columns = "l" * len(block.headers)
            body = [" & ".join(block.headers) + " \\\\ \\hline"] + [" & ".join(row) + " \\\\" for row in block.rows]
            out.append(f"\\begin{{center}}\n\\textit{{{block.title}}}\\\\[2pt]\n\\begin{{tabular}}{{{columns}}}\n"
                       + "\n".join(body) + "\n\\end{tabular}\n\\end{center}")
        else:
            out.append(_aligned(block, "align*"))
    return "\n\n".join(out) + "\n"


def render_markdown(tr: Trace, weight: tuple[int, int, int], digits: int = 6) -> str:
    """The trace as Markdown, mathematics in ``$...$`` and ``$$...$$`` (GitHub, pandoc, Jupyter)."""
    return _markdown(build_report(tr, weight, Notation("markdown", digits)))


def render_latex(tr: Trace, weight: tuple[int, int, int], digits: int = 6) -> str:
    """The trace as a LaTeX fragment to ``\\input`` into a report (uses amsmath's ``align*``)."""
    return _latex(build_report(tr, weight, Notation("latex", digits)))
