"""The training loop: a full short run on every backend, determinism, divergence, augmentation."""

import json

import numpy as np
import pytest
from _util import synthetic_split

from fastnn.augment import augment_images
from fastnn.checkpoint import load
from fastnn.config import TrainConfig
from fastnn.run import run_training
from fastnn.train import NonFiniteLoss, TrainingListener, evaluate


def _split(**kwargs):
    return synthetic_split(**{"n_train": 600, **kwargs})


def _config(**changes):
    base = dict(hidden=(16,), epochs=4, batch_size=64, lr=0.01, schedule="exp", decay=0.1, validation=150)
    base["augment"] = False  # the synthetic inputs are not images
    return TrainConfig(**{**base, **changes})


class Recorder(TrainingListener):
    """Every call a run makes to its listener, in order."""

    def __init__(self):
        self.calls = []

    def epoch_started(self, epoch, lr):
        self.calls.append(("started", epoch, lr))

    def batch_finished(self, done, total):
        self.calls.append(("batch", done, total))

    def epoch_finished(self, record, network):
        self.calls.append(("finished", record.epoch, record.lr))


class AfterEpoch(TrainingListener):
    """Calls ``act(record, network)`` after each epoch."""

    def __init__(self, act):
        self.act = act

    def epoch_finished(self, record, network):
        self.act(record, network)


