"""L2 regularization of weight matrices (biases are left alone).

Adds ``lam / 2 * sum ||W||^2`` to the reported loss and ``lam * W`` to each weight's gradient, so
that a plain gradient step shrinks every weight by the factor ``(1 - lr * lam)``.
"""

from __future__ import annotations

from typing import Any

from fastnn.backend import namespace

Array = Any


class L2:
    """L2 penalty of strength ``lam`` (>= 0) on weight matrices."""

    def __init__(self, lam: float):
        if lam < 0:
            raise ValueError(f"L2 strength must be >= 0, got {lam}")
        self.lam = float(lam)

    def penalty(self, weights: list[Array]) -> Array | float:
        """``lam / 2 * sum_W sum(W**2)``: a 0-d device array (or 0.0 when lam is 0)."""
        if self.lam == 0.0 or not weights:
            return 0.0
        xp = namespace(weights[0])
        return 0.5 * self.lam * sum(xp.sum(w * w) for w in weights)

    def gradient(self, weight: Array) -> Array:
        """d(penalty)/dW = ``lam * W``."""
        return self.lam * weight

    def __repr__(self) -> str:
        return f"L2(lam={self.lam})"
