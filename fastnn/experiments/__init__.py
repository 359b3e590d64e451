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
``model.npz`` and ``metrics.jsonl`` that :func:`fastnn.run.run_training` writes there, so an
interrupted experiment resumes where it stopped: a run whose saved config equals the planned one
is skipped, and a changed setting trains again.

``fastnn.report`` turns the :class:`ExperimentResult` into report.md, curves.png, report.pdf and
results.json. What this module is not: a hyper-parameter search; the sweep only sets each
optimizer's learning rate so that the comparison of optimizers is fair.

Read in this order: ``plan.py`` (the settings, the runs and the studies), ``runner.py`` (training them,
resuming, several processes), ``records.py`` (what each run and the whole experiment measured).
"""

from fastnn.experiments.plan import (
    KEY_DEVICE,
    METRICS,
    OPTIONAL_STUDIES,
    QUICK_CONFIG,
    QUICK_SETTINGS,
    RUN_FORMAT,
    Arm,
    ExperimentError,
    ExperimentSettings,
    Plan,
    Run,
    Study,
    add_studies,
    add_sweep,
    config_key,
    quick,
    run_id,
    run_label,
    schedule_text,
)
from fastnn.experiments.records import (
    ExperimentResult,
    RunRecord,
    choose_lr,
    finished_runs,
    json_ready,
    stats,
)
from fastnn.experiments.runner import (
    BLAS_THREADS,
    Reporter,
    divided_blas_threads,
    environment,
    run_experiments,
    train_run,
)

__all__ = [
    "KEY_DEVICE", "METRICS", "OPTIONAL_STUDIES", "QUICK_CONFIG", "QUICK_SETTINGS", "RUN_FORMAT", "Arm",
    "ExperimentError", "ExperimentSettings", "Plan", "Run", "Study", "add_studies", "add_sweep", "config_key",
    "quick", "run_id", "run_label", "schedule_text", "ExperimentResult", "RunRecord", "choose_lr", "finished_runs",
    "json_ready", "stats", "BLAS_THREADS", "Reporter", "divided_blas_threads", "environment", "run_experiments",
    "train_run",
]  # fmt: skip
