"""fastnn inspect: the pictures show what the network holds, and the numbers are evaluate's.

A tiny CIFAR-shaped data set (300 training, 100 test images) stands in for the real one: the
commands' data loading is replaced by ``prepare`` of it, with the checkpoint's split settings.
"""

import io
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import fastnn_cli.evaluate as evaluate_module
from fastnn import checkpoint
from fastnn.backend import get_backend
from fastnn.config import TrainConfig
from fastnn.data.cifar10 import CLASS_NAMES, Cifar10Raw, prepare
from fastnn.inspect import (
    DPI,
    FIGSIZE,
    GAP,
    SIDE,
    as_images,
    class_probabilities,
    inspection_files,
    read_metrics,
    weight_tiles,
)
from fastnn.run import run_training
from fastnn_cli.main import cli

pytest.importorskip("matplotlib")


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def raw():
    """Ten classes, each its own colour under noise, so that a short run learns something."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 156, size=(10, 3))

    def part(n):
        labels = rng.integers(0, 10, n)
        pixels = rng.integers(0, 100, (n, 3, 1024)) + colours[labels][:, :, None]
        return pixels.reshape(n, 3072).astype(np.uint8), labels.astype(np.int64)

    (x_train, y_train), (x_test, y_test) = part(300), part(100)
    return Cifar10Raw(x_train, y_train, x_test, y_test, CLASS_NAMES)


@pytest.fixture(autouse=True)
def tiny_data(raw, monkeypatch):
    """`fastnn evaluate` and `fastnn inspect` load the tiny data set, split as the checkpoint says."""
    monkeypatch.setattr(evaluate_module, "load_split", lambda data_dir, *split: prepare(raw, *split))


def train(raw, folder, hidden=(20,), epochs=2):
    config = TrainConfig(hidden=hidden, epochs=epochs, validation=50, batch_size=50, augment=False, device="cpu")
    run_training(config, prepare(raw, config.validation, config.split_seed), get_backend("cpu"), str(folder))
    return folder / "model.npz"


def known_images(n=10, seed=1):
    """(n, 32, 32, 3) uint8 images, each with pixels 0 and 255, so that its own range is all of 0..255."""
    images = np.random.default_rng(seed).integers(0, 256, (n, SIDE, SIDE, 3)).astype(np.uint8)
    images[:, 0, 0, 0], images[:, 0, 1, 1] = 0, 255
    return images


def tile(picture, k, columns):
    top, left = (k // columns) * (SIDE + GAP), (k % columns) * (SIDE + GAP)
    return picture[top : top + SIDE, left : left + SIDE]


def read_png(data):
    from matplotlib.image import imread

    return np.rint(imread(io.BytesIO(data), format="png") * 255).astype(np.uint8)


def inspect_files(model, backend):
    """What `fastnn inspect` renders, on any backend (the command offers cpu and gpu only)."""
    measured = evaluate_module.measure(str(model), backend, None)
    x_test = backend.asarray(measured.split.x_test, measured.config.dtype)
    probabilities = class_probabilities(measured.network, x_test)
    rows, note = read_metrics(model.parent / "metrics.jsonl")
    return inspection_files(measured.network, measured, probabilities, rows, note, "test")


def test_class_templates_give_back_the_images_they_were_set_to(raw, tmp_path, backend):
    """A network without hidden layers whose weights of class k are image k (scaled by its own
    positive factor, shifted by its own offset) draws image k, pixel for pixel, in class order."""
    model = train(raw, tmp_path, hidden=(), epochs=1)
    network, meta = checkpoint.load(model, get_backend("cpu"))
    images = known_images()
    rows = images.transpose(0, 3, 1, 2).reshape(10, 3072).astype(np.float64) / 255
    rng = np.random.default_rng(2)
    weights = rows.T * rng.uniform(0.01, 2, 10) + rng.normal(size=10)
    network.load_state_dict({"0.W": weights.astype(np.float32), "0.b": np.zeros(10, np.float32)})
    checkpoint.save(model, network, {k: v for k, v in meta.items() if k not in ("format", "architecture")})

    files = inspect_files(model, backend)
    view = json.loads(files["inspect.json"])
    assert view["templates"] and view["unit_order"] == list(range(10))
    picture = read_png(files["weights.png"])
    assert picture.shape == (2 * (SIDE + GAP) - GAP, 5 * (SIDE + GAP) - GAP, 3)
    for k in range(10):
        np.testing.assert_array_equal(tile(picture, k, columns=5), images[k])


def test_hidden_units_come_largest_norm_first_each_in_its_own_range(raw, tmp_path):
    model = train(raw, tmp_path, hidden=(20,))
    network, _ = checkpoint.load(model, get_backend("cpu"))
    weights = network.backend.to_numpy(network.layers[0].params["W"]).astype(np.float64)
    view_files = inspect_files(model, get_backend("cpu"))
    view = json.loads(view_files["inspect.json"])
    norms = np.linalg.norm(weights, axis=0)
    assert view["unit_order"] == list(np.argsort(-norms)) and not view["templates"]
    picture = read_png(view_files["weights.png"])
    assert picture.shape == (4 * (SIDE + GAP) - GAP, 5 * (SIDE + GAP) - GAP, 3)  # 20 units, 5 columns
    for k, unit in enumerate(view["unit_order"]):
        drawn = tile(picture, k, columns=5)
        assert drawn.min() == 0 and drawn.max() == 255
        np.testing.assert_array_equal(drawn, weight_tiles(weights[:, [unit]])[0])


def test_standardised_rows_come_back_as_their_pixels(raw):
    split = prepare(raw, validation=50)
    expected = raw.x_test[:5].reshape(5, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(as_images(split.x_test[:5], split.mean, split.std), expected)


def evaluate_printout(output):
    """The confusion matrix rows and the test accuracy that `fastnn evaluate` prints."""
    names = [n[:5] for n in CLASS_NAMES]
    counts = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 12 and fields[0] in names and fields[-1].endswith("%"):
            counts.append([int(f) for f in fields[1:11]])
    accuracy = float(re.search(r"test accuracy\s+([\d.]+)%", output).group(1))
    return counts, accuracy


def test_the_page_holds_evaluates_numbers_and_has_its_sizes(raw, tmp_path):
    model = train(raw, tmp_path / "run")
    evaluated = run("evaluate", str(model), "--device", "cpu")
    assert evaluated.exit_code == 0, evaluated.output
    counts, accuracy = evaluate_printout(evaluated.output)
    assert len(counts) == 10 and sum(map(sum, counts)) == 100

    out = tmp_path / "pages"
    result = run("inspect", str(model), "--device", "cpu", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "inspect.json", "inspect.png", "weights.png"]
    view = json.loads((out / "inspect.json").read_text())
    assert view["confusion_matrix"] == counts
    assert f"{100 * view['test_accuracy']:.2f}" == f"{accuracy:.2f}"
    assert view["curves"] and view["note"] is None
    assert read_png((out / "inspect.png").read_bytes()).shape[:2] == (FIGSIZE[1] * DPI, FIGSIZE[0] * DPI)

    split = prepare(raw, validation=50)
    for mistake in view["mistakes"]:
        assert split.y_test[mistake["index"]] == mistake["true"] != mistake["predicted"]
    probabilities = [m["probability"] for m in view["mistakes"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert len(probabilities) == min(24, 100 - int(np.trace(np.array(counts))))
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # readable offline: pictures embedded
    assert page.count("data:image/png;base64,") == 2


def test_a_run_without_metrics_leaves_the_curves_out_with_a_note(raw, tmp_path):
    model = train(raw, tmp_path)
    (tmp_path / "metrics.jsonl").unlink()
    result = run("inspect", str(model), "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "training curves are left out" in result.output
    view = json.loads((tmp_path / "inspect.json").read_text())
    assert not view["curves"] and "no metrics.jsonl" in view["note"]


def test_a_checkpoint_of_another_architecture_is_a_one_line_error(tmp_path):
    from fastnn.network import Network

    model = tmp_path / "model.npz"
    meta = {"config": TrainConfig().to_dict(), "normalization": {"mean": [0.5] * 3, "std": [0.2] * 3}}
    checkpoint.save(model, Network([20, 5, 10], backend=get_backend("cpu")), meta)
    for command in ("inspect", "evaluate"):
        result = run(command, str(model), "--device", "cpu")
        assert result.exit_code == 1
        assert result.output == (
            f"Error: {model}: the network takes 20 inputs, but CIFAR-10 images have 3072; "
            "pass a model.npz that `fastnn train` wrote\n"
        )
    assert not (tmp_path / "inspect.png").exists()


def test_a_missing_model_is_a_one_line_error_and_makes_no_folder(tmp_path):
    result = run("inspect", str(tmp_path / "typo" / "model.npz"), "--device", "cpu")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {tmp_path / 'typo' / 'model.npz'}: no such checkpoint")
    assert result.output.count("\n") == 1 and not (tmp_path / "typo").exists()


def test_an_out_folder_that_cannot_be_written_exits_2_and_writes_nothing(raw, tmp_path):
    model = train(raw, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("inspect", str(model), "--device", "cpu", "--out", str(blocker / "pages"))
    assert result.exit_code == 2
    assert "Invalid value for '--out': cannot write to" in " ".join(result.output.split())
    assert not (tmp_path / "inspect.png").exists()


def test_a_failed_write_leaves_no_page_behind(raw, tmp_path):
    """A folder in the way of one file: nothing of the set is written, and the error is one line."""
    model = train(raw, tmp_path)
    (tmp_path / "index.html").mkdir()
    result = run("inspect", str(model), "--device", "cpu")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot write to {tmp_path}: ") and result.output.count("\n") == 1
    assert not any((tmp_path / name).exists() for name in ("inspect.png", "weights.png", "inspect.json"))
