"""The assignment's studies (task 6): planned, run, resumed and collected. No printing, no click.

From one base configuration (the default recipe, or the user's) an experiment trains

1. the base run;
2. Adam against SGD, each at the learning rate that a small sweep found best on the *validation*
   split (the test set chooses nothing);
3. with against without L2 regularization;
4. with against without the learning-rate schedule;

and, where asked (``ExperimentSettings.studies``, keys of :data:`OPTIONAL_STUDIES`), with against
without normalization layers, label smoothing and mixup, and AdamW against Adam with L2;

with every other setting equal, on one prepared split, each final run repeated over ``seeds``
seeds. A run is identified by its whole config: roles that share a config (the base run is also
"Adam" and "without L2") are one run, trained once and referenced by each role.

Each finished run is saved as it ends, ``<out>/runs/<run-id>/result.json`` beside the
``model.npz`` and ``metrics.jsonl`` that :func:`fastnn.train.run_training` writes there, so an
interrupted experiment resumes where it stopped: a run whose saved config equals the planned one
is skipped, and a changed setting trains again.

``fastnn.report`` turns the :class:`ExperimentResult` into report.md, curves.png, report.pdf and
results.json. What this module is not: a hyper-parameter search; the sweep only sets each
optimizer's learning rate so that the comparison of optimizers is fair.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import statistics
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastnn.atomic import write_atomic
from fastnn.config import ADDED_LATER, NORMS, TrainConfig
from fastnn.train import EpochRecord, Listeners, NonFiniteLoss, TrainingListener, run_training

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


@dataclass
class RunRecord:
    """A finished run as saved in its result.json.

    status: "ok", or "diverged" (the training loss became non-finite; ``history`` then holds the
    epochs that finished and ``summary`` is None). summary: RunResult.summary() (test accuracy,
    best validation accuracy, final training accuracy and loss, epochs, seconds). history: one
    EpochRecord dict per epoch.
    """

    run_id: str
    label: str
    config: dict[str, Any]
    status: str
    summary: dict[str, Any] | None
    history: list[dict[str, Any]]
    backend: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"format": RUN_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunRecord:
        """The record saved as ``values`` (a result.json), checked: a part missing or of the wrong
        kind is a ValueError, so that a damaged file counts as an unfinished run."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            record = cls(**{k: v for k, v in values.items() if k in names})
        except TypeError as exc:  # a part missing
            raise ValueError(str(exc)) from exc
        if not isinstance(record.config, dict):
            raise ValueError("its config is not a table of settings")
        TrainConfig.from_saved(record.config)
        summary_ok = record.summary is None if record.status == "diverged" else (
            isinstance(record.summary, dict) and all(_number_or_none(record.summary.get(m, "")) for m in METRICS)
        )
        fields = [f.name for f in dataclasses.fields(EpochRecord)]
        history_ok = isinstance(record.history, list) and all(
            isinstance(row, dict) and all(_number_or_none(row.get(f, "")) for f in fields) for row in record.history
        )
        texts_ok = all(isinstance(t, str) for t in (record.run_id, record.label, record.backend))
        if not (record.status in ("ok", "diverged") and summary_ok and history_ok and texts_ok):
            raise ValueError("a result.json with parts missing or of the wrong kind")
        return record


