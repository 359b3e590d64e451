"""A training run with its files: :func:`run_training` trains a :class:`fastnn.config.TrainConfig` with
:class:`fastnn.train.Trainer`, measures the test set once, and with an output folder rewrites
``model.npz`` (network, settings, history, the progress to resume from) and ``metrics.jsonl`` whole
after every epoch; :func:`load_progress` reads them back to continue the run (``--resume``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from fastnn.config import TrainConfig
from fastnn.network import Network
from fastnn.train import EpochRecord, Listeners, Progress, Trainer, TrainingListener, evaluate


@dataclass
class RunResult:
    """What a finished run produced: the network, its per-epoch history and the final test numbers."""

    config: TrainConfig
    network: Network
    history: list[EpochRecord]
    test_loss: float
    test_accuracy: float
    seconds: float

    def summary(self) -> dict[str, Any]:
        last = self.history[-1]
        return {
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "best_val_accuracy": max((r.val_accuracy for r in self.history), default=float("nan")),
            "final_train_accuracy": last.train_accuracy,
            "final_train_loss": last.train_loss,
            "epochs": len(self.history),
            "seconds": self.seconds,
        }


def run_training(
    config: TrainConfig,
    split: Any,
    backend: Any,
    out_dir: str | None = None,
    *,
    listener: TrainingListener | None = None,
    resume: bool = False,
) -> RunResult:
    """Train ``config`` on a prepared split (``fastnn.data.prepare``) and measure the test set once.

    With ``out_dir``, ``model.npz`` (parameters, architecture, config, history, the training
    :class:`Progress`, and at the end the test results) and ``metrics.jsonl`` are rewritten
    atomically after every epoch, so a run that stops early (e.g. on a non-finite loss) leaves the
    last good epoch's checkpoint. With ``resume`` the run in ``out_dir`` (of this ``config``)
    continues from that checkpoint. ``listener`` hears of each epoch after its checkpoint is written.
    """
    from pathlib import Path

    meta = {
        "config": config.to_dict(),
        "normalization": {"mean": [float(m) for m in split.mean], "std": [float(s) for s in split.std]},
        "class_names": list(split.class_names),
        "backend": backend.name,
    }
    trainer = Trainer(config, backend)
    files = _RunFiles(Path(out_dir), meta, trainer) if out_dir is not None else None
    trainer.listener = Listeners(files, listener)  # the checkpoint is written before the caller hears of it
    network, progress = None, None
    if resume:
        network, trainer.history, progress = load_progress(Path(out_dir) / "model.npz", backend)
    started = time.perf_counter()
    network = trainer.fit(
        split.x_train,
        split.y_train,
        split.x_val,
        split.y_val,
        network=network,
        n_classes=len(split.class_names),
        resume=progress,
    )
    seconds = time.perf_counter() - started
    test_loss, test_accuracy = evaluate(
        network,
        backend.asarray(split.x_test, config.dtype, copy=False),
        backend.asarray(split.y_test, "int64", copy=False),
        tta=config.tta,
    )
    result = RunResult(config, network, trainer.history, test_loss, test_accuracy, seconds)
    if files is not None:
        files.save(network, result.summary())
    return result


class _RunFiles(TrainingListener):
    """``run_training``'s files in ``out``: ``model.npz`` (``meta``, the trainer's history and
    progress, the network) and ``metrics.jsonl``, each rewritten whole after every epoch."""

    def __init__(self, out: Any, meta: dict[str, Any], trainer: Trainer):
        self.out, self.meta, self.trainer = out, meta, trainer

    def epoch_finished(self, record: EpochRecord, network: Network) -> None:
        self.save(network)

    def save(self, network: Network, results: dict[str, Any] | None = None) -> None:
        from fastnn import checkpoint
        from fastnn.atomic import write_jsonl

        history, progress = [r.to_dict() for r in self.trainer.history], self.trainer.progress
        meta = {**self.meta, "history": history, "results": results, "progress": progress.meta()}
        checkpoint.save(self.out / "model.npz", network, meta, progress.optimizer_state)
        write_jsonl(self.out / "metrics.jsonl", history)


def load_progress(path: Any, backend: Any) -> tuple[Network, list[EpochRecord], Progress]:
    """The network, history and :class:`Progress` of the run checkpointed at ``path``, to continue
    it (``run_training(..., resume=True)``); a CheckpointError names what is missing."""
    from fastnn import checkpoint

    network, meta = checkpoint.load(path, backend)
    try:
        saved = meta["progress"]
        history = [EpochRecord(**{k: math.nan if v is None else v for k, v in r.items()}) for r in meta["history"]]
        state = {name: backend.asarray(array) for name, array in checkpoint.load_state(path).items()}
        progress = Progress(optimizer_state=state, **saved)
    except (KeyError, TypeError, ValueError) as exc:
        raise checkpoint.CheckpointError(
            f"{path}: no training state to resume from ({type(exc).__name__}: {exc}); "
            "it was written by an older fastnn: train again without --resume"
        ) from exc
    return network, history, progress