def test_full_short_run_on_every_backend(backend, tmp_path):
    split = _split()
    recorder = Recorder()
    result = run_training(_config(), split, backend, str(tmp_path), listener=recorder)
    n, batches = len(split.y_train), -(-len(split.y_train) // 64)
    for epoch in range(4):  # each epoch: started, a call per batch up to all n examples, finished
        lr = pytest.approx(0.01 * np.exp(-0.1 * epoch))
        calls = recorder.calls[epoch * (batches + 2) : (epoch + 1) * (batches + 2)]
        assert calls[0] == ("started", epoch, lr) and calls[-1] == ("finished", epoch + 1, lr)
        assert calls[1:-1] == [("batch", min(64 * (b + 1), n), n) for b in range(batches)]
    assert len(recorder.calls) == 4 * (batches + 2)
    assert result.test_accuracy >= 0.95
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    assert history[1]["lr"] == pytest.approx(0.01 * np.exp(-0.1))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    network, meta = load(tmp_path / "model.npz", backend)
    assert meta["results"]["test_accuracy"] == result.test_accuracy
    assert meta["config"]["hidden"] == [16]
    reloaded = evaluate(network, backend.asarray(split.x_test, "float32"), backend.asarray(split.y_test, "int64"))
    assert reloaded[1] == result.test_accuracy
    assert meta["config"]["tf32"] is False


def test_evaluate_returns_the_predictions_of_its_one_pass(backend):
    split = _split()
    network = run_training(_config(epochs=2), split, backend).network
    x, y = backend.asarray(split.x_test, "float32"), backend.asarray(split.y_test, "int64")
    loss, accuracy, predicted = evaluate(network, x, y, batch_size=64, return_predictions=True)
    assert (loss, accuracy) == evaluate(network, x, y, batch_size=64)
    expected = backend.to_numpy(network.predict(x))
    np.testing.assert_array_equal(backend.to_numpy(predicted), expected)
    assert accuracy == np.mean(expected == split.y_test)


def test_tf32_is_a_no_op_off_the_gpu(backend):
    if backend.name == "cupy":
        pytest.skip("on CuPy TF32 changes the products: tests/test_gpu.py checks it there")
    split = _split()
    plain = run_training(_config(epochs=2), split, backend)
    tf32 = run_training(_config(epochs=2, tf32=True), split, backend)
    assert backend.set_tf32(True) is False
    assert [r.train_loss for r in tf32.history] == [r.train_loss for r in plain.history]


def test_same_seed_same_numbers_bit_for_bit(backend):
    split = _split()
    a = run_training(_config(dropout=0.2), split, backend)
    b = run_training(_config(dropout=0.2), split, backend)
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    for (_, p), (_, q) in zip(a.network.parameters(), b.network.parameters()):
        np.testing.assert_array_equal(backend.to_numpy(p), backend.to_numpy(q))
    c = run_training(_config(dropout=0.2, seed=1), split, backend)
    assert [r.train_loss for r in a.history] != [r.train_loss for r in c.history]


def test_sgd_and_schedules_train_too(backend):
    result = run_training(_config(optimizer="sgd", lr=0.05, schedule="cosine", l2=1e-3), _split(), backend)
    assert result.test_accuracy >= 0.9


def test_divergence_stops_with_advice(tmp_path):
    from fastnn.backend import get_backend

    with pytest.raises(NonFiniteLoss, match="try a smaller learning rate"), np.errstate(all="ignore"):
        run_training(_config(optimizer="sgd", lr=1e6, epochs=3), _split(), get_backend("cpu"), str(tmp_path))
    assert not (tmp_path / "model.npz").exists()  # no epoch finished well, so nothing was saved


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    from fastnn.backend import get_backend

    backend = get_backend("cpu")

    def break_after_epoch_two(record, network):
        if record.epoch == 2:  # saved already; poison the weights so that epoch 3 diverges
            network.layers[0].params["W"][0, 0] = np.inf

    with pytest.raises(NonFiniteLoss, match="epoch 3"), np.errstate(all="ignore"):
        run_training(_config(epochs=4), _split(), backend, str(tmp_path), listener=AfterEpoch(break_after_epoch_two))
    network, meta = load(tmp_path / "model.npz", backend)
    assert [row["epoch"] for row in meta["history"]] == [1, 2]
    assert all(np.all(np.isfinite(backend.to_numpy(p))) for _, p in network.parameters())
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_augmentation_of_non_images_is_refused():
    from fastnn.backend import get_backend

    with pytest.raises(ValueError, match="--no-augment"):
        run_training(_config(augment=True), _split(), get_backend("cpu"))


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="batch size must be a whole number >= 1, got 0"):
        _config(batch_size=0).validate()
    with pytest.raises(ValueError, match=r"batch size must be a whole number >= 1, got 2.5"):
        _config(batch_size=2.5).validate()
    with pytest.raises(ValueError, match="learning rate must be a finite number > 0, got inf"):
        _config(lr=float("inf")).validate()
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        _config(optimizer="rmsprop").validate()
    with pytest.raises(ValueError, match="unknown setting"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    assert TrainConfig.from_dict(_config().to_dict()) == _config()


def test_a_run_checks_its_data_once_not_every_epoch(monkeypatch):
    """The Trainer checks the training and validation sets before the first epoch (and run_training
    the test set before measuring it), not again in every epoch's batch loop and validation."""
    import fastnn.train as train_module
    from fastnn.backend import get_backend

    checked, check_data = [], train_module.check_data

    def counted(network, x, y):
        checked.append(x.shape[0])
        check_data(network, x, y)

    monkeypatch.setattr(train_module, "check_data", counted)
    split = _split(n_val=100)
    run_training(_config(epochs=3), split, get_backend("cpu"))
    assert checked == [len(split.y_train), len(split.y_val), len(split.y_test)] == [600, 100, 150]


def _reference_augment(image, flip, dy, dx):
    """One (3, 32, 32) image flipped and shifted the slow, obvious way."""
    if flip:
        image = image[:, :, ::-1]
    padded = np.zeros((3, 40, 40), image.dtype)
    padded[:, 4:36, 4:36] = image
    return padded[:, 4 + dy : 36 + dy, 4 + dx : 36 + dx]


@pytest.mark.parametrize("shift", [2, 4])
def test_augmentation_is_a_flip_and_a_shift_of_each_image(backend, shift):
    x = np.random.default_rng(0).normal(size=(6, 3072)).astype(np.float32) + 5  # no zeros in the input
    out = backend.to_numpy(augment_images(backend.asarray(x, "float32"), backend.rng(3), shift))
    kinds = set()
    for original, augmented in zip(x.reshape(6, 3, 32, 32), out.reshape(6, 3, 32, 32)):
        matches = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if np.array_equal(_reference_augment(original, flip, dy, dx), augmented)
        ]
        assert matches, "augmented image is not a flipped/shifted copy of its input"
        assert all(abs(dy) <= shift and abs(dx) <= shift for _, dy, dx in matches)
        kinds.add(matches[0])
    assert len(kinds) > 1  # the draws differ between images


