"""Learning-rate schedules: a schedule maps an epoch index ``t`` (from 0) to a learning rate.

They are plain Python (a float per epoch), so they never touch the device. To add a schedule:
write the class, add it to ``SCHEDULES`` and say in :func:`make_schedule` which settings it takes.
"""

from __future__ import annotations

import math


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Schedule:
    """Base: ``schedule(t) -> lr`` for epoch ``t`` (0-based)."""

    def __init__(self, lr: float):
        if not (_finite(lr) and lr > 0):
            raise ValueError(f"learning rate must be a finite number > 0, got {lr!r}")
        self.lr = float(lr)

    def __call__(self, t: int) -> float:
        raise NotImplementedError


class Constant(Schedule):
    """``eta_t = eta``."""

    def __call__(self, t: int) -> float:
        return self.lr

    def __repr__(self) -> str:
        return f"Constant(lr={self.lr})"


class Exponential(Schedule):
    """The assignment's decay: ``eta_t = eta * exp(-k * t)``."""

    def __init__(self, lr: float, k: float):
        super().__init__(lr)
        if not (_finite(k) and k >= 0):
            raise ValueError(f"decay rate k must be a finite number >= 0, got {k!r}")
        self.k = float(k)

    def __call__(self, t: int) -> float:
        return self.lr * math.exp(-self.k * t)

    def __repr__(self) -> str:
        return f"Exponential(lr={self.lr}, k={self.k})"


class Step(Schedule):
    """``eta_t = eta * gamma ** floor(t / step_size)``."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        super().__init__(lr)
        if not (_whole(step_size) and step_size >= 1):
            raise ValueError(f"step size must be a whole number of epochs >= 1, got {step_size!r}")
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, t: int) -> float:
        return self.lr * self.gamma ** (t // self.step_size)

    def __repr__(self) -> str:
        return f"Step(lr={self.lr}, step_size={self.step_size}, gamma={self.gamma})"


class Cosine(Schedule):
    """``eta_t = min_lr + (eta - min_lr) * (1 + cos(pi * t / epochs)) / 2``, flat at ``min_lr`` after."""

    def __init__(self, lr: float, epochs: int, min_lr: float = 0.0):
        super().__init__(lr)
        if not (_whole(epochs) and epochs >= 1):
            raise ValueError(f"cosine schedule needs a whole number of epochs >= 1, got {epochs!r}")
        if not (_finite(min_lr) and 0 <= min_lr <= lr):
            raise ValueError(f"min_lr must be a number in [0, lr={lr}], got {min_lr!r}")
        self.epochs, self.min_lr = int(epochs), float(min_lr)

    def __call__(self, t: int) -> float:
        progress = min(t, self.epochs) / self.epochs
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __repr__(self) -> str:
        return f"Cosine(lr={self.lr}, epochs={self.epochs}, min_lr={self.min_lr})"


class Warmup(Schedule):
    """Linear warm-up over ``epochs`` epochs, then ``schedule`` shifted to start at epoch 0.

    ``eta_t = schedule(0) * (t + 1) / (epochs + 1)`` for ``t < epochs``, else ``schedule(t - epochs)``.
    """

    def __init__(self, schedule: Schedule, epochs: int):
        self.lr = schedule.lr  # checked when ``schedule`` was made
        if epochs < 0:
            raise ValueError(f"warm-up epochs must be >= 0, got {epochs}")
        self.schedule, self.epochs = schedule, int(epochs)

    def __call__(self, t: int) -> float:
        if t < self.epochs:
            return self.schedule(0) * (t + 1) / (self.epochs + 1)
        return self.schedule(t - self.epochs)

    def __repr__(self) -> str:
        return f"Warmup({self.schedule!r}, epochs={self.epochs})"


def make_schedule(
    name: str,
    lr: float,
    *,
    decay: float = 0.0,
    epochs: int = 1,
    step_size: int = 10,
    gamma: float = 0.1,
    warmup: int = 0,
) -> Schedule:
    """Build a schedule by name (a key of ``SCHEDULES``), wrapped in a warm-up of ``warmup`` epochs."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    settings = {
        Constant: (),
        Exponential: (decay,),
        Step: (step_size, gamma),
        Cosine: (max(epochs - warmup, 1),),
    }
    schedule_cls = SCHEDULES[name]
    schedule = schedule_cls(lr, *settings[schedule_cls])
    return Warmup(schedule, warmup) if warmup else schedule


SCHEDULES: dict[str, type[Schedule]] = {"none": Constant, "exp": Exponential, "step": Step, "cosine": Cosine}
"""Every schedule by the name the command line and configs use (``none`` is a constant rate)."""
