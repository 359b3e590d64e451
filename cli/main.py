"""Entry point of the ``fastnn`` command: one click group, one module per command."""

import click

from fastnn import __version__, kernels_cpu
from fastnn_cli.backprop import backprop
from fastnn_cli.evaluate import evaluate_command
from fastnn_cli.experiments import experiments
from fastnn_cli.info import info
from fastnn_cli.inspect import inspect_command
from fastnn_cli.train import train
from fastnn_cli.tune import tune


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fastnn")
def cli() -> None:
    """Fully-connected networks on CIFAR-10, from scratch, on NumPy or CuPy."""
    try:
        kernels_cpu.products_setting()  # FASTNN_PRODUCTS, checked where it enters
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


cli.add_command(info)
cli.add_command(train)
cli.add_command(evaluate_command, name="evaluate")
cli.add_command(backprop)
cli.add_command(experiments)
cli.add_command(inspect_command, name="inspect")
cli.add_command(tune)
