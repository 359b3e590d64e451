"""``fastnn inspect``: pictures of what a saved network learned, on one page (inspect.png, index.html)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from fastnn.atomic import write_atomic_set
from fastnn.report import ReportError, require_matplotlib
from fastnn_cli.common import console, data_dir_option, device_option, err_console, resolve_backend
from fastnn_cli.evaluate import measure
from fastnn_cli.options import check_out_dir


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for inspect.png, weights.png, inspect.json and index.html [default: the model's folder].",
)
@device_option
@data_dir_option
def inspect_command(model: str, out_dir: str | None, device: str, data_dir: str | None) -> None:
    """Draw what a saved MODEL (model.npz) learned: first-layer weights as images, the confusion matrix,
    the test images it gets most confidently wrong and the training curves of its metrics.jsonl."""
    from fastnn.inspect import class_probabilities, inspection_files, read_metrics

    try:
        require_matplotlib()
    except ReportError as exc:
        raise click.UsageError('fastnn inspect draws with matplotlib: pip install "fastnn[plots]"') from exc
    out = Path(out_dir) if out_dir is not None else Path(model).parent
    if out_dir is not None or out.is_dir():  # a mistyped MODEL's folder is not made: loading it says what is wrong
        check_out_dir(out)
    backend = resolve_backend(device)
    measured = measure(model, backend, data_dir)
    network = measured.network
    probabilities = class_probabilities(network, backend.asarray(measured.split.x_test, measured.config.dtype))
    title = f"{Path(model)}: {measured.config.describe()}, test accuracy {measured.accuracy:.2%}"
    rows, note = read_metrics(Path(model).parent / "metrics.jsonl")
    if note:
        err_console.print(f"[yellow]note:[/yellow] {escape(note)}")
    try:
        files = inspection_files(network, measured, probabilities, rows, note, title)
    except ValueError as exc:  # no weight matrix that reads the images
        raise click.ClickException(f"{model}: {exc}") from exc
    try:
        write_atomic_set({out / name: data for name, data in files.items()})
    except OSError as exc:
        raise click.ClickException(f"cannot write to {out}: {exc.strerror or exc}; nothing was written") from exc
    console.print(
        f"test accuracy [bold]{measured.accuracy:.2%}[/bold] on {backend.describe()}; "
        f"wrote {escape(str(out / 'index.html'))}, inspect.png, weights.png and inspect.json"
    )
