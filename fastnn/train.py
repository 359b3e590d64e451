"""Training: the data goes to the device once, and each epoch runs there.

Per epoch the training set is shuffled on the device and sliced into batches there; the loss and
the number of correct predictions are summed on the device and read back once, at the end of the
epoch, together with the validation metrics. Nothing in the batch loop waits for the device.

``Trainer`` runs a :class:`fastnn.config.TrainConfig` (every setting of a run) and tells a
:class:`TrainingListener` how it goes; ``train_epoch`` is the batch loop alone (the benchmark times
it). Augmentation is in :mod:`fastnn.augment`; a run with its checkpoint and metrics files
(``run_training``, ``--resume``) in :mod:`fastnn.run`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

from array_api_compat import device

from fastnn.augment import Mixup, augment_images, check_augmentable, flip_averaged_probabilities
from fastnn.backend import namespace
from fastnn.config import ADDED_LATER, NORMS, TrainConfig
from fastnn.fused import take_rows
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.network import Network, count_correct
from fastnn.optimizers import check_lr

__all__ = [  # TrainConfig, the augmentation and the run's files moved out; their old import paths still work
    "ADDED_LATER", "NORMS", "TrainConfig", "augment_images", "check_augmentable", "Trainer", "train_epoch",
    "evaluate", "EpochRecord", "Progress", "NonFiniteLoss", "TrainingListener", "Listeners",
]  # fmt: skip

Array = Any

def check_batch_size(batch_size: Any) -> None:
    """A batch size is a whole number >= 1 (2.5 would slice wrongly, 0 would never end)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")


def check_data(network: Network, x: Array, y: Array) -> None:
    """Refuse what would otherwise train or measure quietly wrong: a label count that differs from
    the image count, labels that are not class indices of ``network`` (read once from the device,
    before the batch loop)."""
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for inputs of shape {tuple(x.shape)}: give one label per row")
    network.check_labels(y, values=True)


def train_epoch(
    network: Network,
    optimizer: Any,
    x: Array,
    y: Array,
    *,
    batch_size: int,
    lr: float,
    rng: Any,
    augment: bool = False,
    shift: int = 2,
    gather: int = 1,
    listener: TrainingListener | None = None,
    mixup: Mixup | None = None,
) -> tuple[Array, Array]:
    """One pass over ``(x, y)`` in a random order; returns (sum of batch losses x batch sizes,
    number correct), both still on the device. ``listener.batch_finished(done, n)`` is called after
    each batch with the number of examples done so far.

    ``gather`` batches are gathered (and augmented) together, then trained on one by one: the same
    rows in the same batches whatever its value, with fewer array operations per batch for more
    memory (``Backend.gather_batches`` says what suits a device). With ``mixup`` each batch is
    mixed on the device and trained on soft targets; a prediction is then correct when it names the
    label with the larger share."""
    check_batch_size(batch_size)
    check_data(network, x, y)
    check_lr(lr)
    if augment:
        check_augmentable(x.shape[1])
    return _train_epoch(network, optimizer, x, y, batch_size, lr, rng, augment, shift, gather, listener, mixup)


def _train_epoch(network, optimizer, x, y, batch_size, lr, rng, augment, shift, gather, listener, mixup):
    """:func:`train_epoch` on inputs already checked (the Trainer checks them once, before the first epoch)."""
    xp = namespace(x)
    n = x.shape[0]
    order = rng.permutation(n)
    loss_sum = xp.zeros((), dtype=x.dtype, device=device(x))
    correct = xp.zeros((), dtype=xp.int64, device=device(x))
    for first in range(0, n, batch_size * gather):
        index = order[first : min(first + batch_size * gather, n)]  # slices ending past the array are not portable
        x_chunk, y_chunk = take_rows(x, index), xp.take(y, index, axis=0)
        if augment:
            x_chunk = augment_images(x_chunk, rng, shift)
        for start in range(0, x_chunk.shape[0], batch_size):
            stop = min(start + batch_size, x_chunk.shape[0])
            x_batch, targets = x_chunk[start:stop, ...], y_chunk[start:stop]
            if mixup is not None:
                x_batch, targets = mixup(x_batch, targets, network.n_classes, rng)
            loss, n_correct = network.train_step(x_batch, targets, optimizer, lr)
            loss_sum = loss_sum + loss * (stop - start)
            correct = correct + n_correct
            if listener is not None:
                listener.batch_finished(first + stop, n)
    return loss_sum, correct


def evaluate(
    network: Network,
    x: Array,
    y: Array,
    batch_size: int = 2000,
    *,
    return_predictions: bool = False,
    tta: bool = False,
) -> tuple[float, float] | tuple[float, float, Array]:
    """(mean loss without the L2 term, accuracy) over ``(x, y)``, in evaluation mode, in batches.

    With ``return_predictions`` the predicted classes (a device array) come as a third item, from
    the same forward pass. With ``tta`` the class probabilities are averaged over each image and its
    mirror image (:func:`fastnn.augment.flip_averaged_probabilities`).
    """
    check_batch_size(batch_size)
    check_data(network, x, y)
    return _evaluate(network, x, y, batch_size, return_predictions, tta)


