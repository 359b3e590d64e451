"""The techniques beyond the assignment as the product offers them: --norm, --blocks, AdamW, label
smoothing, mixup and test-time flips, from the command line and TOML to training, checkpoint and
``fastnn evaluate``. Their math is tested in test_layers, test_losses, test_optimizers, test_augment."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from _util import printed_test_accuracy, synthetic_split
from click.testing import CliRunner

from fastnn.augment import hflip
from fastnn.backend import get_backend
from fastnn.checkpoint import load
from fastnn.config import TrainConfig
from fastnn.layers import BatchNorm, LayerNorm, Residual
from fastnn.losses import softmax
from fastnn.network import Network
from fastnn.optimizers import AdamW
from fastnn.run import run_training
from fastnn.train import evaluate
from fastnn_cli.main import cli

RECIPES = Path(__file__).parent.parent / "recipes"
# the plain network the techniques are compared with (BatchNorm and label smoothing are defaults now)
SMALL = TrainConfig(hidden=(32,), epochs=3, batch_size=32, validation=60, augment=False, norm="none",
                    label_smoothing=0.0)


def _images():
    """Three classes in rows of CIFAR-10's 3072 values, small enough for seconds; the centres are
    close enough (about 15 noise standard deviations apart) that the training loss stays above 0."""
    split = synthetic_split(n_train=300, n_val=60, n_test=90, features=3072)
    for part in ("x_train", "x_val", "x_test"):
        x = getattr(split, part)
        setattr(split, part, (x - np.mean(x, axis=0)) * 0.1 + np.random.default_rng(1).normal(size=x.shape))
    return split


@pytest.fixture
def images(monkeypatch):
    """``fastnn train`` and ``fastnn evaluate`` load this split instead of CIFAR-10."""
    import fastnn_cli.evaluate as evaluate_command
    import fastnn_cli.train as train_command

    split = _images()
    for module in (train_command, evaluate_command):
        monkeypatch.setattr(module, "load_split", lambda *args: split)
    return split


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _layer_types(network):
    return [type(layer).__name__ for _, layer in network.named_layers()]


def test_without_norm_or_blocks_the_network_is_the_plain_one_with_the_same_weights():
    """Recipes without the newer layers (``--norm none``, the default before BatchNorm) train the
    network they always did: same layers, same initial weights."""
    backend = get_backend("cpu")
    network = TrainConfig(norm="none").make_network(backend, 3072, 10)
    plain = Network([3072, 1024, 512, 10], "relu", backend=backend, seed=0)
    assert "sizes" in network.architecture() and _layer_types(network) == _layer_types(plain)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(network.parameters(), plain.parameters()))


@pytest.mark.parametrize(
    "changes, layers",
    [
        ({"norm": "batch"}, ["Dense", "BatchNorm", "ReLU", "Dense"]),
        ({"norm": "layer", "activation": "gelu", "dropout": 0.1}, ["Dense", "LayerNorm", "GELU", "Dropout", "Dense"]),
        ({"blocks": 2, "expansion": 2, "norm": "layer", "activation": "gelu"},
         ["Dense"] + ["Residual", "LayerNorm", "Dense", "GELU", "Dense"] * 2 + ["Dense"]),
        ({"blocks": 1}, ["Dense", "Residual", "Dense", "ReLU", "Dense", "Dense"]),
    ],
)  # fmt: skip
def test_make_network_builds_the_layers_asked_for(changes, layers):
    network = dataclasses.replace(SMALL, **changes).make_network(get_backend("cpu"), 3072, 3)
    assert _layer_types(network) == layers
    if changes.get("blocks"):
        assert network.layers[1].body[-1].n_in == 32 * changes.get("expansion", 4)


@pytest.mark.parametrize(
    "changes",
    [
        {"norm": "batch"},
        {"norm": "layer"},
        {"blocks": 2, "norm": "layer", "activation": "gelu"},
        {"optimizer": "adamw", "weight_decay": 0.05},
        {"label_smoothing": 0.2},
        {"mixup": 0.4},
    ],
    ids=["batchnorm", "layernorm", "bottleneck", "adamw", "smoothing", "mixup"],
)
def test_each_technique_trains_a_small_network(changes):
    """A few epochs on three classes: each technique learns them (chance is 1/3), and changes the
    training. (Test-time flips change only the test: see the tests below.)"""
    config = dataclasses.replace(SMALL, **changes)
    result = run_training(config, _images(), get_backend("cpu"))
    plain = run_training(SMALL, _images(), get_backend("cpu"))
    assert result.test_accuracy > 0.7, result.history
    assert result.history[-1].train_loss != plain.history[-1].train_loss


def test_adamw_is_built_with_its_weight_decay_and_l2_stays_in_the_loss():
    optimizer = TrainConfig(optimizer="adamw", weight_decay=0.02).make_optimizer()
    assert isinstance(optimizer, AdamW) and optimizer.weight_decay == 0.02
    assert TrainConfig(label_smoothing=0.3).make_network(get_backend("cpu"), 8, 3).loss_fn.label_smoothing == 0.3


def test_tta_averages_the_probabilities_of_each_image_and_its_mirror(backend):
    rng = np.random.default_rng(0)
    network = Network([3072, 16, 10], backend=backend, seed=1)
    x = backend.asarray(rng.normal(size=(50, 3072)), "float32")
    y = backend.asarray(rng.integers(0, 10, 50), "int64")
    loss, accuracy = evaluate(network, x, y, batch_size=20, tta=True)
    p = 0.5 * (backend.to_numpy(softmax(network.logits(x))) + backend.to_numpy(softmax(network.logits(hflip(x)))))
    labels = backend.to_numpy(y)
    assert accuracy == np.mean(p.argmax(axis=1) == labels)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(50), labels])), rel=1e-5)
    assert (loss, accuracy) != evaluate(network, x, y, batch_size=20)


def test_new_settings_round_trip_through_a_saved_config():
    config = TrainConfig(hidden=(64,), norm="batch", blocks=2, expansion=2, optimizer="adamw", weight_decay=0.01,
                         label_smoothing=0.1, mixup=0.8, tta=True)  # fmt: skip
    assert TrainConfig.from_dict(config.to_dict()) == config
    before = dict(norm="none", label_smoothing=0.0)  # defaults now, off before they existed
    old = {k: v for k, v in TrainConfig(**before).to_dict().items() if k not in ("norm", "blocks", "mixup", "tta",
                                                                                "label_smoothing")}
    assert TrainConfig.from_saved(old) == TrainConfig(**before)  # a checkpoint from before these settings
    assert TrainConfig.from_dict(old) == TrainConfig()  # a file of settings: what it lacks takes today's default
    with pytest.raises(ValueError, match="norm"):
        TrainConfig.from_dict({**config.to_dict(), "norm": 1})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"optimizer": "lamb"}, "unknown optimizer 'lamb'; choose sgd, adam, adamw"),
        ({"schedule": "linear"}, "choose none, exp, step, cosine"),
        ({"activation": "swish"}, "choose relu, leaky_relu, sigmoid, tanh, gelu"),
        ({"norm": "group"}, "unknown norm 'group'"),
        ({"blocks": 2}, "give one hidden size"),
        ({"blocks": 2, "hidden": (8,), "dropout": 0.5}, "dropout acts in the plain MLP only"),
        ({"weight_decay": 0.1}, "weight decay is AdamW's"),
        ({"label_smoothing": 1.0}, "label smoothing must be a number in [0, 1), got 1.0"),
        ({"mixup": float("nan")}, "mixup alpha must be a finite number >= 0, got nan"),
    ],
)
def test_validate_refuses_what_does_not_go_together(changes, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(TrainConfig(), **changes).validate()


def test_toml_config_sets_the_new_options_and_the_command_line_wins(images, tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text(
        '[train]\nhidden = [32]\nnorm = "layer"\nblocks = 1\nexpansion = 2\nactivation = "gelu"\n'
        'optimizer = "adamw"\nweight_decay = 0.01\nlabel_smoothing = 0.1\nmixup = 0.2\ntta = true\n'
        "epochs = 1\nbatch_size = 32\nvalidation = 60\naugment = false\n"
    )
    out = tmp_path / "run"
    result = run("train", "--config", config_file, "--mixup", "0.5", "--device", "cpu", "--out", out)
    assert result.exit_code == 0, result.output
    network, meta = load(out / "model.npz", get_backend("cpu"))
    assert TrainConfig.from_dict(meta["config"]) == dataclasses.replace(
        SMALL, hidden=(32,), norm="layer", blocks=1, expansion=2, activation="gelu", optimizer="adamw",
        weight_decay=0.01, label_smoothing=0.1, mixup=0.5, tta=True, epochs=1, device="cpu",
    )  # fmt: skip
    assert isinstance(network.layers[1], Residual) and isinstance(network.layers[1].body[0], LayerNorm)


def test_toml_config_refuses_a_bad_value_of_a_new_option(images, tmp_path):
    config_file = tmp_path / "run.toml"
    config_file.write_text('norm = "group"\n')
    result = run("train", "--config", config_file, "--device", "cpu", "--out", tmp_path / "run")
    assert result.exit_code == 2 and "norm = 'group'" in result.output and "Traceback" not in result.output


def test_recipes_are_valid_configs(images, tmp_path):
    """Each training recipe in recipes/ runs (one epoch here, on the small split) with the settings it
    names; space.toml is a search space for `fastnn tune`, tested in tests/test_tune.py."""
    recipes = sorted(path for path in RECIPES.glob("*.toml") if path.name != "space.toml")
    assert recipes
    for recipe in recipes:
        out = tmp_path / recipe.stem
        result = run("train", "--config", recipe, "--epochs", "1", "--device", "cpu", "--out", out)
        assert result.exit_code == 0, result.output
        assert (out / "model.npz").is_file()


def test_a_bottleneck_network_with_batchnorm_round_trips_through_evaluate(images, tmp_path):
    """Its layers, weights and running statistics are saved, and ``fastnn evaluate`` measures what
    training measured; --tta follows the run's setting unless given."""
    out = tmp_path / "run"
    args = ["--hidden", "32", "--blocks", "2", "--norm", "batch", "--epochs", "2", "--batch-size", "32",
            "--validation", "60", "--no-augment", "--tta", "--device", "cpu", "--out", out]  # fmt: skip
    trained = run("train", *args)
    assert trained.exit_code == 0, trained.output
    network, _ = load(out / "model.npz", get_backend("cpu"))
    norms = [layer for _, layer in network.named_layers() if isinstance(layer, BatchNorm)]
    assert len(norms) == 2 and not np.allclose(norms[0].buffers["running_mean"], 0.0)
    again = run("evaluate", out / "model.npz", "--device", "cpu")
    assert again.exit_code == 0, again.output
    assert printed_test_accuracy(again.output) == printed_test_accuracy(trained.output)
    plain = run("evaluate", out / "model.npz", "--device", "cpu", "--no-tta")
    assert plain.exit_code == 0, plain.output
    loss = [float(line.split("test loss ")[1].split()[0].rstrip(",")) for line in (again.output, plain.output)]
    assert loss[0] != loss[1]