def test_gathering_in_chunks_trains_on_the_same_batches(backend):
    """train_epoch can gather several batches at a time; the steps must be those of gathering each
    batch on its own from the same permutation (the plain loop below), bit for bit, whatever is left over."""
    from fastnn.network import Network
    from fastnn.optimizers import Adam
    from fastnn.train import train_epoch

    gather, batch_size = 3, 8
    n = batch_size * gather * 2 + 13  # two whole chunks and a short third, ending in a short batch
    split = _split(n_train=n)
    x, y = backend.asarray(split.x_train, "float32"), backend.asarray(split.y_train, "int64")
    chunked, plain = Network([20, 16, 3], backend=backend, seed=3), Network([20, 16, 3], backend=backend, seed=3)
    recorder = Recorder()
    loss_sum, correct = train_epoch(
        chunked, Adam(), x, y, batch_size=batch_size, lr=0.01, rng=backend.rng(5), gather=gather, listener=recorder
    )
    xp, order, optimizer = backend.xp, backend.rng(5).permutation(n), Adam()
    expected_loss = 0.0
    for start in range(0, n, batch_size):
        index = order[start : min(start + batch_size, n)]
        loss, _ = plain.train_step(xp.take(x, index, axis=0), xp.take(y, index, axis=0), optimizer, 0.01)
        expected_loss += float(loss) * index.shape[0]
    assert recorder.calls == [("batch", min(s + batch_size, n), n) for s in range(0, n, batch_size)]
    assert float(loss_sum) == pytest.approx(expected_loss, rel=1e-6)
    for (name, p), (_, q) in zip(chunked.parameters(), plain.parameters()):
        np.testing.assert_array_equal(backend.to_numpy(p), backend.to_numpy(q), err_msg=name)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, y: (x, y + 1), r"labels must lie in \[0, 3\), found values from 1 to 3"),  # 1-based labels
        (lambda x, y: (x[:50], y), "150 labels for inputs of shape \\(50, 20\\)"),
        (lambda x, y: (x, y[:50]), "50 labels for inputs of shape \\(150, 20\\)"),
    ],
    ids=["labels-out-of-range", "more-labels", "fewer-labels"],
)
def test_train_epoch_and_evaluate_refuse_labels_that_do_not_fit(backend, change, message):
    from fastnn.network import Network
    from fastnn.optimizers import Adam
    from fastnn.train import train_epoch

    split = _split()
    x, y = change(split.x_val, split.y_val)
    x, y = backend.asarray(x, "float32"), backend.asarray(y, "int64")
    net = Network([20, 8, 3], backend=backend)
    with pytest.raises(ValueError, match=message):
        train_epoch(net, Adam(), x, y, batch_size=32, lr=1e-3, rng=backend.rng(0))
    with pytest.raises(ValueError, match=message):
        evaluate(net, x, y)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
        ({"batch_size": -32}, "batch_size must be a whole number >= 1, got -32"),  # trained nothing before
        ({"batch_size": 2.5}, "batch_size must be a whole number >= 1, got 2.5"),
        ({"lr": "0.001"}, "learning rate must be a finite number >= 0, got '0.001'"),
        ({"lr": float("nan")}, "learning rate must be a finite number >= 0, got nan"),
        ({"lr": -1e-3}, "learning rate must be a finite number >= 0, got -0.001"),
        ({"augment": True}, "augmentation flips and shifts 32x32 colour images"),
    ],
)
def test_train_epoch_refuses_settings_that_would_train_wrongly(backend, options, message):
    from fastnn.network import Network
    from fastnn.optimizers import Adam
    from fastnn.train import train_epoch

    split = _split()
    x, y = backend.asarray(split.x_val, "float32"), backend.asarray(split.y_val, "int64")
    adam = Adam()
    settings = {"batch_size": 32, "lr": 1e-3, **options}
    with pytest.raises(ValueError, match=message):
        train_epoch(Network([20, 8, 3], backend=backend), adam, x, y, rng=backend.rng(0), **settings)
    assert adam.t == 0  # a refused step changes no state: a retry is a first step


