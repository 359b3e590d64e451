"""The options of ``fastnn train``, which ``fastnn experiments`` takes too: their declarations, the
checks made where each value enters (click types, ranges, the memory a network needs, the split
sizes, the --out folder), the --config TOML file read into them, and the TrainConfig they make.

Each choice list comes from the library's registries (``ACTIVATIONS``, ``OPTIMIZERS``,
``SCHEDULES``, ``NORMS``) and each default from ``TrainConfig()``, so a new activation, optimizer or
schedule appears here without an edit.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import click

from fastnn.config import LIMITS, NORMS, TrainConfig
from fastnn.data.cifar10 import CLASS_NAMES, IMAGES_PER_BATCH, PIXELS, TRAIN_BATCHES, SplitError, check_split
from fastnn.layers import ACTIVATIONS
from fastnn.optimizers import OPTIMIZERS
from fastnn.schedules import SCHEDULES
from fastnn_cli.common import data_dir_option

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


class FiniteRange(click.FloatRange):
    """click's FloatRange, refusing nan and inf too (nan passes every comparison of a plain range)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number", param, ctx)
        return number


def limited(name: str) -> click.ParamType:
    """The option type of a numeric setting, made from its range in ``fastnn.config.LIMITS`` (where
    ``TrainConfig.validate`` reads it too), so that --help and the error say what the library checks."""
    limit = LIMITS[name]
    kind = click.IntRange if limit.whole else FiniteRange
    return kind(limit.low, limit.high, min_open=limit.low_open, max_open=limit.high_open)


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
            type=limited("blocks"),
            default=DEFAULTS.blocks,
            show_default=True,
            help="Residual bottleneck blocks (Bachmann et al. 2023) of the width given by --hidden (one size): "
            "x + Dense(Act(Dense(Norm(x)))); 0 for the plain MLP.",
        ),
        click.option(
            "--expansion",
            type=limited("expansion"),
            default=DEFAULTS.expansion,
            show_default=True,
            help="Width factor inside each block (--blocks).",
        ),
        click.option(
            "--optimizer", type=click.Choice(list(OPTIMIZERS)), default=DEFAULTS.optimizer, show_default=True
        ),
        click.option(
            "--weight-decay",
            type=limited("weight_decay"),
            default=DEFAULTS.weight_decay,
            show_default=True,
            help="AdamW's decoupled weight decay (--optimizer adamw): p <- p - lr * wd * p for weight matrices.",
        ),
        click.option(
            "--lr",
            type=limited("lr"),
            default=DEFAULTS.lr,
            show_default=True,
            help="Initial learning rate.",
        ),
        click.option(
            "--momentum",
            type=limited("momentum"),
            default=DEFAULTS.momentum,
            show_default=True,
            help="SGD momentum (0 for plain SGD).",
        ),
        click.option("--nesterov/--no-nesterov", default=DEFAULTS.nesterov, show_default=True),
        click.option(
            "--l2",
            type=limited("l2"),
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
            type=limited("decay"),
            default=DEFAULTS.decay,
            show_default=True,
            help="k of the exponential schedule.",
        ),
        click.option(
            "--step-size",
            type=limited("step_size"),
            default=DEFAULTS.step_size,
            show_default=True,
            help="Epochs between drops of the step schedule.",
        ),
        click.option(
            "--gamma",
            type=limited("gamma"),
            default=DEFAULTS.gamma,
            show_default=True,
            help="Factor of each drop of the step schedule.",
        ),
        click.option(
            "--warmup",
            type=limited("warmup"),
            default=DEFAULTS.warmup,
            show_default=True,
            help="Epochs of linear learning-rate warm-up.",
        ),
        click.option("--epochs", type=limited("epochs"), default=DEFAULTS.epochs, show_default=True),
        click.option("--batch-size", type=limited("batch_size"), default=DEFAULTS.batch_size, show_default=True),
        click.option(
            "--dropout",
            type=limited("dropout"),
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
            type=limited("shift"),
            default=DEFAULTS.shift,
            show_default=True,
            help="Largest random shift in pixels, with --augment (the image is padded with the mean colour).",
        ),
        click.option(
            "--label-smoothing",
            type=limited("label_smoothing"),
            default=DEFAULTS.label_smoothing,
            show_default=True,
            help="Training targets (1 - eps) * onehot + eps / classes.",
        ),
        click.option(
            "--mixup",
            type=limited("mixup"),
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
            type=limited("seed"),
            default=DEFAULTS.seed,
            show_default=True,
            help="Seed of initialisation, shuffling and dropout.",
        ),
        click.option(
            "--validation",
            type=limited("validation"),
            default=DEFAULTS.validation,
            show_default=True,
            help="Training images held out for validation.",
        ),
        click.option(
            "--subset",
            type=limited("subset"),
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