def _evaluate(network, x, y, batch_size=2000, return_predictions=False, tta=False):
    """:func:`evaluate` on inputs already checked (the Trainer checks its validation set once)."""
    xp = namespace(x)
    n = x.shape[0]
    if n == 0:
        empty = xp.zeros((0,), dtype=xp.int64, device=device(x))
        return (float("nan"), float("nan"), empty) if return_predictions else (float("nan"), float("nan"))
    loss_sum = xp.zeros((), dtype=x.dtype, device=device(x))
    correct = xp.zeros((), dtype=xp.int64, device=device(x))
    parts = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yb = y[start:stop]
        if tta:  # log p are logits whose softmax is p; the floor keeps log finite where p underflowed
            probabilities = flip_averaged_probabilities(network, x[start:stop, ...], batch_size)
            logits = xp.log(xp.maximum(probabilities, xp.finfo(x.dtype).smallest_normal))
        else:
            logits = network.logits(x[start:stop, ...])
        loss_sum = loss_sum + SoftmaxCrossEntropy().forward(logits, yb) * (stop - start)
        predicted = xp.argmax(logits, axis=1)
        correct = correct + count_correct(predicted, yb)
        if return_predictions:
            parts.append(predicted)
    metrics = (float(loss_sum) / n, int(correct) / n)
    return (*metrics, xp.concat(parts)) if return_predictions else metrics


class NonFiniteLoss(RuntimeError):
    """Training diverged (the loss is not finite, or over the divergence limit); the message
    suggests what to change."""


DIVERGENCE_FACTOR = 10.0
"""An epoch's mean training loss above this many times the untrained network's loss means the run
has diverged. The untrained loss is about ln(classes) (2.3 for CIFAR-10, a uniform guess), plus the
L2 penalty of the initial weights; ten times it means the true class gets a (geometric) mean
probability below classes**-10, far worse than guessing, which only steps that blew the weights up
produce. Adam's bounded steps keep such a loss finite, so a NaN check alone misses it."""


@dataclass
class Progress:
    """How far a run got, with what the next epoch needs to continue it exactly: the optimizer's
    state (moments or momentum buffers, on the device, and its step count), the states of the
    shuffling/augmentation, dropout and mixup generators, and the divergence limit."""

    epochs_done: int
    optimizer_state: dict[str, Array]
    optimizer_steps: int
    shuffle_rng: dict | None
    network_rng: dict | None
    loss_limit: float
    mixup_rng: list | None = None  # mixup's host generator (None without mixup, and in older checkpoints)

    def meta(self) -> dict[str, Any]:
        """Everything but the arrays, JSON-able (the checkpoint's ``progress``)."""
        out = dataclasses.asdict(self)
        del out["optimizer_state"]
        return out


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in dataclasses.asdict(self).items()}


class TrainingListener:
    """What a training run tells as it goes. Each method does nothing here: subclass it and override
    the ones you need (the command line's progress bar, the experiments' per-run history, tune's
    pruning). An exception raised in a method stops the run.

    ``batch_finished`` is called inside the batch loop, which never waits for the device: it gets host
    numbers only, and must not read a device array (``float``, ``int`` or ``to_numpy`` of one), or
    every batch would wait for the one before it to finish.
    """

    def epoch_started(self, epoch: int, lr: float) -> None:
        """Epoch ``epoch`` (counted from 0) starts, with learning rate ``lr``."""

    def batch_finished(self, done: int, total: int) -> None:
        """``done`` of the epoch's ``total`` training examples have been trained on."""

    def epoch_finished(self, record: EpochRecord, network: Network) -> None:
        """An epoch ended: its numbers (``record.epoch`` counts from 1) and the network after it.
        ``Trainer.progress`` is up to date, and ``run_training`` has written the epoch's checkpoint."""


class Listeners(TrainingListener):
    """Several listeners as one, each told in turn in the order given (``None`` entries are left out)."""

    def __init__(self, *listeners: TrainingListener | None):
        self.listeners = [listener for listener in listeners if listener is not None]

    def epoch_started(self, epoch: int, lr: float) -> None:
        for listener in self.listeners:
            listener.epoch_started(epoch, lr)

    def batch_finished(self, done: int, total: int) -> None:
        for listener in self.listeners:
            listener.batch_finished(done, total)

    def epoch_finished(self, record: EpochRecord, network: Network) -> None:
        for listener in self.listeners:
            listener.epoch_finished(record, network)


