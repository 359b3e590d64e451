"""``fastnn train``: train a network on CIFAR-10 and write its checkpoint and metrics."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.markup import escape

from fastnn.config import TrainConfig
from fastnn.run import run_training
from fastnn.tensorboard import TensorBoardLogger
from fastnn.train import NonFiniteLoss
from fastnn_cli.common import (
    TrainingDisplay,
    console,
    err_console,
    load_split,
    note_ignored_options,
    resolve_backend,
)
from fastnn_cli.options import check_out_dir, check_split_sizes, config_from_options, training_options
from fastnn_cli.tensorboard import check_tensorboard, tensorboard_option


class RunDisplay(TrainingDisplay):
    """``fastnn train``'s display, which also notes each epoch whose checkpoint is written in
    ``finished`` (for the messages of a run that stops) and logs it to TensorBoard (``board``)."""

    def __init__(self, total_epochs: int, finished: list[int], board: TensorBoardLogger | None):
        super().__init__(total_epochs)
        self.finished, self.board = finished, board

    def epoch_finished(self, record, network=None) -> None:
        self.finished.append(record.epoch)
        super().epoch_finished(record, network)
        if self.board:
            self.board.epoch(record, network)


class Interrupted(click.ClickException):
    """Ctrl-C during training: one line saying what was kept, and the shell's exit code for SIGINT."""

    exit_code = 130


def previous_run(folder: Path) -> str | None:
    """What an earlier run left in ``folder``, in words (None when nothing): finished, interrupted
    after some epoch, or a model.npz that cannot be read."""
    from fastnn.backend import get_backend
    from fastnn.checkpoint import CheckpointError, load

    path = folder / "model.npz"
    if not path.exists():
        return None
    try:
        _, meta = load(path, get_backend("cpu"))
    except CheckpointError:
        return "a model.npz that cannot be read"
    epochs = f"{len(meta.get('history') or [])} of {(meta.get('config') or {}).get('epochs', '?')} epochs"
    return f"a finished run ({epochs})" if meta.get("results") else f"an interrupted run ({epochs})"


def resumed_config(folder: Path, ctx: click.Context) -> TrainConfig:
    """The saved settings of the interrupted run in ``folder``; settings given again are refused,
    since a run resumes only with the settings it started with (--device and --data-dir may change)."""
    from fastnn.backend import get_backend
    from fastnn.checkpoint import CheckpointError, load

    chosen = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.DEFAULT_MAP)
    given = [
        f"--{name.replace('_', '-')}"
        for name in TrainConfig.__dataclass_fields__
        if name != "device" and ctx.get_parameter_source(name) in chosen
    ]
    if given:
        raise click.UsageError(f"--resume continues with the run's saved settings; drop {', '.join(given)}")
    path = folder / "model.npz"
    if not path.exists():
        raise click.BadParameter(f"no checkpoint to resume from: {path} does not exist", param_hint="'--resume'")
    try:
        _, meta = load(path, get_backend("cpu"))
        config = TrainConfig.from_saved(meta["config"])
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        raise click.BadParameter(f"cannot resume from {path}: {exc}", param_hint="'--resume'") from exc
    if meta.get("results"):
        raise click.BadParameter(f"{folder} holds a finished run; there is nothing to resume", param_hint="'--resume'")
    if "progress" not in meta:
        raise click.BadParameter(
            f"{path} was written by an older fastnn, without the training state; train again",
            param_hint="'--resume'",
        )
    if ctx.get_parameter_source("device") == click.core.ParameterSource.COMMANDLINE:
        config.device = ctx.params["device"]
    return config


