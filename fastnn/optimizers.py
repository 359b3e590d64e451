"""Optimizers: update parameters in place from their gradients, with a learning rate given per step.

``step(entries, lr)`` takes ``(name, param, grad)`` triples (``Network.param_grads()``); the name
keys the optimizer's per-parameter state, so one optimizer serves one network. To add an optimizer:
write the class with ``step`` and add one line to ``OPTIMIZERS`` at the bottom.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from fastnn.backend import namespace
from fastnn.fused import fused_adam_step, fused_sgd_step

Array = Any
Entries = Iterable[tuple[str, Array, Array]]


def check_lr(lr: Any) -> float:
    """``lr`` as a float, or a ValueError naming it: a learning rate is a finite number >= 0 (a
    string, nan or a negative rate would otherwise fail deep in the update, or quietly ruin the
    weights). Checked before any state changes, so a refused step can be retried."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"learning rate must be a finite number >= 0, got {lr!r}")
    return float(lr)


def _copy(array: Array) -> Array:
    """A copy of ``array`` that the optimizer may update in place."""
    return namespace(array).asarray(array, copy=True)


class SGD:
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    Without momentum: ``p <- p - lr * g``. With momentum ``mu`` (the form PyTorch uses, so the
    buffer does not depend on the learning rate and schedules act immediately):
    ``v <- mu * v + g``, then ``p <- p - lr * v``, or with Nesterov ``p <- p - lr * (g + mu * v)``.

    With ``fused`` (the default) NumPy runs the same update in place, on all cores
    (:func:`fastnn.fused.fused_sgd_step`); other namespaces, and ``fused=False``, run it as
    written in :meth:`step`.
    """

    def __init__(self, momentum: float = 0.0, nesterov: bool = False, fused: bool = True):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov
        self.velocity: dict[str, Array] = {}
        self.fused = fused
        self._fused_steps: dict[str, Any] = {}

    def step(self, entries: Entries, lr: float) -> None:
        lr = check_lr(lr)
        for name, param, grad in entries:
            if name not in self._fused_steps:
                self._fused_steps[name] = fused_sgd_step(namespace(param)) if self.fused else None
            fused = self._fused_steps[name]
            if fused is not None:
                if self.momentum and name not in self.velocity:  # zero, so that the first step's v is g
                    self.velocity[name] = namespace(param).zeros_like(param)
                fused(param, grad, self.velocity.get(name), lr, self.momentum, self.nesterov)
                continue
            if self.momentum == 0.0:
                param -= lr * grad
                continue
            if name not in self.velocity:
                # A copy, the first step's buffer; ``grad * 1.0`` would make a 0-d NumPy gradient a
                # scalar, which the in-place updates below cannot change.
                self.velocity[name] = namespace(grad).asarray(grad, copy=True)
            else:
                velocity = self.velocity[name]
                velocity *= self.momentum
                velocity += grad
            velocity = self.velocity[name]
            param -= lr * (grad + self.momentum * velocity) if self.nesterov else lr * velocity

    def state_dict(self) -> dict[str, Array]:
        return {f"velocity.{k}": v for k, v in self.velocity.items()}

    def load_state_dict(self, state: dict[str, Array]) -> None:
        """Continue from :meth:`state_dict`'s arrays (already on the parameters' device, copied here)."""
        self.velocity = {
            k.removeprefix("velocity."): _copy(v) for k, v in state.items() if k.startswith("velocity.")
        }

    def __repr__(self) -> str:
        return f"SGD(momentum={self.momentum}, nesterov={self.nesterov})"


class Adam:
    """Adam with bias correction (Kingma & Ba, 2015).

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, ``t <- t + 1``,
    ``p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.

    With ``fused`` (the default) NumPy and CuPy run the same update in place, without full-size
    temporaries (:func:`fastnn.fused.fused_adam_step`); other namespaces, and ``fused=False``,
    run it as written in :meth:`step`.
    """

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, fused: bool = True):
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{label} must be in [0, 1), got {beta}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0
        self.m: dict[str, Array] = {}
        self.v: dict[str, Array] = {}
        self.fused = fused
        self._fused_steps: dict[str, Any] = {}

    def step(self, entries: Entries, lr: float) -> None:
        lr, entries = check_lr(lr), list(entries)
        self.decay_weights(entries, lr)
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        correction1 = 1.0 - b1**self.t
        sqrt_correction2 = math.sqrt(1.0 - b2**self.t)
        # sqrt(v / c2) + eps == (sqrt(v) + eps * sqrt(c2)) / sqrt(c2): the corrections become two scalars
        step_size, eps_hat = lr * sqrt_correction2 / correction1, self.eps * sqrt_correction2
        for name, param, grad in entries:
            if name not in self.m:  # first step: zero moments, and the backend's kernel or None
                xp = namespace(param)
                self.m[name], self.v[name] = xp.zeros_like(param), xp.zeros_like(param)
                self._fused_steps[name] = fused_adam_step(xp) if self.fused else None
            m, v = self.m[name], self.v[name]
            fused = self._fused_steps[name]
            if fused is not None:
                fused(param, grad, m, v, b1, b2, step_size, eps_hat)
                continue
            xp = namespace(param)
            m *= b1
            m += (1.0 - b1) * grad
            v *= b2
            v += (1.0 - b2) * (grad * grad)
            param -= step_size * m / (xp.sqrt(v) + eps_hat)

    def decay_weights(self, entries: list, lr: float) -> None:
        """Adam decays nothing itself (its L2 is in the gradient); AdamW decouples its decay here."""

    def state_dict(self) -> dict[str, Array]:
        state = {f"m.{k}": a for k, a in self.m.items()}
        state.update({f"v.{k}": a for k, a in self.v.items()})
        return state

    def load_state_dict(self, state: dict[str, Array], t: int) -> None:
        """Continue from :meth:`state_dict`'s arrays (already on the parameters' device, copied
        here) after ``t`` steps, the count the bias corrections use."""
        self.t = t
        self.m = {k[2:]: _copy(a) for k, a in state.items() if k.startswith("m.")}
        self.v = {k[2:]: _copy(a) for k, a in state.items() if k.startswith("v.")}
        self._fused_steps = {k: fused_adam_step(namespace(a)) if self.fused else None for k, a in self.m.items()}

    def __repr__(self) -> str:
        return f"Adam(beta1={self.beta1}, beta2={self.beta2}, eps={self.eps})"


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as PyTorch's ``AdamW``.

    First ``p <- p - lr * weight_decay * p`` for weight matrices only (parameters of two or more
    dimensions: biases and normalisation gains are left alone), then Adam's step (:class:`Adam`):
    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, ``t <- t + 1``,
    ``p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``.
    Unlike L2 (:mod:`fastnn.regularizers`), the decay never passes through ``m`` and ``v``, so
    Adam's per-parameter scaling does not weaken it for weights with large gradients.
    """

    def __init__(self, weight_decay: float = 0.01, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 fused: bool = True):
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight decay must be a finite number >= 0, got {weight_decay!r}")
        super().__init__(beta1, beta2, eps, fused)
        self.weight_decay = float(weight_decay)

    def decay_weights(self, entries: list, lr: float) -> None:
        """``p <- p * (1 - lr * weight_decay)`` for weight matrices, before Adam's update."""
        if self.weight_decay:
            for _, param, _ in entries:
                if param.ndim >= 2:
                    param *= 1.0 - lr * self.weight_decay

    def __repr__(self) -> str:
        return f"AdamW(weight_decay={self.weight_decay}, beta1={self.beta1}, beta2={self.beta2}, eps={self.eps})"


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
"""Every optimizer by name."""
