"""``fastnn experiments``: the assignment's studies from one base config, with a report.

A thin layer over :func:`fastnn.experiments.run_experiments` and :func:`fastnn.report.write_report`:
the base config comes from the training options or ``--config`` TOML, as for ``fastnn train``.
"""

from __future__ import annotations

import math
from pathlib import Path

import click
from rich.markup import escape

from fastnn.config import NORMS
from fastnn.experiments import (
    OPTIONAL_STUDIES,
    ExperimentError,
    ExperimentSettings,
    Reporter,
    RunRecord,
    quick,
    run_experiments,
)
from fastnn.report import ReportError, require_matplotlib, write_report
from fastnn.tensorboard import TensorBoardReporter
from fastnn_cli.common import TrainingDisplay, console, load_split, note_ignored_options, resolve_backend
from fastnn_cli.options import FiniteRange, check_out_dir, check_split_sizes, config_from_options, training_options
from fastnn_cli.tensorboard import check_tensorboard, tensorboard_option
from fastnn_cli.train import Interrupted

SETTINGS = ExperimentSettings()


class FloatList(click.ParamType):
    """Comma-separated positive finite numbers, e.g. ``3e-4,1e-3``."""

    name = "LRS"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):  # from a TOML config, or the default
            value = ",".join(str(v) for v in value)
        parts = [part.strip() for part in str(value).split(",")]
        try:
            if "" in parts:
                raise ValueError("an empty part")
            values = tuple(float(part) for part in parts)
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers (e.g. 3e-4,1e-3)", param, ctx)
        if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
            self.fail(f"learning rates must be positive finite numbers, got {value!r}", param, ctx)
        return values


class NameList(click.ParamType):
    """Comma-separated names from ``choices``, e.g. ``norm,mixup``; each once."""

    name = "NAMES"

    def __init__(self, choices):
        self.choices = list(choices)

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):  # from a TOML config, or the default
            value = ",".join(str(v) for v in value)
        names = [part.strip() for part in str(value).split(",") if part.strip()]
        unknown = [n for n in names if n not in self.choices]
        if unknown:
            self.fail(f"unknown {', '.join(map(repr, unknown))}; choose from {', '.join(self.choices)}", param, ctx)
        return tuple(dict.fromkeys(names))


def hold_folder(ctx: click.Context, folder: Path) -> None:
    """Lock ``folder`` (:class:`fastnn.rundir.RunLock`) until the command ends: two experiments in one
    folder would train the same runs twice and write one report over the other."""
    from fastnn.rundir import FolderBusy, RunLock

    try:
        ctx.with_resource(RunLock(folder))
    except FolderBusy as exc:
        raise click.ClickException(str(exc)) from None


def _result_text(record: RunRecord) -> str:
    if not record.ok:
        return "[red]diverged[/red]"
    s = record.summary
    return f"test {s['test_accuracy']:.2%}, best val {s['best_val_accuracy']:.2%} in {s['seconds']:.0f}s"


def _tag(run) -> str:
    """``[label]`` with its brackets escaped, so that rich prints them instead of reading markup."""
    return escape(f"[{run.label}]")


class ConsoleReporter(Reporter):
    """One line a phase, a run's start and end, a skipped run; the per-epoch lines of TrainingDisplay."""

    def phase(self, title: str, to_train: int, to_skip: int, shared: int) -> None:
        extra = [f"{to_skip} finished earlier"] if to_skip else []
        extra += [f"{shared} shared with the sweep"] if shared else []
        console.print(f"[bold]{title}[/bold]: {to_train} runs to train" + (f" ({', '.join(extra)})" if extra else ""))

    def skipped(self, run, record) -> None:
        console.print(f"skip  {_tag(run)} finished earlier ({_result_text(record)}): runs/{run.run_id}")

    def started(self, run, number: int, total: int) -> None:
        console.print(f"start {_tag(run)} run {number}/{total} -> runs/{run.run_id}")

    def finished(self, run, record, number: int, total: int) -> None:
        console.print(f"done  {_tag(run)} run {number}/{total}: {_result_text(record)}")

    def training(self, run):
        return TrainingDisplay(run.config.epochs, label=_tag(run) + " ")