@click.command()
@training_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for model.npz and metrics.jsonl [default: runs/<date-time>].",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Continue the interrupted run in this folder from its last checkpoint, with its saved settings.",
)
@click.option("--overwrite", is_flag=True, help="Replace a run that --out already holds.")
@tensorboard_option
@click.pass_context
def train(
    ctx: click.Context,
    out_dir: str | None,
    resume_dir: str | None,
    overwrite: bool,
    data_dir: str | None,
    tensorboard_dir: str | None,
    **options,
) -> None:
    """Train a fully-connected network on CIFAR-10; print the test accuracy at the end."""
    from fastnn.rundir import FolderBusy, RunLock

    if resume_dir and out_dir:
        raise click.UsageError("--resume continues in its own folder; drop --out")
    config = resumed_config(Path(resume_dir), ctx) if resume_dir else config_from_options(options)
    backend = resolve_backend(config.device)
    note_ignored_options(config, backend)
    check_split_sizes(config.validation, config.subset)
    out = Path(resume_dir or out_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    created = not out.exists()
    check_out_dir(out)
    board_dir = check_tensorboard(tensorboard_dir)
    lock = RunLock(out)
    finished = []  # epochs whose checkpoint is written
    try:
        try:
            lock.acquire()
        except FolderBusy as exc:
            raise click.ClickException(str(exc)) from None
        earlier = previous_run(out)
        if earlier and not resume_dir:
            if not overwrite:
                resume = f"continue it with `fastnn train --resume {out}`, " if "interrupted" in earlier else ""
                raise click.BadParameter(
                    f"{out} holds {earlier}; {resume}pass --overwrite to replace it, or choose another folder",
                    param_hint="'--out'",
                )
            err_console.print(f"[yellow]note:[/yellow] this run replaces {escape(earlier)} in {escape(str(out))}")
        result = _train(config, backend, out, data_dir, finished, resume=bool(resume_dir), board_dir=board_dir)
    except BaseException:
        lock.release()
        if created and not finished:  # a run that failed before its first epoch leaves no empty folder
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    lock.release()
    console.print(
        f"test accuracy [bold]{result.test_accuracy:.2%}[/bold] (test loss {result.test_loss:.4f}) "
        f"after {len(result.history)} epoch{'s' if len(result.history) != 1 else ''} in {result.seconds:.0f}s; "
        f"wrote {out / 'model.npz'} and "
        f"{out / 'metrics.jsonl'}"
    )


def _train(
    config: TrainConfig, backend, out: Path, data_dir: str | None, finished: list[int], resume: bool, board_dir=None
):
    """Load the data and run the training, turning its failures into one-line errors."""
    import numpy as np

    from fastnn.checkpoint import CheckpointError

    split = load_split(data_dir, config.validation, config.split_seed, config.subset)
    board = TensorBoardLogger(board_dir) if board_dir else None
    console.print(
        ("resuming " if resume else "")
        + f"training {config.describe()} on {backend.describe()}: "
        f"{config.optimizer} lr {config.lr:g}, "
        f"schedule {config.schedule}, l2 {config.l2:g}, dropout {config.dropout:g}, batch {config.batch_size}, "
        f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}, "
        f"{len(split.y_train)} train / {len(split.y_val)} val images"
        + (", TF32 products" if config.tf32 and backend.name == "cupy" else "")
    )

    with RunDisplay(config.epochs, finished, board) as display:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a blow-up is reported below
                result = run_training(
                    config,
                    split,
                    backend,
                    str(out),
                    listener=display,
                    resume=resume,
                )
        except NonFiniteLoss as exc:
            saved = (
                f"the last good epoch ({finished[-1]}) is saved in {out / 'model.npz'}"
                if finished
                else "no epoch finished, so nothing was saved"
            )
            raise click.ClickException(f"{exc}; {saved}") from exc
        except (ValueError, CheckpointError) as exc:  # settings that do not fit the data; a damaged state
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # the disk filled up under a checkpoint, which is written whole or not at all
            kept = f"the checkpoint of epoch {finished[-1]} is kept" if finished else "nothing was saved"
            raise click.ClickException(f"cannot write to {out}: {exc.strerror or exc}; {kept}") from exc
        except KeyboardInterrupt:
            kept = (
                f"epoch {finished[-1]}'s checkpoint is in {out / 'model.npz'} (not yet tested); "
                f"continue with `fastnn train --resume {out}`"
                if finished
                else "no epoch finished, so nothing was saved"
            )
            raise Interrupted(f"interrupted; {kept}") from None
    if board:
        board.test(result.test_loss, result.test_accuracy, len(result.history))
        board.close()
    return result
