"""Bad input to the commands and the files they read: a one-line error naming the problem and the
fix, exit code 2 for usage errors and 1 for runtime errors, never a traceback."""

import pytest
from click.testing import CliRunner

from fastnn_cli.main import cli


def run(*args, **kwargs):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kwargs)


def one_line_error(result, code):
    """The error part of the output: one line starting 'Error:' (click may print usage lines above it)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    error = result.output[result.output.index("Error:"):]
    return " ".join(error.split())


@pytest.fixture
def no_data(monkeypatch):
    """Loading the data fails the test: the values below are refused before it."""
    import fastnn_cli.experiments as experiments_command
    import fastnn_cli.train as train_command

    def load_split(*args):
        raise AssertionError("the data was loaded before the bad value was refused")

    monkeypatch.setattr(train_command, "load_split", load_split)
    monkeypatch.setattr(experiments_command, "load_split", load_split)


@pytest.mark.parametrize("command", ["train", "experiments"])
@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "Invalid value for '--seed'"),
        (["--hidden", ""], "give at least one hidden layer size"),
        (["--hidden", " , "], "an empty layer size"),
        (["--hidden", "64,,32"], "'64,,32' has an empty layer size between commas"),
        (["--hidden", "64,"], "has an empty layer size"),
    ],
)
def test_bad_options_are_refused_before_the_data_is_loaded(no_data, tmp_path, command, args, message):
    result = run(command, "--device", "cpu", "--out", str(tmp_path / "out"), *args)
    assert message in one_line_error(result, 2)


@pytest.mark.parametrize("option", ["--adam-lrs", "--sgd-lrs"])
@pytest.mark.parametrize("value", ["inf", "1e-3,nan", "-inf", "1e-3,,1e-2"])
def test_experiment_learning_rates_must_be_finite(no_data, tmp_path, option, value):
    result = run("experiments", "--device", "cpu", option, value, "--out", str(tmp_path))
    assert f"Invalid value for '{option}'" in one_line_error(result, 2)


@pytest.mark.parametrize(
    "toml, message",
    [
        ("hidden = []\n", "give at least one hidden layer size"),
        ('hidden = "64,,32"\n', "has an empty layer size"),
        ("seed = -1\n", "seed = -1"),
        ("lr = 0.1\n[train]\nepochs = 2\n", "lr outside the [train] table; move them into it"),
        ("lrr = 0.1\n[train]\nepochs = 2\n", "lrr outside the [train] table"),
    ],
)
def test_bad_config_files_are_refused(no_data, tmp_path, toml, message):
    config = tmp_path / "run.toml"
    config.write_text(toml)
    result = run("train", "--config", str(config), "--device", "cpu", "--out", str(tmp_path / "out"))
    assert message in one_line_error(result, 2)


def test_a_config_file_that_is_not_utf8_is_named(no_data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("epochs = 2\n", encoding="utf-16")
    result = run("train", "--config", str(config), "--device", "cpu")
    assert f"{config} is not UTF-8 text; save it as UTF-8" in one_line_error(result, 2)


def _checkpoint(path, change=lambda meta: None, sizes=(3072, 3, 10)):
    from fastnn.backend import get_backend
    from fastnn.checkpoint import save
    from fastnn.network import Network
    from fastnn.train import TrainConfig

    meta = {
        "config": TrainConfig(hidden=tuple(sizes[1:-1])).to_dict(),
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "results": {"test_accuracy": 0.5},
        "class_names": [str(i) for i in range(10)],
    }
    change(meta)
    save(path, Network(list(sizes), "relu", backend=get_backend("cpu"), seed=0), meta)
    return path


def evaluate(path, tmp_path):
    return run("evaluate", str(path), "--device", "cpu", "--data-dir", str(tmp_path / "no-data"))


@pytest.mark.parametrize(
    "setting, value",
    [("validation", "5000"), ("subset", 1.5), ("split_seed", "x"), ("split_seed", -1), ("hidden", ["3"]),
     ("epochs", True), ("lr", "0.1"), ("dropout", 1.5), ("validation", None)],
)
def test_evaluate_names_a_checkpoint_setting_of_the_wrong_kind(tmp_path, setting, value):
    path = _checkpoint(tmp_path / "model.npz", lambda meta: meta["config"].update({setting: value}))
    error = one_line_error(evaluate(path, tmp_path), 1)
    assert error.startswith(f"Error: {path}: a fastnn checkpoint with damaged metadata (ValueError: ")
