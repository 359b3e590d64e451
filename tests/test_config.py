"""fastnn/config.py: each numeric setting's range is written once (LIMITS); validate and the CLI use it."""

import dataclasses
import math
import re

import click
import pytest

from fastnn.config import LIMITS, Limit, TrainConfig
from fastnn_cli.train import train


def _outside(limit: Limit) -> list:
    """Values just outside the range, of the setting's own kind, and kinds it must refuse."""
    step = 1 if limit.whole else 1e-9
    values = [limit.low - step] if not limit.low_open else [limit.low]
    if limit.high is not None:
        values.append(limit.high if limit.high_open else limit.high + step)
    if limit.whole:
        values += [limit.low + 1.5, True]  # not truncated; a bool is not a count
    else:
        values += [math.nan, math.inf, "0.5"]
    return values if limit.optional else [*values, None]  # None only where the setting may be left out


def _inside(limit: Limit) -> list:
    low = limit.low + (1 if limit.whole else 1e-9) * limit.low_open
    values = [low]
    if limit.high is not None:
        values.append(limit.high - (1e-9 if limit.high_open else 0))
    return [int(v) for v in values] if limit.whole else values


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_validate_refuses_values_outside_the_limit_and_takes_those_inside(name):
    limit = LIMITS[name]
    base = TrainConfig()
    for value in _inside(limit):
        dataclasses.replace(base, **{name: value}).validate()
    for value in _outside(limit):
        with pytest.raises(ValueError, match="^" + re.escape(f"{limit.label} must be {limit.describe()}, got ")):
            dataclasses.replace(base, **{name: value}).validate()


def test_subset_none_means_every_image():
    TrainConfig(subset=None).validate()


ON_THE_COMMAND_LINE = sorted(set(LIMITS) - {"split_seed"})  # the split's seed: set from the library only


def test_every_numeric_option_of_train_has_its_limit():
    numeric = {p.name for p in train.params if isinstance(p.type, (click.IntRange, click.FloatRange))}
    assert numeric == set(ON_THE_COMMAND_LINE)


@pytest.mark.parametrize("name", ON_THE_COMMAND_LINE)
def test_the_command_line_takes_its_ranges_from_limits(name):
    option = next(p for p in train.params if p.name == name)
    limit, kind = LIMITS[name], option.type
    assert isinstance(kind, click.IntRange if limit.whole else click.FloatRange)
    bounds = (limit.low, limit.high, limit.low_open, limit.high_open)
    assert (kind.min, kind.max, kind.min_open, kind.max_open) == bounds


@pytest.mark.parametrize(
    "limit, said",
    [
        (Limit("lr", 0, low_open=True), "a finite number > 0"),
        (Limit("epochs", 1, whole=True), "a whole number >= 1"),
        (Limit("dropout", 0, 1, high_open=True), "a number in [0, 1)"),
        (Limit("shift", 0, 16, whole=True), "a whole number in [0, 16]"),
    ],
)
def test_limits_describe_themselves(limit, said):
    assert limit.describe() == said
