"""``fastnn train``: train a network on CIFAR-10 and write its checkpoint and metrics."""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import click
from rich.markup import escape

from fastnn.data.cifar10 import CLASS_NAMES, IMAGES_PER_BATCH, PIXELS, TRAIN_BATCHES, SplitError, check_split
from fastnn.layers import ACTIVATIONS
from fastnn.optimizers import OPTIMIZERS
from fastnn.schedules import SCHEDULES
from fastnn.tensorboard import TensorBoardLogger
from fastnn.train import NORMS, NonFiniteLoss, TrainConfig, run_training
from fastnn_cli.common import (
    TrainingDisplay,
    console,
    data_dir_option,
    err_console,
    load_split,
    note_ignored_options,
    resolve_backend,
)
from fastnn_cli.tensorboard import check_tensorboard, tensorboard_option

DEFAULTS = TrainConfig()


class SizeList(click.ParamType):
    """Comma-separated positive integers, e.g. ``1024,512``, or ``none`` for no hidden layer (a linear model)."""

    name = "SIZES"

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if str(value).strip().lower() == "none":
            return ()
        parts = [part.strip() for part in str(value).split(",")]
        if parts == [""]:  # a linear model is a choice too rare to make silently, from a blank value
            self.fail("give at least one hidden layer size (e.g. 1024,512), or 'none' for a linear model", param, ctx)
        if "" in parts:
            self.fail(f"{value!r} has an empty layer size between commas (e.g. 1024,512)", param, ctx)
        try:
            sizes = tuple(int(part) for part in parts)
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of layer sizes (e.g. 1024,512)", param, ctx)
        if any(s < 1 for s in sizes):
            self.fail(f"layer sizes must be positive, got {value!r}", param, ctx)
        return sizes


BYTES_PER_PARAMETER = 16
"""What training keeps per parameter: float32 weights, gradients and Adam's two moments."""


def free_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_network_fits(ctx: click.Context, param: click.Parameter, hidden: tuple[int, ...]) -> tuple[int, ...]:
    """Refuse hidden sizes whose network cannot fit in memory, before anything is loaded or allocated:
    a MemoryError traceback would come only after the data had loaded."""
    sizes = (PIXELS, *hidden, len(CLASS_NAMES))
    parameters = sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:]))
    needed, free = parameters * BYTES_PER_PARAMETER, free_memory()
    if free is not None and needed > free:
        raise click.BadParameter(
            f"a {'-'.join(map(str, sizes))} network has {parameters:,} parameters and needs about "
            f"{needed / 2**30:,.1f} GiB to train, more than the {free / 2**30:,.1f} GiB free here; "
            "choose smaller sizes",
            ctx=ctx,
            param=param,
        )
    return hidden


class Interrupted(click.ClickException):
    """Ctrl-C during training: one line saying what was kept, and the shell's exit code for SIGINT."""

    exit_code = 130


class FiniteRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf too (nan passes every comparison of a plain range)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


def check_split_sizes(validation: int, subset: int | None) -> None:
    """Refuse --validation and --subset values that CIFAR-10 cannot give, before any data is loaded."""
    try:
        check_split(validation, subset, len(TRAIN_BATCHES) * IMAGES_PER_BATCH)
    except SplitError as exc:
        raise click.BadParameter(exc.detail, param_hint=f"'--{exc.option}'") from exc


