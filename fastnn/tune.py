"""Hyperparameter search on Optuna: a space read from TOML, one trial = one training run scored on
the validation split, pruned on its per-epoch validation accuracy, many processes sharing one study
through Optuna's storage (an embedded SQLite file by default, any database URL Optuna takes).

The test set chooses nothing: only the best trial is trained again and measured on it, once. The
study's report (best.toml, report.md, figures) is :mod:`fastnn.tune_report`'s.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastnn.config import TrainConfig
from fastnn.train import Trainer, TrainingListener, run_training

# Settings that shape the data every trial must share, or that choose the machine: fixed only.
NOT_TUNABLE = ("validation", "split_seed", "subset", "device", "dtype")
INSTALL_HINT = 'fastnn tune needs Optuna: pip install "fastnn[tune]"'


class TuneError(ValueError):
    """A space or storage problem, told in one line before anything trains."""


@dataclass(frozen=True)
class Distribution:
    """One tunable setting: a float or int range (log-uniform with ``log``) or a list of choices."""

    name: str
    kind: str  # "float", "int" or "choices"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        # Optuna stores choices as plain values; a list of hidden sizes travels as "1024,512".
        picked = trial.suggest_categorical(self.name, [_choice_text(c) for c in self.choices])
        return _choice_value(self.name, picked)


def _choice_text(choice: Any) -> Any:
    return ",".join(str(v) for v in choice) if isinstance(choice, list) else choice


def _choice_value(name: str, picked: Any) -> Any:
    if name == "hidden":
        return tuple(int(v) for v in str(picked).split(",") if v)
    return picked


@dataclass(frozen=True)
class Space:
    """The fixed ``train`` settings and the distributions of the tuned ones."""

    fixed: dict[str, Any]
    tuned: tuple[Distribution, ...]

    def config(self, values: dict[str, Any]) -> TrainConfig:
        merged = {**self.fixed, **values}
        if "hidden" in merged:
            merged["hidden"] = tuple(merged["hidden"])
        return TrainConfig.from_dict(merged)


def _parse_distribution(name: str, spec: Any) -> Distribution:
    where = f"space.{name}"
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise TuneError(f"{where}: give a table such as {{ float = [1e-4, 1e-2], log = true }} or a list of choices")
    kinds = [k for k in ("float", "int", "choices") if k in spec]
    extra = sorted(set(spec) - {"float", "int", "choices", "log"})
    if len(kinds) != 1 or extra:
        raise TuneError(f"{where}: give exactly one of float = [low, high], int = [low, high], choices = [...]")
    kind = kinds[0]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise TuneError(f"{where}: log must be true or false")
    if kind == "choices":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise TuneError(f"{where}: choices must be a non-empty list")
        return Distribution(name, kind, choices=tuple(choices))
    bounds = spec[kind]
    numeric = isinstance(bounds, list) and len(bounds) == 2
    numeric = numeric and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    if not numeric or not all(math.isfinite(b) for b in bounds):
        raise TuneError(f"{where}: {kind} must be [low, high], two finite numbers")
    low, high = bounds
    if kind == "int" and not all(isinstance(b, int) for b in bounds):
        raise TuneError(f"{where}: int bounds must be whole numbers")
    if not low < high:
        raise TuneError(f"{where}: the range [{low}, {high}] is empty or reversed; low must be below high")
    if log and low <= 0:
        raise TuneError(f"{where}: a log range must be above 0, got low = {low}")
    return Distribution(name, kind, float(low) if kind == "float" else low, high, log)


def load_space(path: str | os.PathLike) -> Space:
    """Read a space file: ``[space]`` holds the distributions, every other top-level key (or the
    ``[train]`` table) is a fixed ``fastnn train`` setting, as in a ``--config`` file."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TuneError(f"cannot read {path}: {exc}") from exc
    raw_space = values.pop("space", None)
    fixed = values.pop("train", {}) if isinstance(values.get("train"), dict) else {}
    fixed = {**fixed, **values}
    fixed = {k.replace("-", "_"): v for k, v in fixed.items()}
    if not isinstance(raw_space, dict) or not raw_space:
        raise TuneError(f"{path}: no [space] table of tuned settings")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in [*fixed, *raw_space]:
        if key.replace("-", "_") not in known:
            raise TuneError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(known))}")
    tuned = tuple(_parse_distribution(k.replace("-", "_"), v) for k, v in raw_space.items())
    for dist in tuned:
        if dist.name in NOT_TUNABLE:
            raise TuneError(f"{path}: {dist.name} is shared by all trials; set it as a fixed setting, not in [space]")
    space = Space(fixed, tuned)
    try:  # each fixed value, and each end of each range, makes a valid config
        space.config({}).validate()
        for dist in tuned:
            ends = [_choice_value(dist.name, _choice_text(c)) for c in dist.choices] or [dist.low, dist.high]
            for end in ends:
                space.config({dist.name: end}).validate()
    except (TypeError, ValueError) as exc:
        raise TuneError(f"{path}: {exc}") from exc
    return space


