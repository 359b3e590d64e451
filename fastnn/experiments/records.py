"""What an experiment measured: a finished run's record (its result.json), the records found in an
output folder, the experiment's result with its per-arm statistics, and the learning rates the sweep
chose on validation accuracy."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastnn.config import TrainConfig
from fastnn.experiments.plan import METRICS, RUN_FORMAT, Arm, ExperimentError, ExperimentSettings, Plan, config_key
from fastnn.train import EpochRecord


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
