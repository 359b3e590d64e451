"""Running an experiment: each run trained and recorded as it ends, in this process or in several,
the runs saved earlier skipped, and what happens told to a :class:`Reporter`."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fastnn.atomic import write_atomic
from fastnn.config import TrainConfig
from fastnn.experiments.plan import ExperimentError, ExperimentSettings, Plan, Run, add_studies, add_sweep, config_key
from fastnn.experiments.records import ExperimentResult, RunRecord, choose_lr, finished_runs, json_ready
from fastnn.train import EpochRecord, Listeners, NonFiniteLoss, TrainingListener, run_training


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