def _number_or_none(value: Any) -> bool:
    """JSON's number, or null (a NaN was written as null)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as None, so that the JSON written is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def finished_runs(out_dir: str | Path) -> dict[str, RunRecord]:
    """Config key -> record of every run saved under ``out_dir/runs``; unreadable files count as
    unfinished (the run is trained again)."""
    found = {}
    for path in sorted(Path(out_dir, "runs").glob("*/result.json")):
        try:
            values = json.loads(path.read_text())
            if values.get("format") != RUN_FORMAT:
                continue
            record = RunRecord.from_dict(values)
        except (OSError, ValueError, TypeError):
            continue
        found[config_key(record.config)] = record
    return found


class Reporter:
    """What :func:`run_experiments` tells its caller as it goes; this one says nothing (the CLI prints).

    ``training(run)`` returns the per-run display: a :class:`fastnn.train.TrainingListener` that is a
    context manager (the CLI's TrainingDisplay).
    """

    def phase(self, title: str, to_train: int, to_skip: int, shared: int) -> None:
        """A phase (the sweep, the studies) begins: ``to_train`` runs to train, ``to_skip`` saved by
        an earlier invocation, ``shared`` already run in an earlier phase of this one."""

    def skipped(self, run: Run, record: RunRecord) -> None:
        """``run`` was finished by an earlier invocation; its saved record is used."""

    def started(self, run: Run, number: int, total: int) -> None:
        """Run ``number`` of the ``total`` new runs of this phase starts."""

    def finished(self, run: Run, record: RunRecord, number: int, total: int) -> None:
        """Run ``number`` of ``total`` ended (well, or diverged: see ``record.status``)."""

    def training(self, run: Run) -> Any:
        return _Silent()


class _Silent(TrainingListener):
    """A training display that shows nothing."""

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class _History(TrainingListener):
    """The rows of the epochs a run finished: a diverged run's record keeps them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def epoch_finished(self, record: EpochRecord, network: Any) -> None:
        self.rows.append(record.to_dict())


def train_run(run: Run, split: Any, backend: Any, out_dir: str | Path, display: Any) -> RunRecord:
    """Train one run into ``out_dir/runs/<run-id>/`` and save its result.json, even if it diverged."""
    folder = Path(out_dir, "runs", run.run_id)
    history = _History()
    common = {"run_id": run.run_id, "label": run.label, "config": run.config.to_dict(), "backend": backend.name}
    # A learning rate too large (in the sweep) overflows before the loss turns non-finite; that is
    # recorded as "diverged", which NumPy's overflow warnings would only repeat, less clearly.
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            result = run_training(run.config, split, backend, str(folder), listener=Listeners(history, display))
    except NonFiniteLoss as exc:
        # Divergence is a result too (a too-large learning rate in the sweep): record it, so that a
        # resumed experiment does not train it again and the report can show it.
        record = RunRecord(**common, status="diverged", summary=None, history=history.rows, error=str(exc))
    else:
        summary = result.summary()
        record = RunRecord(**common, status="ok", summary=summary, history=[r.to_dict() for r in result.history])
    write_atomic(folder / "result.json", json.dumps(json_ready(record.to_dict()), indent=1).encode())
    return record


def stats(values: list[float]) -> dict[str, float] | None:
    """n, mean, sample standard deviation (0 for one value), min and max; None for no values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


@dataclass
class ExperimentResult:
    """Everything an experiment measured: the plan, a record per run, the chosen learning rates."""

    plan: Plan
    settings: ExperimentSettings
    records: dict[str, RunRecord]
    chosen_lr: dict[str, float]
    data: dict[str, int]  # image counts (train, validation, test), input features, classes
    backend: str

    @property
    def base(self) -> TrainConfig:
        return self.plan.base

    def arm_records(self, arm: Arm) -> list[RunRecord]:
        return [self.records[rid] for rid in arm.run_ids]

    def arm_stats(self, arm: Arm) -> dict[str, Any]:
        """Per metric of METRICS, :func:`stats` over the arm's finished runs; plus ``diverged``, how
        many of its runs diverged."""
        records = self.arm_records(arm)
        out: dict[str, Any] = {m: stats([r.summary[m] for r in records if r.ok]) for m in METRICS}
        out["diverged"] = sum(not r.ok for r in records)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every number, as JSON-ready values (results.json)."""
        roles = self.plan.roles()
        studies = [
            {
                "key": s.key,
                "title": s.title,
                "note": s.note,
                "arms": [{"name": a.name, "run_ids": a.run_ids, "stats": self.arm_stats(a)} for a in s.arms],
            }
            for s in self.plan.studies
        ]
        runs = {rid: {**self.records[rid].to_dict(), "roles": roles[rid]} for rid in self.plan.runs}
        return json_ready({
            "quick": self.settings.quick,
            "base_config": self.base.to_dict(),
            "settings": self.settings.to_dict(),
            "data": self.data,
            "backend": self.backend,
            "chosen_lr": self.chosen_lr,
            "studies": studies,
            "runs": runs,
        })


def choose_lr(result: ExperimentResult) -> dict[str, float]:
    """Per optimizer, the swept learning rate whose run reached the best validation accuracy
    (ties: the first in the grid). Diverged runs are out; the test accuracy is never looked at."""
    chosen = {}
    for optimizer in ("adam", "sgd"):
        best = None
        for arm in result.plan.study("sweep").arms:
            config = result.plan.runs[arm.run_ids[0]].config
            record = result.records[arm.run_ids[0]]
            if config.optimizer != optimizer or not record.ok:
                continue
            val = record.summary["best_val_accuracy"]
            if best is None or val > best[0]:
                best = (val, config.lr)
        if best is None:
            raise ExperimentError(
                f"every {optimizer} learning rate of the sweep diverged; pass smaller ones with --{optimizer}-lrs"
            )
        chosen[optimizer] = best[1]
    return chosen


def _train_all(
    result: ExperimentResult,
    run_ids: Iterable[str],
    title: str,
    split: Any,
    backend: Any,
    out_dir: Path,
    done: dict[str, RunRecord],
    reporter: Reporter,
    workers: int = 1,
) -> None:
    """Train the runs of ``run_ids`` not yet in ``result.records``; runs saved earlier are skipped."""
    wanted = list(dict.fromkeys(run_ids))
    pending = [result.plan.runs[rid] for rid in wanted if rid not in result.records]
    saved = [run for run in pending if config_key(run.config) in done]
    to_train = [run for run in pending if config_key(run.config) not in done]
    reporter.phase(title, len(to_train), len(saved), len(wanted) - len(pending))
    for run in saved:
        result.records[run.run_id] = done[config_key(run.config)]
        reporter.skipped(run, result.records[run.run_id])
    if workers > 1 and len(to_train) > 1:
        _train_in_processes(result, to_train, split, out_dir, reporter, workers)
        return
    for number, run in enumerate(to_train, 1):
        reporter.started(run, number, len(to_train))
        with reporter.training(run) as display:
            record = train_run(run, split, backend, out_dir, display)
        result.records[run.run_id] = record
        reporter.finished(run, record, number, len(to_train))


BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def divided_blas_threads(workers: int) -> contextlib.AbstractContextManager[None]:
    """While processes are started, the environment gives each its share of the CPU's BLAS threads:
    a spawned interpreter reads these before it loads NumPy, so K processes do not fight over cores."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return environment({name: threads for name in BLAS_THREADS})


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, for the processes started inside; restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_worker_state: dict[str, Any] = {}


def _start_worker(split: Any, device: str) -> None:
    from fastnn.backend import get_backend

    _worker_state.update(split=split, backend=get_backend(device))


def _train_in_worker(run: Run, out_dir: Path) -> RunRecord:
    return train_run(run, _worker_state["split"], _worker_state["backend"], out_dir, _Silent())


def _train_in_processes(
    result: ExperimentResult, to_train: list[Run], split: Any, out_dir: Path, reporter: Reporter, workers: int
) -> None:
    """Train ``to_train`` in ``workers`` processes. Each run depends only on its config (seeds
    included), so the records are those of a sequential run; they are kept in the plan's order."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    records = {}
    with divided_blas_threads(workers):
        pool = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(split, to_train[0].config.device)
        )
        futures = {pool.submit(_train_in_worker, run, out_dir): run for run in to_train}
    with pool:
        for number, future in enumerate(concurrent.futures.as_completed(futures), 1):
            run = futures[future]
            records[run.run_id] = future.result()
            reporter.finished(run, records[run.run_id], number, len(to_train))
    for run in to_train:
        result.records[run.run_id] = records[run.run_id]


