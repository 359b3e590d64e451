"""What an experiment trains: its settings, the runs (one per distinct config), and the studies that
compare them, arm against arm: the learning-rate sweep, the assignment's three studies and the
optional ones (:data:`OPTIONAL_STUDIES`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastnn.config import ADDED_LATER, NORMS, TrainConfig

RUN_FORMAT = "fastnn-experiment-run-1"
# The numbers of RunResult.summary() that studies aggregate over seeds, in report order.
METRICS = ("test_accuracy", "best_val_accuracy", "final_train_accuracy", "final_train_loss", "seconds")


class ExperimentError(ValueError):
    """The experiment cannot go on as asked; the message says what to change."""


@dataclass(frozen=True)
class ExperimentSettings:
    """How the studies vary the base config.

    adam_lrs, sgd_lrs: the learning rates the sweep tries for each optimizer.
    sweep_epochs: epochs of a sweep run; None means the base's epochs, and then the sweep's best
        runs *are* the optimizer study's runs (same config), so nothing is trained twice.
    l2_study: lambda of the "with L2" run when the base has no L2.
    decay_study: k of the "with schedule" run (``exp``) when the base has no schedule.
    seeds: every final run is repeated with seeds base.seed, base.seed + 1, ..., base.seed + seeds - 1
        (0..seeds-1 for the default seed 0); the sweep uses base.seed only.
    quick: set by :func:`quick`; the report then says it is not for conclusions.
    studies: the optional studies to add, keys of :data:`OPTIONAL_STUDIES`.
    norm_study, smoothing_study, mixup_study, weight_decay_study: the setting of the "with" run of
        those studies (AdamW's weight decay for the AdamW study) when the base has none.
    """

    adam_lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    sgd_lrs: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    sweep_epochs: int | None = None
    l2_study: float = 1e-4
    decay_study: float = 0.05
    seeds: int = 1
    quick: bool = False
    studies: tuple[str, ...] = ()
    norm_study: str = "batch"
    smoothing_study: float = 0.1
    mixup_study: float = 0.2
    weight_decay_study: float = 0.05

    def validate(self) -> None:
        problems = [
            (not self.adam_lrs or any(not 0 < lr < math.inf for lr in self.adam_lrs),
             "--adam-lrs must be positive finite numbers"),
            (not self.sgd_lrs or any(not 0 < lr < math.inf for lr in self.sgd_lrs),
             "--sgd-lrs must be positive finite numbers"),
            (self.sweep_epochs is not None and self.sweep_epochs < 1, "--sweep-epochs must be >= 1"),
            (not self.l2_study > 0, "--l2-study must be > 0 (it is the lambda of the 'with L2' run)"),
            (not self.decay_study > 0, "--decay-study must be > 0 (it is the k of the 'with schedule' run)"),
            (self.seeds < 1, "--seeds must be >= 1"),
            (any(key not in OPTIONAL_STUDIES for key in self.studies),
             f"--study takes {', '.join(OPTIONAL_STUDIES)}, got {', '.join(self.studies)}"),
            (self.norm_study not in NORMS or self.norm_study == "none",
             f"--norm-study must be one of {', '.join(k for k in NORMS if k != 'none')}"),
            (not 0 < self.smoothing_study < 1, "--smoothing-study must be in (0, 1)"),
            (not 0 < self.mixup_study < math.inf, "--mixup-study must be > 0"),
            (not 0 < self.weight_decay_study < math.inf, "--weight-decay-study must be > 0"),
        ]
        for bad, message in problems:
            if bad:
                raise ExperimentError(message)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["adam_lrs"], out["sgd_lrs"], out["studies"] = list(self.adam_lrs), list(self.sgd_lrs), list(self.studies)
        return out


# --quick: the whole pipeline in a few minutes on a CPU. The numbers it gives are not for conclusions.
QUICK_CONFIG = {"epochs": 2, "subset": 5000, "validation": 1000}
QUICK_SETTINGS = {"sweep_epochs": 1, "adam_lrs": (1e-3, 3e-3), "sgd_lrs": (0.01, 0.03)}


def quick(base: TrainConfig, settings: ExperimentSettings, keep: Collection[str] = ()) -> tuple[
    TrainConfig, ExperimentSettings
]:
    """The quick variant of ``(base, settings)``: 2 epochs (sweep 1) on 5,000 training images, 1,000
    validation images and two learning rates per optimizer. Names in ``keep`` (settings the user
    gave explicitly) are left as they are."""
    config_changes = {k: v for k, v in QUICK_CONFIG.items() if k not in keep}
    setting_changes = {k: v for k, v in QUICK_SETTINGS.items() if k not in keep}
    return dataclasses.replace(base, **config_changes), dataclasses.replace(settings, quick=True, **setting_changes)


# Settings added after studies were first recorded (fastnn.config.ADDED_LATER): at the value they had
# before they existed they are left out of a run's key, so that earlier records, which lack them,
# still match and keep their folder names.


KEY_DEVICE = "cpu"
"""Where a run trains does not make it another run (``--device auto`` then ``--device cpu`` resumes):
every key names this device, the one the recorded studies ran on, so their folder names stay."""


def config_key(config: TrainConfig | dict[str, Any]) -> str:
    """The canonical JSON of a whole config but its device: equal keys mean the same run."""
    values = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    values["device"] = KEY_DEVICE
    for name, default in ADDED_LATER.items():
        if values.get(name, default) == default:
            values.pop(name, None)
    return json.dumps(values, sort_keys=True)


def schedule_text(config: TrainConfig) -> str:
    """The schedule and its parameters in words, e.g. ``exp k=0.05`` or ``none (constant)``."""
    text = {
        "none": "none (constant)",
        "exp": f"exp k={config.decay:g}",
        "step": f"step x{config.gamma:g} every {config.step_size}",
        "cosine": f"cosine over {config.epochs} epochs",
    }[config.schedule]
    return text + (f", {config.warmup} warm-up epochs" if config.warmup else "")


def run_id(config: TrainConfig) -> str:
    """A folder name that is readable and unique to the whole config (a hash of it ends the name)."""
    digest = hashlib.sha256(config_key(config).encode()).hexdigest()[:8]
    schedule = f"exp{config.decay:g}" if config.schedule == "exp" else config.schedule
    return f"{config.optimizer}-lr{config.lr:g}-l2{config.l2:g}-{schedule}-e{config.epochs}-s{config.seed}-{digest}"


def run_label(config: TrainConfig, base: TrainConfig) -> str:
    """A short name of a run for progress lines and plots: what sets it apart from the base."""
    parts = [f"{config.optimizer} lr={config.lr:g}"]
    if config.l2:
        parts.append(f"l2={config.l2:g}")
    if config.weight_decay:
        parts.append(f"wd={config.weight_decay:g}")
    for name, text in (("norm", "norm {}"), ("label_smoothing", "smoothing {:g}"), ("mixup", "mixup {:g}")):
        if getattr(config, name) != getattr(base, name):
            parts.append(text.format(getattr(config, name)))
    if (config.schedule, config.decay) != (base.schedule, base.decay):
        parts.append("no schedule" if config.schedule == "none" else schedule_text(config))
    if config.epochs != base.epochs:
        parts.append(f"{config.epochs} ep")
    if config.seed != base.seed:
        parts.append(f"seed {config.seed}")
    return " ".join(parts)


@dataclass(frozen=True)
class Run:
    """One training run: ``run_id`` (its folder, derived from the whole config), a label, the config."""

    run_id: str
    label: str
    config: TrainConfig


@dataclass
class Arm:
    """One side of a comparison, e.g. "SGD lr=0.03": its runs, one per seed."""

    name: str
    run_ids: list[str]


@dataclass
class Study:
    """A comparison: ``key`` (base, optimizer, l2, schedule, sweep), a title, a note on how its
    arms were made from the base, and the arms."""

    key: str
    title: str
    note: str
    arms: list[Arm]


@dataclass
class Plan:
    """Distinct runs (by config) and the studies that reference them."""

    base: TrainConfig
    runs: dict[str, Run] = field(default_factory=dict)
    studies: list[Study] = field(default_factory=list)

    def add(self, config: TrainConfig) -> str:
        """Add a run unless one with the same config is there; return its id either way."""
        config.validate()
        rid = run_id(config)
        self.runs.setdefault(rid, Run(rid, run_label(config, self.base), config))
        return rid

    def arm(self, name: str, config: TrainConfig, seeds: Iterable[int]) -> Arm:
        return Arm(name, [self.add(dataclasses.replace(config, seed=seed)) for seed in seeds])

    def study(self, key: str) -> Study:
        return next(s for s in self.studies if s.key == key)

    def roles(self) -> dict[str, list[str]]:
        """run id -> the "study: arm" roles it plays, in plan order."""
        out: dict[str, list[str]] = {rid: [] for rid in self.runs}
        for study in self.studies:
            for arm in study.arms:
                for rid in dict.fromkeys(arm.run_ids):
                    out[rid].append(f"{study.title}: {arm.name}")
        return out


def _sweep_config(base: TrainConfig, settings: ExperimentSettings, optimizer: str, lr: float) -> TrainConfig:
    epochs = settings.sweep_epochs or base.epochs
    return dataclasses.replace(base, optimizer=optimizer, lr=lr, epochs=epochs)


def add_sweep(plan: Plan, settings: ExperimentSettings) -> Study:
    """The learning-rate sweep: one arm per (optimizer, lr), seed ``plan.base.seed``."""
    base = plan.base
    arms = [
        plan.arm(f"{optimizer} lr={lr:g}", _sweep_config(base, settings, optimizer, lr), [base.seed])
        for optimizer, grid in (("adam", settings.adam_lrs), ("sgd", settings.sgd_lrs))
        for lr in grid
    ]
    epochs = settings.sweep_epochs or base.epochs
    note = (
        f"Each optimizer tried each learning rate for {epochs} epoch(s) with seed {base.seed}; the one with "
        f"the best validation accuracy (highest over the epochs) is used in the optimizer study. "
        f"The test set chooses nothing."
    )
    study = Study("sweep", "Learning-rate sweep", note, arms)
    plan.studies.append(study)
    return study


def add_studies(plan: Plan, settings: ExperimentSettings, chosen_lr: dict[str, float]) -> list[Study]:
    """The base run and the three comparisons, each arm repeated over the seeds."""
    base = plan.base
    seeds = range(base.seed, base.seed + settings.seeds)
    replace = dataclasses.replace

    adam = replace(base, optimizer="adam", lr=chosen_lr["adam"])
    sgd = replace(base, optimizer="sgd", lr=chosen_lr["sgd"])
    momentum = f"momentum {base.momentum:g}" + (", Nesterov" if base.nesterov and base.momentum else "")
    optimizer_note = (
        f"Adam and SGD ({momentum}), each at the learning rate the sweep chose by validation accuracy; "
        f"everything else as in the base."
    )

    if base.l2 == 0:
        with_l2, without_l2 = replace(base, l2=settings.l2_study), base
        l2_note = f"The base has no L2, so 'with L2' uses lambda = {settings.l2_study:g} (--l2-study)."
    else:
        with_l2, without_l2 = base, replace(base, l2=0.0)
        l2_note = f"The base's L2 (lambda = {base.l2:g}) against lambda = 0."
    l2_note += " The L2 term is lambda/2 * sum of squared weights (biases excluded)."

    if base.schedule == "none":
        with_schedule, without_schedule = replace(base, schedule="exp", decay=settings.decay_study), base
        schedule_note = (
            f"The base has no schedule, so 'with' uses lr_t = lr * exp(-k t) with k = {settings.decay_study:g} "
            f"(--decay-study), t the epoch from 0."
        )
    else:
        with_schedule, without_schedule = base, replace(base, schedule="none")
        schedule_note = f"The base's schedule ({schedule_text(base)}) against a constant learning rate."

    studies = [
        Study("base", "Base run", "The base recipe; each study below changes one thing of it.", [
            plan.arm("base", base, seeds)
        ]),
        Study("optimizer", "Adam vs SGD", optimizer_note, [
            plan.arm(f"Adam lr={adam.lr:g}", adam, seeds),
            plan.arm(f"SGD lr={sgd.lr:g}", sgd, seeds),
        ]),
        Study("l2", "With vs without L2", l2_note, [
            plan.arm(f"with L2 (lambda={with_l2.l2:g})", with_l2, seeds),
            plan.arm("without L2", without_l2, seeds),
        ]),
        Study("schedule", "With vs without LR schedule", schedule_note, [
            plan.arm(f"with schedule ({schedule_text(with_schedule)})", with_schedule, seeds),
            plan.arm("without schedule", without_schedule, seeds),
        ]),
    ]
    studies += [OPTIONAL_STUDIES[key](plan, settings, chosen_lr, seeds) for key in settings.studies]
    plan.studies.extend(studies)
    return studies


def _with_against_without(
    plan: Plan, seeds: Iterable[int], key: str, title: str, name: str, setting: str, study_value: Any, off: Any
) -> Study:
    """A study of one setting: the base's value of ``setting`` (or ``study_value`` when the base has it
    ``off``) against ``off``; ``name`` describes the "with" arm, e.g. "mixup alpha={}"."""
    base = plan.base
    value = getattr(base, setting)
    if value == off:
        value = study_value
        note = f"The base has no {title.lower()}, so 'with' uses {setting} = {value} (--{key}-study)."
    else:
        note = f"The base's {setting} = {value} against {off}."
    seeds = list(seeds)
    return Study(key, f"With vs without {title.lower()}", note, [
        plan.arm(f"with {name.format(value)}", dataclasses.replace(base, **{setting: value}), seeds),
        plan.arm(f"without {title.lower()}", dataclasses.replace(base, **{setting: off}), seeds),
    ])


def _norm_study(plan: Plan, settings: ExperimentSettings, chosen_lr: dict[str, float], seeds: Iterable[int]) -> Study:
    return _with_against_without(plan, seeds, "norm", "Normalization", "{} norm", "norm", settings.norm_study, "none")


def _smoothing_study(
    plan: Plan, settings: ExperimentSettings, chosen_lr: dict[str, float], seeds: Iterable[int]
) -> Study:
    return _with_against_without(plan, seeds, "smoothing", "Label smoothing", "smoothing eps={:g}",
                                 "label_smoothing", settings.smoothing_study, 0.0)


def _mixup_study(plan: Plan, settings: ExperimentSettings, chosen_lr: dict[str, float], seeds: Iterable[int]) -> Study:
    return _with_against_without(plan, seeds, "mixup", "Mixup", "mixup alpha={:g}", "mixup", settings.mixup_study, 0.0)


def _adamw_study(plan: Plan, settings: ExperimentSettings, chosen_lr: dict[str, float], seeds: Iterable[int]) -> Study:
    """AdamW's decoupled weight decay against Adam with the L2 term, both at Adam's chosen rate."""
    base, seeds = plan.base, list(seeds)
    decay = base.weight_decay or settings.weight_decay_study
    l2 = base.l2 or settings.l2_study
    adamw = dataclasses.replace(base, optimizer="adamw", lr=chosen_lr["adam"], weight_decay=decay, l2=0.0)
    adam = dataclasses.replace(base, optimizer="adam", lr=chosen_lr["adam"], weight_decay=0.0, l2=l2)
    note = (
        f"Both at the learning rate the sweep chose for Adam ({chosen_lr['adam']:g}): AdamW with decoupled "
        f"weight decay {decay:g} (p <- p - lr * wd * p) against Adam with L2 lambda = {l2:g} in the loss."
    )
    return Study("adamw", "AdamW vs Adam + L2", note, [
        plan.arm(f"AdamW wd={decay:g}", adamw, seeds),
        plan.arm(f"Adam L2 lambda={l2:g}", adam, seeds),
    ])


OPTIONAL_STUDIES = {"norm": _norm_study, "smoothing": _smoothing_study, "mixup": _mixup_study, "adamw": _adamw_study}
"""The studies ``--study`` adds to the assignment's three, by name."""
