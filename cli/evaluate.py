"""``fastnn evaluate``: reload a checkpoint on any device and measure it on the CIFAR-10 test set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click
import numpy as np
from rich import box
from rich.table import Column, Table

from fastnn.checkpoint import CheckpointError, damaged, load
from fastnn.config import TrainConfig
from fastnn.data.cifar10 import PIXELS
from fastnn.network import Network
from fastnn.train import evaluate
from fastnn_cli.common import console, data_dir_option, device_option, load_split, resolve_backend


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


@dataclass
class Measured:
    """A checkpoint measured on the CIFAR-10 test set: what ``fastnn evaluate`` prints and ``fastnn
    inspect`` draws, computed once for both. ``predicted`` (n_test,) and ``counts[true, predicted]``
    are host arrays; ``trained`` is the test accuracy the training run reported, if any."""

    network: Network
    meta: dict[str, Any]
    config: TrainConfig
    names: list[str]
    split: Any
    loss: float
    accuracy: float
    predicted: np.ndarray
    counts: np.ndarray
    trained: float | None


def measure(model: str, backend: Any, data_dir: str | None, tta: bool | None = None) -> Measured:
    """Load ``model`` on ``backend`` and evaluate it on the test set of the split it was trained with,
    with test-time flips if ``tta`` (None: as the run was tested); every problem (file, metadata,
    architecture, data) is a one-line ClickException."""
    try:
        network, meta = load(model, backend)
        try:
            config = TrainConfig.from_saved(meta["config"])
            saved_mean, saved_std = (np.asarray(meta["normalization"][k], dtype=np.float64) for k in ("mean", "std"))
            trained = (meta.get("results") or {}).get("test_accuracy")
            trained = None if trained is None else float(trained)
            names = [str(n) for n in meta.get("class_names") or range(network.n_classes)]
            if len(names) != network.n_classes:
                raise ValueError(f"{len(names)} class names for {network.n_classes} classes")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise damaged(model, exc) from exc
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    if network.sizes[0] != PIXELS:
        raise click.ClickException(
            f"{model}: the network takes {network.sizes[0]} inputs, but CIFAR-10 images have {PIXELS}; "
            "pass a model.npz that `fastnn train` wrote"
        )
    split = load_split(data_dir, config.validation, config.split_seed, config.subset)
    same_statistics = saved_mean.shape == split.mean.shape and saved_std.shape == split.std.shape
    if not (same_statistics and np.allclose(split.mean, saved_mean) and np.allclose(split.std, saved_std)):
        raise click.ClickException(
            f"{model}: the data's channel statistics differ from those the model was trained with; "
            "point --data-dir at the CIFAR-10 copy used for training"
        )
    backend.set_tf32(config.tf32)  # the precision the run was trained and tested in, so the numbers agree
    x_test = backend.asarray(split.x_test, config.dtype, copy=False)
    y_test = backend.asarray(split.y_test, "int64", copy=False)
    tta = config.tta if tta is None else tta
    loss, accuracy, predicted = evaluate(network, x_test, y_test, return_predictions=True, tta=tta)
    predicted = backend.to_numpy(predicted)
    counts = confusion_matrix(split.y_test, predicted, network.n_classes)
    return Measured(network, meta, config, names, split, loss, accuracy, predicted, counts, trained)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@device_option
@data_dir_option
@click.option(
    "--tta/--no-tta",
    default=None,
    help="Average the predictions of each test image and its mirror image [default: as the run was tested].",
)
def evaluate_command(model: str, device: str, data_dir: str | None, tta: bool | None) -> None:
    """Test accuracy, per-class accuracy and the confusion matrix of a saved MODEL (model.npz)."""
    backend = resolve_backend(device)
    measured = measure(model, backend, data_dir, tta)
    names, counts = measured.names, measured.counts
    columns = [Column(n[:5], justify="right", min_width=5, no_wrap=True) for n in names]
    table = Table(
        Column("true", min_width=5, no_wrap=True),
        *columns,
        Column("acc", justify="right"),
        title="confusion matrix of the test set (rows: true class)",
        box=box.SIMPLE,
        padding=(0, 0),
        pad_edge=False,
    )
    for i, name in enumerate(names):
        row_accuracy = counts[i, i] / max(counts[i].sum(), 1)
        table.add_row(name[:5], *[str(c) for c in counts[i]], f"{row_accuracy:.0%}")
    console.print(table)
    note = "" if measured.trained is None else f" (train reported {measured.trained:.2%})"
    console.print(
        f"test accuracy [bold]{measured.accuracy:.2%}[/bold]{note}, test loss {measured.loss:.4f}, "
        f"on {backend.describe()}"
    )