def run_experiments(
    base: TrainConfig,
    settings: ExperimentSettings,
    split: Any,
    backend: Any,
    out_dir: str | Path,
    reporter: Reporter | None = None,
    workers: int = 1,
) -> ExperimentResult:
    """Run the sweep, then the studies, on ``split`` (prepared once, with ``base``'s validation,
    split seed and subset, and shared by every run); resume from runs saved in ``out_dir``.

    Raises ExperimentError when the settings cannot work (no validation images to choose the
    learning rates by, or every swept learning rate of an optimizer diverged).
    """
    base.validate()
    settings.validate()
    if len(split.y_val) == 0:
        raise ExperimentError("the learning-rate sweep chooses by validation accuracy: --validation must be > 0")
    reporter = reporter or Reporter()
    out = Path(out_dir)
    done = finished_runs(out)
    data = {
        "train": len(split.y_train),
        "validation": len(split.y_val),
        "test": len(split.y_test),
        "features": int(split.x_train.shape[1]),
        "classes": len(split.class_names),
    }
    result = ExperimentResult(Plan(base), settings, {}, {}, data, backend.name)

    sweep = add_sweep(result.plan, settings)
    _train_all(result, (rid for arm in sweep.arms for rid in arm.run_ids), "learning-rate sweep",
               split, backend, out, done, reporter, workers)
    result.chosen_lr = choose_lr(result)
    studies = add_studies(result.plan, settings, result.chosen_lr)
    _train_all(result, (rid for s in studies for arm in s.arms for rid in arm.run_ids), "studies",
               split, backend, out, done, reporter, workers)
    return result