def check_out_dir(path: Path) -> None:
    """Make the output folder and make sure files can be written there, before any data is loaded or
    any epoch is trained: a wrong --out is a usage error at once, not a traceback after an epoch."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise click.BadParameter(f"cannot write to {path}: {reason}", param_hint="'--out'") from exc


def _config_names(command: click.Command) -> dict[str, click.Parameter]:
    """TOML keys a config file may use: each option's long name without dashes (``batch_size``,
    ``out``), and the name it has in the code (``out_dir``); dashes may be underscores."""
    names = {}
    for option in command.params:
        if option.name == "config" or not isinstance(option, click.Option):
            continue
        names[option.name] = option
        for flag in option.opts:
            if flag.startswith("--"):
                names[flag[2:].replace("-", "_")] = option
    return names


def _config_value_problem(ctx: click.Context, option: click.Option, value) -> str | None:
    """Why a TOML value does not suit ``option`` (None when it does): click converts defaults as it
    does typed text, which lets ``1.7`` through as the integer 1 and fails with a traceback on lists
    where a number belongs."""
    if option.is_flag:
        return None if isinstance(value, bool) else "must be true or false"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(option.type, click.types.IntParamType) and not (number and isinstance(value, int)):
        return "must be a whole number"
    if isinstance(option.type, click.types.FloatParamType) and not number:
        return "must be a number"
    try:
        option.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        return exc.message
    except (TypeError, ValueError, AttributeError):
        return f"not a value for --{option.name.replace('_', '-')}"
    return None


def load_config_file(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    """Read a TOML file of option values into the defaults, so that command-line options win."""
    if not path:
        return path
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path} is not UTF-8 text; save it as UTF-8", ctx=ctx, param=param) from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", ctx=ctx, param=param) from exc
    if "train" in values:
        outside = sorted(key for key in values if key != "train")
        if outside:
            raise click.BadParameter(
                f"{path}: {', '.join(outside)} outside the [train] table; move them into it", ctx=ctx, param=param
            )
        values = values["train"]
    if not isinstance(values, dict):
        raise click.BadParameter(f"{path}: [train] must be a table of option values", ctx=ctx, param=param)
    names = _config_names(ctx.command)
    unknown = sorted(key for key in values if key.replace("-", "_") not in names)
    if unknown:
        raise click.BadParameter(f"{path}: unknown setting(s) {', '.join(unknown)}", ctx=ctx, param=param)
    defaults = {}
    for key, value in values.items():
        option = names[key.replace("-", "_")]
        problem = _config_value_problem(ctx, option, value)
        if problem:
            raise click.BadParameter(f"{path}: {key} = {value!r}: {problem}", ctx=ctx, param=param)
        defaults[option.name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


def training_options(command):
    """The options that make a :class:`TrainConfig` (shared with ``fastnn experiments``)."""
    options = [
        click.option(
            "--device",
            type=click.Choice(["auto", "cpu", "gpu"]),
            default=DEFAULTS.device,
            show_default=True,
            help="Where to train; auto uses a GPU when CuPy finds one.",
        ),
        click.option(
            "--hidden",
            type=SizeList(),
            callback=check_network_fits,
            default=",".join(map(str, DEFAULTS.hidden)),
            show_default=True,
            help="Hidden layer sizes, comma-separated; none for a linear model.",
        ),
        click.option(
            "--activation",
            type=click.Choice(list(ACTIVATIONS)),
            default=DEFAULTS.activation,
            show_default=True,
        ),
        click.option(
            "--norm",
            type=click.Choice(list(NORMS)),
            default=DEFAULTS.norm,
            show_default=True,
            help="Normalization after each hidden Dense layer, before its activation (with --blocks: at the "
            "start of each block).",
        ),
        click.option(
            "--blocks",
            type=click.IntRange(min=0),
            default=DEFAULTS.blocks,
            show_default=True,
            help="Residual bottleneck blocks (Bachmann et al. 2023) of the width given by --hidden (one size): "
            "x + Dense(Act(Dense(Norm(x)))); 0 for the plain MLP.",
        ),
        click.option(
            "--expansion",
            type=click.IntRange(min=1),
            default=DEFAULTS.expansion,
            show_default=True,
            help="Width factor inside each block (--blocks).",
        ),
        click.option(
            "--optimizer", type=click.Choice(list(OPTIMIZERS)), default=DEFAULTS.optimizer, show_default=True
        ),
        click.option(
            "--weight-decay",
            type=FiniteRange(min=0),
            default=DEFAULTS.weight_decay,
            show_default=True,
            help="AdamW's decoupled weight decay (--optimizer adamw): p <- p - lr * wd * p for weight matrices.",
        ),
        click.option(
            "--lr",
            type=FiniteRange(min=0, min_open=True),
            default=DEFAULTS.lr,
            show_default=True,
            help="Initial learning rate.",
        ),
        click.option(
            "--momentum",
            type=FiniteRange(0, 1, max_open=True),
            default=DEFAULTS.momentum,
            show_default=True,
            help="SGD momentum (0 for plain SGD).",
        ),
        click.option("--nesterov/--no-nesterov", default=DEFAULTS.nesterov, show_default=True),
        click.option(
            "--l2",
            type=FiniteRange(min=0),
            default=DEFAULTS.l2,
            show_default=True,
            help="L2 strength lambda: adds lambda/2 * ||W||^2 to the loss.",
        ),
        click.option(
            "--schedule",
            type=click.Choice(list(SCHEDULES)),
            default=DEFAULTS.schedule,
            show_default=True,
            help="Learning-rate schedule; exp is eta * exp(-k t), t = epoch.",
        ),
        click.option(
            "--decay",
            type=FiniteRange(min=0),
            default=DEFAULTS.decay,
            show_default=True,
            help="k of the exponential schedule.",
        ),
        click.option(
            "--step-size",
            type=click.IntRange(min=1),
            default=DEFAULTS.step_size,
            show_default=True,
            help="Epochs between drops of the step schedule.",
        ),
        click.option(
            "--gamma",
            type=FiniteRange(0, 1, min_open=True),
            default=DEFAULTS.gamma,
            show_default=True,
            help="Factor of each drop of the step schedule.",
        ),
        click.option(
            "--warmup",
            type=click.IntRange(min=0),
            default=DEFAULTS.warmup,
            show_default=True,
            help="Epochs of linear learning-rate warm-up.",
        ),
        click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULTS.batch_size, show_default=True),
        click.option(
            "--dropout",
            type=FiniteRange(0, 1, max_open=True),
            default=DEFAULTS.dropout,
            show_default=True,
            help="Dropout probability after each hidden layer.",
        ),
        click.option(
            "--augment/--no-augment",
            default=DEFAULTS.augment,
            show_default=True,
            help="Random flips and shifts of the training images, on the device.",
        ),
        click.option(
            "--shift",
            type=click.IntRange(0, 16),
            default=DEFAULTS.shift,
            show_default=True,
            help="Largest random shift in pixels, with --augment (the image is padded with the mean colour).",
        ),
        click.option(
            "--label-smoothing",
            type=FiniteRange(0, 1, max_open=True),
            default=DEFAULTS.label_smoothing,
            show_default=True,
            help="Training targets (1 - eps) * onehot + eps / classes.",
        ),
        click.option(
            "--mixup",
            type=FiniteRange(min=0),
            default=DEFAULTS.mixup,
            show_default=True,
            help="Mixup alpha: each batch blended with a shuffled copy of itself, lam ~ Beta(alpha, alpha); "
            "0 for none.",
        ),
        click.option(
            "--tta/--no-tta",
            default=DEFAULTS.tta,
            show_default=True,
            help="Test-time augmentation: average the predictions of each test image and its mirror image.",
        ),
        click.option(
            "--seed",
            type=click.IntRange(min=0),
            default=DEFAULTS.seed,
            show_default=True,
            help="Seed of initialisation, shuffling and dropout.",
        ),
        click.option(
            "--validation",
            type=click.IntRange(min=0),
            default=DEFAULTS.validation,
            show_default=True,
            help="Training images held out for validation.",
        ),
        click.option(
            "--subset",
            type=click.IntRange(min=1),
            default=None,
            help="Train on only the first N training images (quick runs).",
        ),
        click.option(
            "--tf32/--no-tf32",
            default=DEFAULTS.tf32,
            show_default=True,
            help="On NVIDIA GPUs (Ampere and newer), float32 matrix products on TensorFloat-32 tensor cores: "
            "inputs rounded to 10 mantissa bits, faster, slightly less precise (see bench/results/README.md). "
            "No effect on the CPU.",
        ),
        data_dir_option,
        click.option(
            "--config",
            type=click.Path(dir_okay=False),
            callback=load_config_file,
            is_eager=True,
            expose_value=False,
            help="TOML file of these options; command-line options win.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def config_from_options(options: dict) -> TrainConfig:
    """The options' TrainConfig; settings that do not go together (e.g. --weight-decay without
    --optimizer adamw) are a usage error here, before any data is loaded."""
    names = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig(**{k: v for k, v in options.items() if k in names})
    try:
        config.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    return config


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

    def epoch_end(record, network):
        finished.append(record.epoch)
        display.epoch_end(record, network)
        if board:
            board.epoch(record, network)

    with TrainingDisplay(config.epochs) as display:
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # a blow-up is reported below
                result = run_training(
                    config,
                    split,
                    backend,
                    str(out),
                    on_epoch=epoch_end,
                    on_batch=display.batch,
                    on_epoch_start=display.epoch_start,
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
