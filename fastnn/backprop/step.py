"""The math of the assignment's task 1, read first: one forward pass, the loss, one backward pass
and the update, on a small fully-connected sigmoid network, for one input ``x`` and target ``t``.

``Problem`` is what a step needs (``fastnn.backprop.problem`` reads it from a file); ``trace``
computes every number of the step into a ``Trace``. On the host, in float64, with NumPy, one example
and no batches, so that each number can be held against a hand computation. Index convention in
``fastnn/backprop/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ProblemError(ValueError):
    """A problem file or a weight index that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class LayerParameters:
    """One fully-connected sigmoid layer ``l``: ``weights`` (n_l, n_{l-1}) and ``biases`` (n_l,)."""

    weights: np.ndarray
    biases: np.ndarray


@dataclass(frozen=True)
class Problem:
    """Everything one step needs: ``x`` (n_0,), ``target`` (n_L,), ``learning_rate``, ``layers[l-1]``."""

    x: np.ndarray
    target: np.ndarray
    learning_rate: float
    layers: tuple[LayerParameters, ...]

    @property
    def sizes(self) -> list[int]:
        """Neurons per layer, input first: ``[n_0, n_1, ..., n_L]``."""
        return [len(self.x)] + [len(layer.biases) for layer in self.layers]


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
