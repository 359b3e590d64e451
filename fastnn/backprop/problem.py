"""A task-1 problem from a file: JSON or TOML, checked key by key, with limits that keep a trace
something a person can follow; the example file for the assignment, and a weight index ``l,j,k``."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from fastnn.backprop.step import LayerParameters, Problem, ProblemError

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
        layers.append(LayerParameters(weights, biases))
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