@click.command()
@training_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="runs/experiments",
    show_default=True,
    help="Folder of the report and of every run (runs/<run-id>/); finished runs there are reused.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Smoke test in minutes: 2 epochs (sweep 1), 5,000 training / 1,000 validation images, 2 lrs per "
    "optimizer (options given explicitly win). Not for conclusions.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=SETTINGS.seeds,
    show_default=True,
    help="Repeat each study run with seeds SEED..SEED+N-1 and report mean, std, min and max.",
)
@click.option(
    "--sweep-epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs of each learning-rate sweep run [default: --epochs, so the sweep's best runs are reused].",
)
@click.option(
    "--adam-lrs",
    type=FloatList(),
    default=",".join(f"{lr:g}" for lr in SETTINGS.adam_lrs),
    show_default=True,
    help="Learning rates the sweep tries for Adam.",
)
@click.option(
    "--sgd-lrs",
    type=FloatList(),
    default=",".join(f"{lr:g}" for lr in SETTINGS.sgd_lrs),
    show_default=True,
    help="Learning rates the sweep tries for SGD (momentum as --momentum).",
)
@click.option(
    "--l2-study",
    type=FiniteRange(min=0, min_open=True),
    default=SETTINGS.l2_study,
    show_default=True,
    help="L2 lambda of the 'with L2' run when the base has --l2 0.",
)
@click.option(
    "--decay-study",
    type=FiniteRange(min=0, min_open=True),
    default=SETTINGS.decay_study,
    show_default=True,
    help="k of the 'with schedule' run (exp) when the base has --schedule none.",
)
@click.option(
    "--study",
    "studies",
    type=NameList(OPTIONAL_STUDIES),
    default="",
    help=f"Optional studies to add, comma-separated: {', '.join(OPTIONAL_STUDIES)} (with vs without "
    "normalization, label smoothing, mixup; AdamW vs Adam + L2).",
)
@click.option(
    "--norm-study",
    type=click.Choice([k for k in NORMS if k != "none"]),
    default=SETTINGS.norm_study,
    show_default=True,
    help="--norm of the 'with' run of the norm study when the base has --norm none.",
)
@click.option(
    "--smoothing-study",
    type=FiniteRange(0, 1, min_open=True, max_open=True),
    default=SETTINGS.smoothing_study,
    show_default=True,
    help="--label-smoothing of the 'with' run of the smoothing study when the base has none.",
)
@click.option(
    "--mixup-study",
    type=FiniteRange(min=0, min_open=True),
    default=SETTINGS.mixup_study,
    show_default=True,
    help="--mixup alpha of the 'with' run of the mixup study when the base has none.",
)
@click.option(
    "--weight-decay-study",
    type=FiniteRange(min=0, min_open=True),
    default=SETTINGS.weight_decay_study,
    show_default=True,
    help="AdamW's weight decay in the adamw study when the base has none.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs trained at once, each in its own process with its share of the BLAS threads.",
)
@tensorboard_option
@click.pass_context
def experiments(
    ctx: click.Context, out_dir: str, data_dir: str | None, workers: int, tensorboard_dir: str | None, **options
) -> None:
    """Run the assignment's studies from one base config (the options, or their defaults): the base
    run; Adam vs SGD, each at the learning rate a validation sweep chose; with vs without L2; with vs
    without the learning-rate schedule; and the --study ones asked for. Writes report.md, curves.png,
    report.pdf and results.json to --out; an interrupted run resumes, skipping the runs it finished."""
    names = ("quick", "seeds", "sweep_epochs", "adam_lrs", "sgd_lrs", "l2_study", "decay_study", "studies",
             "norm_study", "smoothing_study", "mixup_study", "weight_decay_study")
    picked = {name: options.pop(name) for name in names}
    settings = ExperimentSettings(**{k: v for k, v in picked.items() if k != "quick"})
    base = config_from_options(options)
    if picked["quick"]:
        # Only the settings the user did not give explicitly take their quick values.
        given = {p.name for p in ctx.command.params if ctx.get_parameter_source(p.name).name != "DEFAULT"}
        base, settings = quick(base, settings, keep=given)
    try:  # base and settings are checked already: by their options' types and config_from_options
        require_matplotlib()  # before hours of training, not after
    except ReportError as exc:
        raise click.UsageError(str(exc)) from exc
    check_split_sizes(base.validation, base.subset)
    backend = resolve_backend(base.device)
    note_ignored_options(base, backend)
    check_out_dir(Path(out_dir))
    hold_folder(ctx, Path(out_dir))  # one experiments process per folder; rerunning after it ends resumes
    board_dir = check_tensorboard(tensorboard_dir)  # one TensorBoard run per trained run: board_dir/<run-id>/
    split = load_split(data_dir, base.validation, base.split_seed, base.subset)
    warning = " [bold red](quick run: not for conclusions)[/bold red]" if settings.quick else ""
    console.print(
        f"experiments on {backend.describe()}, {len(split.y_train)} train / {len(split.y_val)} val images, "
        f"{settings.seeds} seed(s), writing to {escape(out_dir)}{warning}"
    )
    try:
        reporter = ConsoleReporter() if board_dir is None else TensorBoardReporter(ConsoleReporter(), board_dir)
        result = run_experiments(base, settings, split, backend, out_dir, reporter, workers=workers)
        paths = write_report(result, out_dir)
    except (ExperimentError, ReportError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; finished runs are kept in {out_dir}, and the same command resumes") from None
    except OSError as exc:  # the disk filled, or a folder is in the way of a file
        raise click.ClickException(
            f"cannot write {exc.filename or out_dir}: {exc.strerror or exc}; finished runs are kept in {out_dir}, "
            "so running the same command again after fixing this resumes"
        ) from exc
    console.print(f"wrote {', '.join(str(p) for p in paths.values())}")
