"""Losses: each has ``forward(outputs, targets) -> scalar`` and ``backward() -> dL/d(outputs)``.

The softmax and the cross-entropy are fused into one object, because the gradient of the pair with
respect to the logits is simply ``(softmax - onehot) / batch`` and because computing them together
(log-sum-exp with the maximum subtracted) keeps logits of +-1e4 finite.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from fastnn.backend import namespace

Array = Any


def softmax(logits: Array) -> Array:
    """Row-wise softmax of ``logits`` (batch, classes); the row maximum is subtracted first."""
    xp = namespace(logits)
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    e = xp.exp(shifted)
    return e / xp.sum(e, axis=1, keepdims=True)


def one_hot(labels: Array, n_classes: int, dtype: Any) -> Array:
    """``labels`` (batch,) of integers in [0, n_classes) -> (batch, n_classes) of 0 and 1."""
    xp = namespace(labels)
    classes = xp.arange(n_classes, device=device(labels))
    return xp.astype(labels[:, None] == classes[None, :], dtype)


class SoftmaxCrossEntropy:
    """``L = -mean_i sum_c t_ic log softmax(z_i)_c`` for logits ``z`` (batch, classes).

    Targets are integer labels (batch,), as one-hot rows ``t``, or rows of class probabilities
    (batch, classes), e.g. from mixup. With ``label_smoothing`` ``eps`` the rows become
    ``(1 - eps) * t + eps / classes``. ``backward()`` returns ``(softmax(z) - t) / batch``.
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: Array, targets: Array) -> Array:
        xp = namespace(logits)
        n_classes = logits.shape[1]
        self._target = targets if targets.ndim == 2 else one_hot(targets, n_classes, logits.dtype)
        if self.label_smoothing:
            self._target = (1.0 - self.label_smoothing) * self._target + self.label_smoothing / n_classes
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        exp = xp.exp(shifted)
        sum_exp = xp.sum(exp, axis=1, keepdims=True)
        self._probs = exp / sum_exp
        log_probs = shifted - xp.log(sum_exp)
        return -xp.sum(log_probs * self._target) / logits.shape[0]

    def backward(self) -> Array:
        return (self._probs - self._target) / self._probs.shape[0]


class SquaredError:
    """``L = 1/2 * sum_i (y_i - t_i)^2`` summed over the batch too; ``dL/dy = y - t``.

    The cost of the assignment's hand-computed example (a batch of one); training does not use it.
    """

    def forward(self, outputs: Array, targets: Array) -> Array:
        xp = namespace(outputs)
        self._diff = outputs - targets
        return 0.5 * xp.sum(self._diff * self._diff)

    def backward(self) -> Array:
        return self._diff