@dataclass
class Trainer:
    """Runs a :class:`TrainConfig` on a backend over host data already split and standardised,
    telling ``listener`` as it goes (the CLI prints, checkpoints and logs there)."""

    config: TrainConfig
    backend: Any
    listener: TrainingListener = field(default_factory=TrainingListener)
    history: list[EpochRecord] = field(default_factory=list)
    progress: Progress | None = None

    def fit(
        self,
        x_train,
        y_train,
        x_val,
        y_val,
        network: Network | None = None,
        n_classes: int = 10,
        resume: Progress | None = None,
    ) -> Network:
        """Train on host arrays (float32 (n, features), int64 (n,)); returns the trained network.

        With ``resume`` (the ``progress`` of an earlier run of the same config, and its ``network``
        and ``history``) training continues after its last epoch and ends as that run would have.
        ``self.progress`` is brought up to date after every epoch, before ``listener.epoch_finished``.

        Raises :class:`NonFiniteLoss` when an epoch's training loss is NaN, infinite or over
        :data:`DIVERGENCE_FACTOR` times the untrained loss. The network's weights are then those of
        the failed epoch; ``listener.epoch_finished`` is where the good ones are saved (``run_training``
        checkpoints there).
        """
        cfg, b = self.config, self.backend
        cfg.validate()  # the settings and, below, the data are checked here once, not again in each epoch
        if cfg.augment:
            check_augmentable(x_train.shape[1])
        net = network or cfg.make_network(b, x_train.shape[1], n_classes)
        # The data is only read, so on the CPU it may share the caller's memory (copy=False).
        x, y = b.asarray(x_train, cfg.dtype, copy=False), b.asarray(y_train, "int64", copy=False)
        xv, yv = b.asarray(x_val, cfg.dtype, copy=False), b.asarray(y_val, "int64", copy=False)
        check_data(net, x, y)
        check_data(net, xv, yv)
        b.set_tf32(cfg.tf32)  # every run says which precision it trains in, whatever ran before it
        optimizer, schedule, rng = cfg.make_optimizer(), cfg.make_schedule(), b.rng(cfg.seed + 1)
        mixup = cfg.make_mixup()
        n = x.shape[0]
        if resume is None:
            sample = min(n, 2000)  # the untrained loss, in evaluation mode: no random numbers drawn
            loss_limit = DIVERGENCE_FACTOR * float(net.loss(x[:sample, ...], y[:sample]))
            first_epoch = 0
        else:
            if hasattr(optimizer, "t"):  # Adam and AdamW: the step count of the bias corrections
                optimizer.load_state_dict(resume.optimizer_state, resume.optimizer_steps)
            else:
                optimizer.load_state_dict(resume.optimizer_state)
            if resume.shuffle_rng is not None:
                rng.set_state(resume.shuffle_rng)
            if resume.network_rng is not None:
                net.rng.set_state(resume.network_rng)
            if mixup is not None and resume.mixup_rng is not None:
                mixup.set_state(resume.mixup_rng)
            loss_limit, first_epoch = resume.loss_limit, resume.epochs_done
            self.progress = resume
        for epoch in range(first_epoch, cfg.epochs):
            lr = schedule(epoch)
            self.listener.epoch_started(epoch, lr)
            b.synchronize()
            started = time.perf_counter()
            loss_sum, correct = _train_epoch(
                net, optimizer, x, y, cfg.batch_size, lr, rng, cfg.augment, cfg.shift, b.gather_batches, self.listener,
                mixup,
            )  # fmt: skip
            train_loss, train_acc = float(loss_sum) / n, int(correct) / n
            b.synchronize()
            seconds = time.perf_counter() - started
            if not math.isfinite(train_loss) or train_loss > loss_limit:
                limit = f" (over {loss_limit:.3g}, {DIVERGENCE_FACTOR:g} times the untrained loss)"
                raise NonFiniteLoss(
                    f"the training loss became {train_loss:.3g}{limit if math.isfinite(train_loss) else ''} "
                    f"in epoch {epoch + 1} with learning rate {lr:.3g}; "
                    f"try a smaller learning rate (e.g. --lr {cfg.lr / 10:.3g})"
                )
            val_loss, val_acc = _evaluate(net, xv, yv)
            record = EpochRecord(epoch + 1, lr, train_loss, train_acc, val_loss, val_acc, seconds)
            self.history.append(record)
            self.progress = Progress(
                epoch + 1,
                optimizer.state_dict(),
                getattr(optimizer, "t", 0),
                rng.get_state(),
                net.rng.get_state(),
                loss_limit,
                mixup.get_state() if mixup is not None else None,
            )
            self.listener.epoch_finished(record, net)
        return net


_MOVED_TO_RUN = ("RunResult", "run_training", "load_progress")


def __getattr__(name: str) -> Any:
    """``run_training`` and the run's files moved to :mod:`fastnn.run`; ``fastnn.train.run_training``
    still works (looked up at first use: ``fastnn.run`` imports this module)."""
    if name in _MOVED_TO_RUN:
        from fastnn import run

        return getattr(run, name)
    raise AttributeError(f"module 'fastnn.train' has no attribute {name!r}")
