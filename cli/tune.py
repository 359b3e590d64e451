"""``fastnn tune``: a hyperparameter search on Optuna over a TOML space, in one or many processes."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.markup import escape

from fastnn_cli.common import console, data_dir_option, err_console


@click.command()
@click.option("--space", "space_path", required=True, type=click.Path(dir_okay=False), help="TOML space file.")
@click.option("--trials", type=click.IntRange(min=1), required=True, help="Finished trials the study should have.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder of the study.")
@click.option("--storage", default=None, help="Database URL shared by workers [default: sqlite in --out].")
@click.option("--study", "study_name", default="fastnn", show_default=True, help="Study name in the storage.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes here.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds per worker.")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median", show_default=True)
@click.option("--seed", type=int, default=None, help="Seed of the sampler (worker i uses seed + i).")
@data_dir_option
def tune(space_path, trials, out_dir, storage, study_name, workers, timeout, pruner, seed, data_dir) -> None:
    """Search training settings with Optuna; write best.toml, report.md and figures to --out."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise click.ClickException('fastnn tune needs Optuna: pip install "fastnn[tune]"') from None
    from fastnn import tune as tuning
    from fastnn.tune_report import write_report

    try:
        space = tuning.load_space(space_path)
    except tuning.TuneError as exc:
        raise click.BadParameter(str(exc), param_hint="'--space'") from exc
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot make {out}: {exc.strerror}", param_hint="'--out'") from exc
    embedded = storage is None
    settings = tuning.StudySettings(
        space_path,
        storage or tuning.default_storage(out),
        study_name,
        trials,
        pruner,
        seed,
        embedded,
        data_dir,
        timeout,
    )
    try:
        study = tuning.open_study(settings.storage, study_name, pruner, seed, embedded)
    except tuning.TuneError as exc:
        raise click.BadParameter(str(exc), param_hint="'--storage'") from exc
    if embedded:
        orphans = tuning.fail_orphans(study)
        if orphans:
            err_console.print(f"[yellow]note:[/yellow] {orphans} trial(s) left running by a stopped run marked failed")
    before = tuning.finished_trials(study)
    console.print(
        f"study {escape(study_name)} in {escape(tuning._hide_password(settings.storage))}: "
        f"{before} of {trials} trials finished; {workers} worker(s), {len(space.tuned)} tuned setting(s)"
    )
    try:
        codes = tuning.run_workers(settings, workers, on_trial=tuning._print_trial)
    except KeyboardInterrupt:
        done = tuning.finished_trials(study)
        raise _Interrupted(f"interrupted with {done} of {trials} trials finished; the same command continues") from None
    except tuning.TuneError as exc:
        raise click.ClickException(str(exc)) from exc
    if any(code == 130 for code in codes):
        raise _Interrupted("interrupted; the same command continues the study")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise click.ClickException("no trial completed, so there is no best trial; see the messages above")
    best = study.best_trial
    console.print(
        f"best trial {best.number}: val accuracy {best.value:.2%} {best.params}; measuring it on the test set"
    )
    result = tuning.train_best(study, space, data_dir, out / "best")
    command = (
        "fastnn tune " + " ".join(shlex.quote(a) for a in sys.argv[1:][sys.argv[1:].index("tune") + 1 :])
        if "tune" in sys.argv[1:]
        else "fastnn tune"
    )
    try:
        write_report(out, study, space, command, result.summary())
    except OSError as exc:
        raise click.ClickException(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    console.print(
        f"test accuracy of the best trial {result.test_accuracy:.2%}; wrote {out / 'best.toml'}, "
        f"{out / 'report.md'} and the figures"
    )


class _Interrupted(click.ClickException):
    exit_code = 130