def trial_values(space: Space, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's Optuna params as ``train`` settings (hidden sizes back to a tuple)."""
    return {name: _choice_value(name, value) for name, value in params.items()}


def best_toml(space: Space, params: dict[str, Any]) -> str:
    """The best trial as a ``[train]`` table that ``fastnn train --config`` reads as it is."""
    config = space.config(trial_values(space, params))
    values = {k: v for k, v in config.to_dict().items() if k in {**space.fixed, **params}}
    lines = ["[train]"]
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = f'"{value}"'
        elif isinstance(value, (list, tuple)):
            text = f'"{",".join(str(v) for v in value)}"'
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def open_study(storage_url: str, name: str, pruner: str, seed: int | None, embedded: bool) -> Any:
    """Create or join the study; a database that cannot be reached is a :class:`TuneError`."""
    try:
        import optuna
        import sqlalchemy
    except ImportError as exc:
        raise TuneError(INSTALL_HINT) from exc
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial's end is printed, a failure's error too
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat, stable since v2.9
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "none": optuna.pruners.NopPruner,
    }
    # Elsewhere than the embedded file, a worker that stops beating for 60 s is taken for dead.
    heartbeat = {} if embedded else {"heartbeat_interval": 15, "grace_period": 60}
    try:
        for attempt in range(5):
            try:
                storage = optuna.storages.RDBStorage(storage_url, **heartbeat)
                break
            # Another command made the same tables at the same moment: PostgreSQL says so with a
            # duplicate key (IntegrityError), a table that exists already (ProgrammingError) or a
            # deadlock between the two (OperationalError, like an unreachable server, tried once).
            except sqlalchemy.exc.DBAPIError as exc:
                racing = isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)) or (
                    isinstance(exc, sqlalchemy.exc.OperationalError) and "deadlock" in str(exc)
                )
                if attempt == 4 or not racing:
                    raise
                time.sleep(1)
        return optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=pruners[pruner](),
        )
    except ImportError as exc:  # the database's driver
        raise TuneError(
            f'the storage {storage_url.split(":")[0]} needs its driver: {exc}; pip install "fastnn[tune]"'
        ) from exc
    except Exception as exc:  # SQLAlchemy's errors: unreachable host, bad URL, refused login
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TuneError(f"cannot open the storage {_hide_password(storage_url)}: {first}") from exc


