"""TensorBoard logs of training runs, through tensorboardX (the optional ``tensorboard`` extra).

Per epoch: the training and validation loss and accuracy, the learning rate and the epoch's seconds
as scalars, and a histogram of every parameter of every layer (``weights/<layer>.<name>``, e.g.
``weights/0.W``). Everything comes from the per-epoch record and one read of the parameters after the
epoch, never from inside the batch loop. Events are flushed each epoch, so an interrupted run keeps
the epochs it finished. View them with ``tensorboard --logdir DIR``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fastnn.train import TrainingListener

HINT = 'TensorBoard logs need tensorboardX: pip install "fastnn[tensorboard]"'
SCALARS = {
    "loss/train": "train_loss",
    "loss/validation": "val_loss",
    "accuracy/train": "train_accuracy",
    "accuracy/validation": "val_accuracy",
    "learning_rate": "lr",
    "seconds/epoch": "seconds",
}  # tag -> field of fastnn.train.EpochRecord


class TensorBoardUnavailable(RuntimeError):
    """tensorboardX is not installed; the message says how to install it."""


def require_tensorboardx() -> None:
    """Raise TensorBoardUnavailable with the install command unless tensorboardX can be imported."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError as exc:
        raise TensorBoardUnavailable(HINT) from exc


class TensorBoardLogger:
    """One run's event file in ``log_dir``; ``epoch(record, network)`` after each epoch."""

    def __init__(self, log_dir: str | Path):
        require_tensorboardx()
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(log_dir))

    def epoch(self, record: Any, network: Any) -> None:
        """The numbers of an :class:`fastnn.train.EpochRecord` at step ``record.epoch`` (those that
        are not measured, e.g. validation without a validation set, are left out), and a histogram of
        each parameter, read to the host once."""
        self._scalars(record.to_dict())
        for name, value in network.parameters():
            self.writer.add_histogram(f"weights/{name}", network.backend.to_numpy(value), record.epoch)
        self.writer.flush()

    def history(self, rows: list[dict[str, Any]]) -> None:
        """The scalars of epochs trained earlier (``EpochRecord.to_dict()`` rows; no weights to draw)."""
        for row in rows:
            self._scalars(row)
        self.writer.flush()

    def _scalars(self, row: dict[str, Any]) -> None:
        for tag, name in SCALARS.items():
            value = row.get(name)
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, row["epoch"])

    def test(self, loss: float, accuracy: float, step: int) -> None:
        """The final test-set numbers, at the last epoch's step."""
        self.writer.add_scalar("loss/test", loss, step)
        self.writer.add_scalar("accuracy/test", accuracy, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class LoggedDisplay(TrainingListener):
    """A training display (a :class:`fastnn.train.TrainingListener` and a context manager, as the
    CLI's TrainingDisplay) that also logs each finished epoch to ``logger``, closed on exit."""

    def __init__(self, display: Any, logger: TensorBoardLogger):
        self.display, self.logger = display, logger

    def __enter__(self) -> LoggedDisplay:
        self.display.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.display.__exit__(*exc)
        finally:
            self.logger.close()

    def epoch_started(self, epoch: int, lr: float) -> None:
        self.display.epoch_started(epoch, lr)

    def batch_finished(self, done: int, total: int) -> None:
        self.display.batch_finished(done, total)

    def epoch_finished(self, record: Any, network: Any = None) -> None:
        self.display.epoch_finished(record, network)
        self.logger.epoch(record, network)


class TensorBoardReporter:
    """An experiment reporter (:class:`fastnn.experiments.Reporter`) that passes everything on to
    ``reporter`` and logs each run it trains to ``log_dir/<run-id>/``, one TensorBoard run each. A run
    finished by an earlier invocation gets the scalars of its saved history, unless its folder has them."""

    def __init__(self, reporter: Any, log_dir: str | Path):
        self.reporter, self.log_dir = reporter, Path(log_dir)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reporter, name)

    def skipped(self, run: Any, record: Any) -> None:
        self.reporter.skipped(run, record)
        folder = self.log_dir / run.run_id
        if not any(folder.glob("events.out.tfevents.*")):
            logger = TensorBoardLogger(folder)
            logger.history(record.history)
            logger.close()

    def training(self, run: Any) -> LoggedDisplay:
        return LoggedDisplay(self.reporter.training(run), TensorBoardLogger(self.log_dir / run.run_id))
