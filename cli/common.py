"""Pieces several commands share: device resolution, data loading, the training progress display."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from fastnn.backend import BackendUnavailable, get_backend
from fastnn.train import TrainingListener

# Into a file or a pipe (a log), lines are not broken at 80 columns: one epoch, one line.
console = Console(stderr=False, soft_wrap=not sys.stdout.isatty())
err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    envvar="FASTNN_DATA_DIR",
    help="Folder with cifar-10-python.tar.gz [env FASTNN_DATA_DIR; default ~/.cache/fastnn].",
)
"""``--data-dir``, as every command that loads CIFAR-10 takes it."""

device_option = click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
"""``--device`` of the commands that measure a saved network."""


def resolve_backend(name: str) -> Any:
    """The backend for ``--device``; an unavailable one is a usage error (exit code 2)."""
    try:
        backend = get_backend(name)
    except BackendUnavailable as exc:
        raise click.BadParameter(str(exc), param_hint="'--device'") from exc
    if backend.note:
        err_console.print(f"[yellow]note:[/yellow] {escape(backend.note)}")
    return backend


def note_ignored_options(config: Any, backend: Any) -> None:
    """Say so when a setting cannot act on this backend (it is still recorded in the checkpoint)."""
    if config.tf32 and backend.name != "cupy":
        err_console.print("[yellow]note:[/yellow] --tf32 acts only on NVIDIA GPUs; this run uses full float32")


def load_split(data_dir: str | None, validation: int, split_seed: int, subset: int | None) -> Any:
    """Load and prepare CIFAR-10 (downloading it if needed); data problems end the command cleanly."""
    from fastnn.data import DataError, load_cifar10, prepare

    try:
        raw = load_cifar10(data_dir)  # a progress bar on a terminal, two plain lines elsewhere
        return prepare(raw, validation=validation, seed=split_seed, subset=subset)
    except (DataError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


class TrainingDisplay(TrainingListener):
    """A batch progress bar within each epoch and one printed line per finished epoch; a context
    manager, which shows the bar while it is open."""

    def __init__(self, total_epochs: int, label: str = ""):
        self.total_epochs, self.label = total_epochs, label
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("images"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = None

    def __enter__(self) -> TrainingDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def epoch_started(self, epoch: int, lr: float) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"{self.label}epoch {epoch + 1}/{self.total_epochs} lr {lr:.2e}", total=None)

    def batch_finished(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)

    def epoch_finished(self, record: Any, network: Any = None) -> None:
        val = (
            ""
            if record.val_accuracy != record.val_accuracy
            else (f"  val loss {record.val_loss:.4f} acc {record.val_accuracy:6.2%}")
        )
        self.progress.console.print(
            f"{self.label}epoch {record.epoch:3d}/{self.total_epochs}  lr {record.lr:.2e}  "
            f"train loss {record.train_loss:.4f} acc {record.train_accuracy:6.2%}{val}  {record.seconds:6.1f}s"
        )