def _hide_password(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


def fail_orphans(study: Any) -> int:
    """Mark trials left RUNNING by a dead worker as failed (for the embedded study, which only one
    ``fastnn tune`` command uses at a time); returns how many."""
    import optuna

    orphans = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for t in orphans:
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return len(orphans)


@dataclass(frozen=True)
class StudySettings:
    """What every worker of one ``fastnn tune`` command needs to join the study and run trials."""

    space_path: str
    storage: str
    study: str
    trials: int
    pruner: str
    seed: int | None
    embedded: bool
    data_dir: str | None
    timeout: float | None = None


def finished_trials(study: Any) -> int:
    """Trials that count towards ``--trials``: complete or pruned (failed ones are run again)."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def load_trial_split(space: Space, data_dir: str | None) -> Any:
    from fastnn.data import load_cifar10, prepare

    config = space.config({})
    return prepare(load_cifar10(data_dir), validation=config.validation, seed=config.split_seed, subset=config.subset)


def run_worker(settings: StudySettings, worker: int = 0, on_trial: Any = None) -> None:
    """Run trials of the study until it has ``settings.trials`` finished ones (or the timeout)."""
    import numpy as np
    import optuna

    from fastnn.backend import get_backend

    space = load_space(settings.space_path)
    seed = None if settings.seed is None else settings.seed + worker  # workers sample different points
    study = open_study(settings.storage, settings.study, settings.pruner, seed, settings.embedded)
    split = load_trial_split(space, settings.data_dir)
    backend = get_backend(space.config({}).device)

    def objective(trial: Any) -> float:
        config = space.config({d.name: d.suggest(trial) for d in space.tuned})

        trainer = Trainer(config, backend, listener=_Pruning(trial))
        try:  # a too-large learning rate overflows before the loss turns non-finite: the error says it
            with np.errstate(over="ignore", invalid="ignore"):
                trainer.fit(split.x_train, split.y_train, split.x_val, split.y_val, n_classes=len(split.class_names))
        except (ValueError, RuntimeError) as exc:  # the trial fails, the study goes on
            trial.set_user_attr("error", str(exc))
            raise
        return max(r.val_accuracy for r in trainer.history)

    failures = []

    def enough(study: Any, trial: Any) -> None:
        if on_trial:
            on_trial(trial)
        if trial.state == optuna.trial.TrialState.FAIL:
            failures.append(trial.number)
        # Failed trials are run again, but not forever: a space where every trial fails ends too.
        if finished_trials(study) >= settings.trials or len(failures) >= settings.trials:
            study.stop()

    if finished_trials(study) < settings.trials:
        study.optimize(objective, timeout=settings.timeout, callbacks=[enough], catch=(ValueError, RuntimeError))


class _Pruning(TrainingListener):
    """Reports each epoch's validation accuracy to an Optuna trial, and stops the trial when the
    study's pruner says so."""

    def __init__(self, trial: Any):
        self.trial = trial

    def epoch_finished(self, record: Any, network: Any) -> None:
        import optuna

        self.trial.report(record.val_accuracy, record.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {record.epoch}")


def _worker_main(settings: StudySettings, worker: int) -> None:
    """A spawned worker: Ctrl-C reaches it too; Optuna has marked its running trial failed by then."""
    try:
        run_worker(settings, worker, on_trial=_print_trial)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except TuneError as exc:
        print(f"worker {worker}: {exc}")
        raise SystemExit(1) from None


def _print_trial(trial: Any) -> None:
    epochs = max(trial.intermediate_values) if trial.intermediate_values else 0
    value = f"val accuracy {trial.value:.2%}" if trial.value is not None else trial.user_attrs.get("error", "")
    print(
        f"trial {trial.number}: {trial.state.name.lower()} after {epochs} epoch(s) {value} {trial.params}", flush=True
    )


def worker_gpu(gpus: list[str], worker: int) -> dict[str, str]:
    """The environment that gives ``worker`` one of several GPUs, in turn; nothing with one or none."""
    return {"CUDA_VISIBLE_DEVICES": gpus[worker % len(gpus)]} if len(gpus) > 1 else {}


def run_workers(settings: StudySettings, workers: int, on_trial: Any = None) -> list[int]:
    """Run the study in ``workers`` processes (one in this process when 1); the BLAS threads are
    divided between them, and the GPUs where there are several, through the environment each
    inherits before it loads NumPy or CuPy. Returns the workers' exit codes."""
    if workers == 1:
        run_worker(settings, 0, on_trial)
        return [0]
    import multiprocessing

    from fastnn.backend import gpu_ids
    from fastnn.experiments import divided_blas_threads, environment

    context = multiprocessing.get_context("spawn")  # a fresh interpreter reads the thread counts afresh
    processes, gpus = [], gpu_ids()
    with divided_blas_threads(workers):
        for worker in range(workers):
            process = context.Process(target=_worker_main, args=(settings, worker))
            with environment(worker_gpu(gpus, worker)):
                process.start()
            processes.append(process)
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join()
        raise
    return [p.exitcode for p in processes]


def train_best(study: Any, space: Space, data_dir: str | None, out: Path) -> Any:
    """Train the best trial's config again (same seed) and measure it on the test set, once."""
    from fastnn.backend import get_backend

    config = space.config(trial_values(space, study.best_trial.params))
    split = load_trial_split(space, data_dir)
    return run_training(config, split, get_backend(config.device), str(out))
