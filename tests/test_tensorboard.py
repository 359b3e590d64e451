"""--tensorboard: the event files read back (with tensorboardX's protocol buffers) give the logged values."""

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fastnn.data.cifar10 import CLASS_NAMES, Cifar10Raw, prepare
from fastnn.network import Network
from fastnn.train import EpochRecord
from fastnn_cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def read_events(folder):
    """{(tag, step): value} of the scalars and {(tag, step): HistogramProto} of the histograms in the
    event files of ``folder``: TFRecords of uint64 length, its CRC, an Event message and its CRC."""
    from tensorboardX.proto.event_pb2 import Event

    scalars, histograms = {}, {}
    files = sorted(Path(folder).glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        data, position = path.read_bytes(), 0
        while position < len(data):
            (length,) = struct.unpack("<Q", data[position : position + 8])
            event = Event.FromString(data[position + 12 : position + 12 + length])
            position += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("histo"):
                    histograms[value.tag, event.step] = value.histo
                else:
                    scalars[value.tag, event.step] = value.simple_value
    return scalars, histograms


def test_the_logger_writes_each_epochs_numbers_and_weight_histograms(tmp_path, backend):
    pytest.importorskip("tensorboardX")
    from fastnn.tensorboard import TensorBoardLogger

    network = Network([12, 5, 3], backend=backend, seed=0)
    records = [
        EpochRecord(1, 1e-2, 1.5, 0.25, 1.25, 0.5, 0.75),
        EpochRecord(2, 5e-3, 1.0, 0.5, float("nan"), 0.625, 1.5),
    ]
    logger = TensorBoardLogger(tmp_path)
    for record in records:
        logger.epoch(record, network)
    logger.test(0.875, 0.375, 2)
    logger.close()

    scalars, histograms = read_events(tmp_path)
    expected = {("loss/test", 2): 0.875, ("accuracy/test", 2): 0.375}
    for r in records:
        expected |= {("loss/train", r.epoch): r.train_loss, ("accuracy/train", r.epoch): r.train_accuracy,
                     ("accuracy/validation", r.epoch): r.val_accuracy, ("learning_rate", r.epoch): r.lr,
                     ("seconds/epoch", r.epoch): r.seconds}  # fmt: skip
    expected[("loss/validation", 1)] = 1.25  # epoch 2's is not a number: left out
    assert scalars == pytest.approx(expected, rel=1e-6)
    assert sorted(histograms) == sorted((f"weights/{n}", e) for n in ("0.W", "0.b", "2.W", "2.b") for e in (1, 2))
    for name, value in network.parameters():
        host = backend.to_numpy(value).astype(np.float64)
        histogram = histograms[f"weights/{name}", 2]
        assert histogram.num == host.size and sum(histogram.bucket) == host.size
        assert (histogram.min, histogram.max) == pytest.approx((host.min(), host.max()), rel=1e-6)
        assert histogram.sum == pytest.approx(host.sum(), rel=1e-5, abs=1e-6)


@pytest.fixture
def tiny_data(monkeypatch):
    """The commands' data loading replaced by ``prepare`` of 300 training and 100 test images."""
    import fastnn_cli.experiments as experiments_module
    import fastnn_cli.train as train_module

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (400, 3072)).astype(np.uint8)
    y = rng.integers(0, 10, 400).astype(np.int64)
    raw = Cifar10Raw(x[:300], y[:300], x[300:], y[300:], CLASS_NAMES)
    for module in (train_module, experiments_module):
        monkeypatch.setattr(module, "load_split", lambda data_dir, *split: prepare(raw, *split))


SMALL = ["--device", "cpu", "--hidden", "8", "--validation", "50", "--batch-size", "50", "--no-augment"]


def test_train_logs_what_metrics_jsonl_holds(tmp_path, tiny_data):
    pytest.importorskip("tensorboardX")
    board, out = tmp_path / "board", tmp_path / "run"
    result = run("train", *SMALL, "--epochs", "2", "--out", str(out), "--tensorboard", str(board))
    assert result.exit_code == 0, result.output
    scalars, histograms = read_events(board)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        logged = (("loss/train", "train_loss"), ("accuracy/validation", "val_accuracy"), ("learning_rate", "lr"))
        for tag, key in logged:
            assert scalars[tag, row["epoch"]] == pytest.approx(row[key], rel=1e-6)
        layers = {tag for tag, step in histograms if step == row["epoch"]}
        # Dense 0, BatchNorm 1 (its gain and bias are trained too), ReLU 2, Dense 3
        assert layers == {"weights/0.W", "weights/0.b", "weights/1.gain", "weights/1.bias", "weights/3.W",
                          "weights/3.b"}
    assert ("accuracy/test", 2) in scalars


def test_experiments_log_one_run_per_subfolder(tmp_path, tiny_data):
    pytest.importorskip("tensorboardX")
    pytest.importorskip("matplotlib")
    board, out = tmp_path / "board", tmp_path / "experiments"
    result = run("experiments", *SMALL, "--quick", "--subset", "200", "--out", str(out), "--tensorboard", str(board))
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) > 1 and sorted(p.name for p in board.iterdir()) == runs
    for run_id in runs:
        rows = [json.loads(line) for line in (out / "runs" / run_id / "metrics.jsonl").read_text().splitlines()]
        scalars, _ = read_events(board / run_id)
        assert [scalars["loss/train", r["epoch"]] for r in rows] == pytest.approx([r["train_loss"] for r in rows])

    # Resumed without the logs: the finished runs' saved histories are logged, once.
    first = sorted(board.iterdir())[0]
    for events in first.iterdir():
        events.unlink()
    again = run("experiments", *SMALL, "--quick", "--subset", "200", "--out", str(out), "--tensorboard", str(board))
    assert again.exit_code == 0 and "skip" in again.output, again.output
    assert [len(list(folder.iterdir())) for folder in sorted(board.iterdir())] == [1] * len(runs)
    rows = [json.loads(line) for line in (out / "runs" / first.name / "metrics.jsonl").read_text().splitlines()]
    scalars, histograms = read_events(first)
    assert [scalars["accuracy/train", r["epoch"]] for r in rows] == pytest.approx([r["train_accuracy"] for r in rows])
    assert not histograms


def test_without_tensorboardx_the_option_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX now raises ImportError
    for command in ("train", "experiments"):
        result = run(command, "--device", "cpu", "--out", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb"))
        assert result.exit_code == 2
        assert 'TensorBoard logs need tensorboardX: pip install "fastnn[tensorboard]"' in result.output
    assert not (tmp_path / "tb").exists()


def test_an_unwritable_tensorboard_folder_exits_2_before_the_data_is_loaded(tmp_path):
    pytest.importorskip("tensorboardX")
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("train", "--device", "cpu", "--out", str(tmp_path / "out"), "--tensorboard", str(blocker / "tb"))
    assert result.exit_code == 2
    assert "Invalid value for '--tensorboard': cannot write to" in " ".join(result.output.split())
