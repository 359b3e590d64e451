"""``TrainConfig``: every setting of a training run, checked where it enters.

The command line (``fastnn_cli.options``), ``--config`` TOML files, ``fastnn tune``'s spaces and the
experiments all make one; :class:`fastnn.train.Trainer` runs it. ``validate`` names the first bad
value; ``make_network``, ``make_optimizer``, ``make_schedule`` and ``make_mixup`` build what the
settings describe, from the library's registries. ``from_saved`` reads the config a checkpoint or a
result.json recorded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from fastnn.augment import Mixup
from fastnn.layers import ACTIVATIONS
from fastnn.network import Network, bottleneck_spec, mlp_spec
from fastnn.optimizers import OPTIMIZERS
from fastnn.schedules import SCHEDULES, Schedule, make_schedule

NORMS = {"none": None, "batch": "batchnorm", "layer": "layernorm"}
"""``--norm``'s choices and the layer (a key of ``fastnn.layers.LAYERS``) each puts in the network."""


@dataclass(frozen=True)
class Limit:
    """The range a numeric setting lies in, written once: :meth:`TrainConfig.validate` checks it and the
    command line's option types (``fastnn_cli.options``) are made from it, so that both say the same.
    ``high`` None is no upper bound; an open end excludes the bound itself; a float must also be
    finite; ``optional`` settings may also be None."""

    label: str
    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    optional: bool = False

    def admits(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        low_ok = value > self.low if self.low_open else value >= self.low
        return low_ok and (self.high is None or (value < self.high if self.high_open else value <= self.high))

    def describe(self) -> str:
        if self.high is None:
            kind = "a whole number" if self.whole else "a finite number"
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        low = f"{'(' if self.low_open else '['}{self.low:g}"
        high = f"{self.high:g}{')' if self.high_open else ']'}"
        return f"{'a whole number' if self.whole else 'a number'} in {low}, {high}"


LIMITS = {
    "lr": Limit("learning rate", 0, low_open=True),
    "momentum": Limit("momentum", 0, 1, high_open=True),
    "l2": Limit("l2", 0),
    "decay": Limit("decay", 0),
    "step_size": Limit("step size", 1, whole=True),
    "gamma": Limit("gamma", 0, 1, low_open=True),
    "warmup": Limit("warm-up", 0, whole=True),
    "epochs": Limit("epochs", 1, whole=True),
    "batch_size": Limit("batch size", 1, whole=True),
    "dropout": Limit("dropout", 0, 1, high_open=True),
    "shift": Limit("shift", 0, 16, whole=True),
    "seed": Limit("seed", 0, whole=True),
    "split_seed": Limit("split seed", 0, whole=True),
    "validation": Limit("validation size", 0, whole=True),
    "subset": Limit("subset", 1, whole=True, optional=True),  # None: every image
    "blocks": Limit("blocks", 0, whole=True),
    "expansion": Limit("expansion", 1, whole=True),
    "weight_decay": Limit("weight decay", 0),
    "label_smoothing": Limit("label smoothing", 0, 1, high_open=True),
    "mixup": Limit("mixup alpha", 0),
}
"""The range of each numeric setting of :class:`TrainConfig`."""


ADDED_LATER = {
    "tf32": False,
    "norm": "none",
    "blocks": 0,
    "expansion": 4,
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "mixup": 0.0,
    "tta": False,
}
"""Settings added after the first runs were recorded, each with the value it had before it existed:
what a saved config that lacks it ran with (:meth:`TrainConfig.from_saved`)."""


@dataclass
class TrainConfig:
    """Every setting of a training run. ``validate()`` names the first bad value."""

    hidden: tuple[int, ...] = (1024, 512)
    activation: str = "relu"
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    l2: float = 0.0
    schedule: str = "exp"
    decay: float = 0.05
    step_size: int = 10
    gamma: float = 0.1
    warmup: int = 0
    epochs: int = 40
    batch_size: int = 256
    dropout: float = 0.0
    augment: bool = True
    shift: int = 2
    seed: int = 0
    validation: int = 5000
    split_seed: int = 0
    subset: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    tf32: bool = False
    norm: str = "batch"  # the default recipe: BatchNorm and label smoothing 0.1 (63.7% test, not 60.6%)
    blocks: int = 0
    expansion: int = 4
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    mixup: float = 0.0
    tta: bool = False

    def validate(self) -> None:
        """Raise a ValueError naming the first bad setting: names against the registries, numbers
        against :data:`LIMITS`, then the settings that only go together."""
        names = [
            (self.activation not in ACTIVATIONS,
             f"unknown activation {self.activation!r}; choose {_names(ACTIVATIONS)}"),
            (self.optimizer not in OPTIMIZERS, f"unknown optimizer {self.optimizer!r}; choose {_names(OPTIMIZERS)}"),
            (self.schedule not in SCHEDULES, f"unknown schedule {self.schedule!r}; choose {_names(SCHEDULES)}"),
            (self.norm not in NORMS, f"unknown norm {self.norm!r}; choose {_names(NORMS)}"),
            (self.dtype not in ("float32", "float64"), f"dtype must be float32 or float64, got {self.dtype!r}"),
        ]  # fmt: skip
        for bad, message in names:
            if bad:
                raise ValueError(message)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {list(self.hidden)}")
        for name, limit in LIMITS.items():
            value = getattr(self, name)
            if not limit.admits(value):
                raise ValueError(f"{limit.label} must be {limit.describe()}, got {value!r}")
        together = [
            (self.blocks > 0 and len(self.hidden) != 1, f"residual blocks (--blocks) have one width: give one "
             f"hidden size (e.g. --hidden 512), got {list(self.hidden)}"),
            (self.blocks > 0 and self.dropout > 0, "dropout acts in the plain MLP only; use --dropout 0 with --blocks"),
            (self.weight_decay > 0 and self.optimizer != "adamw", f"weight decay is AdamW's (--optimizer adamw); "
             f"{self.optimizer} takes L2 (--l2)"),
        ]  # fmt: skip
        for bad, message in together:
            if bad:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> TrainConfig:
        """The config a checkpoint or a result.json recorded: as :meth:`from_dict`, but a setting
        added after the file was written takes the value it had before it existed
        (:data:`ADDED_LATER`), not today's default (BatchNorm and label smoothing are on by default
        now; a run recorded before they existed ran without them)."""
        return cls.from_dict({**{k: v for k, v in ADDED_LATER.items() if k not in values}, **values})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config saved as ``values`` (JSON of a checkpoint or a result.json), checked: a value of
        the wrong kind (``"5000"``, ``1.5`` for a count) or out of range is a ValueError naming it."""
        defaults = cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        for name, value in values.items():
            if not _same_kind(value, getattr(defaults, name)):
                raise ValueError(f"setting {name} = {value!r} is not a value of its kind")
        values = dict(values)
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        config = cls(**values)
        config.validate()
        return config

    def make_network(self, backend: Any, n_inputs: int, n_classes: int) -> Network:
        """The plain ``Network(sizes, activation)`` (the original recipe, same weights), or a network
        from layer specs when ``norm`` or ``blocks`` ask for layers it does not have."""
        sizes, norm = [n_inputs, *self.hidden, n_classes], NORMS[self.norm]
        common = {"backend": backend, "l2": self.l2, "seed": self.seed, "dtype": self.dtype,
                  "label_smoothing": self.label_smoothing}
        if self.blocks:
            spec = bottleneck_spec(n_inputs, self.hidden[0], self.blocks, n_classes, expansion=self.expansion,
                                   norm=norm, activation=self.activation)
        elif norm:
            spec = mlp_spec(sizes, self.activation, norm=norm, dropout=self.dropout)
        else:
            return Network(sizes, self.activation, dropout=self.dropout, **common)
        return Network(spec=spec, **common)

    def describe(self, n_inputs: int = 3072, n_classes: int = 10) -> str:
        """The network in a few words, e.g. ``3072-1024-512-10 (relu)`` or
        ``3072-256-10, 4 residual blocks x4 (gelu, layer norm)``."""
        sizes = "-".join(map(str, (n_inputs, *self.hidden, n_classes)))
        plural = "s" if self.blocks != 1 else ""
        blocks = f", {self.blocks} residual block{plural} x{self.expansion}" if self.blocks else ""
        norm = f", {self.norm} norm" if self.norm != "none" else ""
        return f"{sizes}{blocks} ({self.activation}{norm})" if self.hidden else sizes

    def make_optimizer(self) -> Any:
        settings = {
            "sgd": {"momentum": self.momentum, "nesterov": self.nesterov and self.momentum > 0},
            "adamw": {"weight_decay": self.weight_decay},
        }
        return OPTIMIZERS[self.optimizer](**settings.get(self.optimizer, {}))

    def make_mixup(self) -> Mixup | None:
        """Mixup of the training batches, or None; its host generator is seeded from ``seed``."""
        return Mixup(self.mixup, seed=self.seed) if self.mixup else None

    def make_schedule(self) -> Schedule:
        return make_schedule(
            self.schedule,
            self.lr,
            decay=self.decay,
            epochs=self.epochs,
            step_size=self.step_size,
            gamma=self.gamma,
            warmup=self.warmup,
        )


def _names(registry: dict[str, Any]) -> str:
    return ", ".join(registry)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a saved setting is of the kind of its default: a whole number for a count (``subset``
    may also be None), any number for a float, a list of whole numbers for ``hidden``."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return whole or isinstance(value, float)
    if isinstance(default, int) or default is None:
        return whole or (default is None and value is None)
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, type(default))