def test_evaluate_refuses_a_batch_size_of_zero(backend):
    from fastnn.network import Network

    split = _split()
    x, y = backend.asarray(split.x_val, "float32"), backend.asarray(split.y_val, "int64")
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        evaluate(Network([20, 8, 3], backend=backend), x, y, batch_size=0)


def test_adam_blowing_up_is_caught_though_its_loss_stays_finite(tmp_path):
    from fastnn.backend import get_backend

    with pytest.raises(NonFiniteLoss, match=r"times the untrained loss.*try a smaller learning rate"):
        with np.errstate(all="ignore"):
            run_training(_config(optimizer="adam", lr=1e6, epochs=3), _split(), get_backend("cpu"), str(tmp_path))


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    "changes",
    [
        dict(optimizer="adam", dropout=0.2),
        dict(optimizer="sgd", momentum=0.9, nesterov=True, lr=0.05, schedule="cosine"),
        dict(optimizer="adam", augment=True, features=3072),
        dict(optimizer="adam", label_smoothing=0.1, norm="batch"),
        dict(optimizer="adamw", weight_decay=0.01),
        dict(optimizer="adam", mixup=0.4),
    ],
    ids=["adam-dropout", "sgd-nesterov", "adam-augment", "adam-smoothing-batchnorm", "adamw", "adam-mixup"],
)
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(backend, tmp_path, changes):
    changes = dict(changes)
    split = _split(n_train=300, features=changes.pop("features", 20))
    config = _config(**changes)
    whole = run_training(config, split, backend, str(tmp_path / "whole"))

    def stop_after_epoch_two(record, network):
        if record.epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        run_training(config, split, backend, str(tmp_path / "cut"), listener=AfterEpoch(stop_after_epoch_two))
    resumed = run_training(config, split, backend, str(tmp_path / "cut"), resume=True)

    assert resumed.test_accuracy == whole.test_accuracy
    for (_, p), (_, q) in zip(whole.network.parameters(), resumed.network.parameters()):
        np.testing.assert_array_equal(backend.to_numpy(p), backend.to_numpy(q))

    def log(folder):
        rows = [json.loads(line) for line in (tmp_path / folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert log("cut") == log("whole") and len(log("whole")) == 4


@pytest.mark.parametrize(
    "settings, words",
    [
        ({}, "3072-1024-512-10 (relu, batch norm)"),
        ({"norm": "none"}, "3072-1024-512-10 (relu)"),
        ({"hidden": ()}, "3072-10"),
        ({"hidden": (256,), "blocks": 4, "norm": "layer", "activation": "gelu"},
         "3072-256-10, 4 residual blocks x4 (gelu, layer norm)"),
        ({"hidden": (64,), "blocks": 1, "expansion": 2, "norm": "batch"},
         "3072-64-10, 1 residual block x2 (relu, batch norm)"),
    ],
)
def test_a_config_describes_its_network_in_a_few_words(settings, words):
    assert TrainConfig(**settings).describe() == words


def test_the_run_functions_keep_their_old_import_path():
    import fastnn.run
    import fastnn.train

    for name in ("run_training", "RunResult", "load_progress"):
        assert getattr(fastnn.train, name) is getattr(fastnn.run, name)
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        fastnn.train.nothing  # noqa: B018
