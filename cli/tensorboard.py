"""``--tensorboard DIR`` of ``fastnn train`` and ``fastnn experiments``: the option and its checks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from fastnn.tensorboard import TensorBoardUnavailable, require_tensorboardx

tensorboard_option = click.option(
    "--tensorboard",
    "tensorboard_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write TensorBoard logs there (losses, accuracies, learning rate, weight histograms per epoch); "
    'needs tensorboardX: pip install "fastnn[tensorboard]". View with: tensorboard --logdir DIR.',
)


def check_tensorboard(path: str | None) -> Path | None:
    """The --tensorboard folder, made and checked writable, or None; a missing tensorboardX or an
    unwritable folder is a usage error before any data is loaded."""
    if path is None:
        return None
    try:
        require_tensorboardx()
    except TensorBoardUnavailable as exc:
        raise click.BadParameter(str(exc), param_hint="'--tensorboard'") from exc
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise click.BadParameter(f"cannot write to {folder}: {reason}", param_hint="'--tensorboard'") from exc
    return folder
