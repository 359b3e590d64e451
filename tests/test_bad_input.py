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
        (["--norm", "group"], "Invalid value for '--norm'"),
        (["--optimizer", "lamb"], "Invalid value for '--optimizer'"),
        (["--blocks", "-1"], "Invalid value for '--blocks'"),
        (["--blocks", "2"], "give one hidden size (e.g. --hidden 512), got [1024, 512]"),
        (["--blocks", "1", "--hidden", "64", "--dropout", "0.2"], "dropout acts in the plain MLP only"),
        (["--weight-decay", "0.1"], "weight decay is AdamW's (--optimizer adamw); adam takes L2 (--l2)"),
        (["--weight-decay", "nan", "--optimizer", "adamw"], "Invalid value for '--weight-decay'"),
        (["--label-smoothing", "1"], "Invalid value for '--label-smoothing'"),
        (["--mixup", "-0.5"], "Invalid value for '--mixup'"),
        (["--mixup", "inf"], "Invalid value for '--mixup'"),
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
        ('norm = "group"\n', "norm = 'group'"),
        ("mixup = true\n", "mixup = True: must be a number"),
        ('optimizer = "sgd"\nweight_decay = 0.1\n', "weight decay is AdamW's"),
    ],
)
def test_bad_config_files_are_refused(no_data, tmp_path, toml, message):
    config = tmp_path / "run.toml"
    config.write_text(toml)
    result = run("train", "--config", str(config), "--device", "cpu", "--out", str(tmp_path / "out"))
    assert message in one_line_error(result, 2)


@pytest.mark.parametrize("value", ["none", "None"])
def test_a_linear_model_is_asked_for_by_name(value):
    from fastnn_cli.options import SizeList

    assert SizeList().convert(value, None, None) == ()


def test_a_config_file_that_is_not_utf8_is_named(no_data, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("epochs = 2\n", encoding="utf-16")
    result = run("train", "--config", str(config), "--device", "cpu")
    assert f"{config} is not UTF-8 text; save it as UTF-8" in one_line_error(result, 2)


def _checkpoint(path, change=lambda meta: None, sizes=(3072, 3, 10)):
    from fastnn.backend import get_backend
    from fastnn.checkpoint import save
    from fastnn.config import TrainConfig
    from fastnn.network import Network

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


def _replace_member(path, name, data):
    """Rewrite the .npz at ``path`` with member ``name`` (e.g. "param/0.W.npy") holding ``data``."""
    import zipfile

    with zipfile.ZipFile(path) as old:
        members = {info.filename: old.read(info) for info in old.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w") as new:
        for member, content in members.items():
            new.writestr(member, content)


def _npy(array):
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_evaluate_names_a_checkpoint_that_is_not_a_regular_file(tmp_path):
    error = one_line_error(evaluate("/dev/null", tmp_path), 1)
    assert "/dev/null: not a checkpoint file (not a regular file); pass the model.npz" in error


def test_evaluate_refuses_a_pickled_object_array_by_name(tmp_path):
    import numpy as np

    path = _checkpoint(tmp_path / "model.npz")
    _replace_member(path, "param/0.W.npy", _npy(np.array([{"a": 1}], dtype=object)))
    error = one_line_error(evaluate(path, tmp_path), 1)
    assert "param/0.W holds pickled Python objects, which fastnn never loads" in error


def test_a_member_claiming_a_huge_shape_is_refused_before_it_is_allocated(tmp_path):
    import numpy as np

    path = _checkpoint(tmp_path / "model.npz")
    # 10**12 x 10**6 float32: NumPy would try to allocate 4 exabytes (a MemoryError traceback).
    import io

    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 10**6)})
    member.write(bytes(48))
    _replace_member(path, "param/0.W.npy", member.getvalue())
    error = one_line_error(evaluate(path, tmp_path), 1)
    assert "param/0.W claims shape (1000000000000, 1000000) but holds 48 bytes" in error


def test_an_architecture_too_large_for_its_file_is_refused_before_it_is_allocated(tmp_path):
    path = _checkpoint(tmp_path / "model.npz", sizes=(3072, 3, 10))
    import json

    import numpy as np

    with np.load(path) as archive:
        meta = json.loads(str(archive["meta"]))
    del meta["architecture"]["layers"]  # a checkpoint from before layer specs: its sizes build the network
    meta["architecture"]["sizes"] = [3072, 64, 10**12]
    _replace_member(path, "meta.npy", _npy(np.array(json.dumps(meta))))
    error = one_line_error(evaluate(path, tmp_path), 1)
    assert "damaged metadata (ValueError: the architecture needs 65,000,000,196,672 parameters and buffers, " in error
    assert "the file holds 9,259)" in error


@pytest.mark.parametrize("command", ["train", "experiments"])
def test_a_network_too_large_for_memory_is_refused_before_the_data_is_loaded(no_data, tmp_path, command):
    # 3072 x 10**9 weights need about 45 TiB to train: more than any machine running this has free.
    result = run(command, "--device", "cpu", "--hidden", "1000000000", "--out", str(tmp_path / "out"))
    error = one_line_error(result, 2)
    assert "Invalid value for '--hidden': a 3072-1000000000-10 network has 3,083,000,000,010 parameters" in error
    assert "choose smaller sizes" in error


def test_the_memory_check_uses_the_memory_free_here(no_data, tmp_path, monkeypatch):
    import fastnn_cli.options as options

    monkeypatch.setattr(options, "free_memory", lambda: 2**30)
    # 3072*1000 + 1000 + 1000*10 + 10 = 3,083,010 parameters, 47 MiB: fits; 100 times wider does not.
    assert options.check_network_fits(None, None, (1000,)) == (1000,)
    config = tmp_path / "run.toml"
    config.write_text("hidden = [100000]\n")
    error = one_line_error(run("train", "--config", str(config), "--device", "cpu"), 2)
    assert "needs about 4.6 GiB to train, more than the 1.0 GiB free here" in error


@pytest.mark.parametrize(
    "args, message",
    [
        (["--study", "norm,dropout"], "unknown 'dropout'; choose from norm, smoothing, mixup, adamw"),
        (["--mixup-study", "0"], "Invalid value for '--mixup-study'"),
        (["--norm-study", "none"], "Invalid value for '--norm-study'"),
    ],
)
def test_bad_study_options_are_refused_before_the_data_is_loaded(no_data, tmp_path, args, message):
    result = run("experiments", "--device", "cpu", "--out", str(tmp_path / "out"), *args)
    assert message in one_line_error(result, 2)
