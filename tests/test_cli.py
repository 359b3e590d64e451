"""The command line: bad values are usage errors (exit code 2) with a clear message."""

import importlib.util

import pytest
from _util import gpu_unavailable, printed_test_accuracy
from click.testing import CliRunner

from fastnn_cli.main import cli

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def run(*args, **kwargs):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, **kwargs)


def test_info_lists_backends():
    result = run("info")
    assert result.exit_code == 0
    for name in ("numpy", "cupy", "strict"):
        assert name in result.output


def test_info_names_the_optimizer_engine_and_how_gnu_openmps_threads_wait():
    from fastnn import kernels_cpu, openmp

    said = " ".join(run("info").output.split())
    assert f"optimizer updates and elementwise loops on the CPU: {kernels_cpu.engine()}" in said
    if kernels_cpu.engine() == "numba":
        assert f"on {kernels_cpu.numba_threads_description()})" in said
    assert (f"GNU OpenMP's idle threads: {openmp.wait_policy}" in said) == openmp.loaded_already()


def test_info_names_the_library_of_the_products():
    from fastnn import kernels_cpu

    expected = {"onednn": "oneDNN 3.", "numpy": "NumPy's BLAS"}[kernels_cpu.products()]
    assert f"matrix products on the CPU: {expected}" in " ".join(run("info").output.split())


@pytest.mark.skipif(gpu_unavailable() is None, reason="a GPU is usable here")
def test_info_says_why_the_gpu_backend_is_unavailable():
    reason = gpu_unavailable().split(" (")[0]  # "CuPy is not importable", "CuPy found no usable CUDA driver"
    assert f"unavailable: {reason}" in " ".join(run("info").output.split())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "-1"], "Invalid value for '--lr'"),
        (["--hidden", "abc"], "'abc' is not a comma-separated list of layer sizes"),
        (["--hidden", "512,0"], "layer sizes must be positive"),
        (["--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["--device", "tpu"], "Invalid value for '--device'"),
        (["--dropout", "1"], "Invalid value for '--dropout'"),
        (["--schedule", "linear"], "Invalid value for '--schedule'"),
    ],
)
def test_bad_training_options_exit_2(args, message):
    result = run("train", *args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.skipif(gpu_unavailable() is None, reason="a GPU is usable here")
def test_gpu_without_gpu_exits_2_with_the_fix():
    result = run("train", "--device", "gpu")
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "use --device cpu" in output
    if not HAS_CUPY:
        assert "pip install cupy-cuda12x" in output


def test_config_file_gives_defaults_and_options_win(tmp_path, monkeypatch):
    import fastnn_cli.train as train_module

    seen = {}

    def fake_load_split(data_dir, validation, split_seed, subset):
        seen.update(validation=validation)
        raise SystemExit(0)

    monkeypatch.setattr(train_module, "load_split", fake_load_split)
    monkeypatch.setattr(train_module, "config_from_options", lambda o: seen.update(o) or train_module.TrainConfig(
        **{k: v for k, v in o.items() if k in train_module.TrainConfig.__dataclass_fields__}
    ))
    config = tmp_path / "run.toml"
    config.write_text('lr = 0.05\nhidden = "64,32"\nbatch-size = 128\nvalidation = 100\n')
    result = run("train", "--config", str(config), "--lr", "0.002", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert seen["lr"] == 0.002 and seen["hidden"] == (64, 32) and seen["batch_size"] == 128
    assert seen["validation"] == 100


def test_config_file_with_unknown_key_exits_2(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("learning_rate = 0.1\n")
    result = run("train", "--config", str(config))
    assert result.exit_code == 2
    assert "unknown setting(s) learning_rate" in result.output


@pytest.mark.parametrize(
    "toml, message",
    [
        ("epochs = [1, 2]", "epochs = [1, 2]: must be a whole number"),
        ("seed = 1.7", "seed = 1.7: must be a whole number"),  # not truncated to 1
        ("[train]\nlr = {a = 1}", "lr = {'a': 1}: must be a number"),
        ("augment = 3", "augment = 3: must be true or false"),
        ("train = 5", "[train] must be a table"),
        ("hidden = [64, 0]", "hidden = [64, 0]: layer sizes must be positive"),
        ("config = 'other.toml'", "unknown setting(s) config"),
    ],
)
def test_config_values_of_the_wrong_kind_exit_2(tmp_path, toml, message):
    config = tmp_path / "run.toml"
    config.write_text(toml + "\n")
    result = run("train", "--config", str(config))
    assert result.exit_code == 2
    assert f"Invalid value for '--config': {config}: {message}" in " ".join(result.output.split())


def test_config_file_names_the_output_folder_as_the_option_does(tmp_path, monkeypatch):
    import fastnn_cli.train as train_module

    made = []

    def stop(*args):
        made.append((tmp_path / "from-config").is_dir())  # made (and checked) before the data is loaded
        raise SystemExit(0)

    monkeypatch.setattr(train_module, "load_split", stop)
    config = tmp_path / "run.toml"
    config.write_text(f"out = '{tmp_path / 'from-config'}'\n")
    assert run("train", "--config", str(config), "--device", "cpu").exit_code == 0
    assert made == [True]
    assert not (tmp_path / "from-config").exists()  # and removed again, as no epoch was trained


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lr", "nan"], "Invalid value for '--lr': nan is not a finite number"),
        (["--l2", "inf"], "Invalid value for '--l2': inf is not a finite number"),
        (["--validation", "50000"], "Invalid value for '--validation': 50000 leaves no training images"),
        (["--subset", "45001"], "Invalid value for '--subset': 45001 is more than the 45,000 training images"),
    ],
)
def test_values_cifar10_cannot_take_exit_2_before_the_data_is_loaded(tmp_path, args, message):
    result = run("train", "--device", "cpu", "--data-dir", str(tmp_path / "no-data"), *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize("command", ["train", "experiments"])
def test_an_out_folder_that_cannot_be_written_exits_2_before_the_data_is_loaded(tmp_path, command):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "run"
    result = run(command, "--device", "cpu", "--data-dir", str(tmp_path / "no-data"), "--out", str(out))
    assert result.exit_code == 2
    assert f"Invalid value for '--out': cannot write to {out}: Not a directory" in " ".join(result.output.split())


def run_with_training_replaced(monkeypatch, command, fake, *args):
    """Run ``fastnn COMMAND ARGS`` with the data loading skipped and the training (``run_training``,
    or ``run_experiments``) replaced by ``fake``; returns (exit code, last line of output)."""
    import importlib

    module = importlib.import_module(f"fastnn_cli.{command}")
    monkeypatch.setattr(module, "load_split", lambda *a: type("Split", (), {"y_train": [], "y_val": []}))
    monkeypatch.setattr(module, "run_training" if command == "train" else "run_experiments", fake)
    result = run(command, "--device", "cpu", *args)
    return result.exit_code, result.output.splitlines()[-1]


def finish_epochs(count, listener):
    from fastnn.train import EpochRecord

    for epoch in range(1, count + 1):
        listener.epoch_finished(EpochRecord(epoch, 1e-3, 1.0, 0.5, 1.0, 0.5, 1.0), None)


@pytest.mark.parametrize("epochs_done", [0, 2])
def test_divergence_says_whether_a_checkpoint_was_saved(tmp_path, monkeypatch, epochs_done):
    from fastnn.train import NonFiniteLoss

    def diverge(config, split, backend, out_dir, listener, **kwargs):
        finish_epochs(epochs_done, listener)
        raise NonFiniteLoss(f"the training loss became nan in epoch {epochs_done + 1}")

    code, last = run_with_training_replaced(monkeypatch, "train", diverge, "--epochs", "5", "--out", str(tmp_path))
    assert code == 1
    if epochs_done:
        assert last.endswith(f"; the last good epoch (2) is saved in {tmp_path / 'model.npz'}")
    else:
        assert last.endswith("; no epoch finished, so nothing was saved") and "model.npz" not in last


def test_ctrl_c_during_training_says_what_was_kept(tmp_path, monkeypatch):
    def interrupted(config, split, backend, out_dir, listener, **kwargs):
        finish_epochs(1, listener)
        raise KeyboardInterrupt

    code, last = run_with_training_replaced(monkeypatch, "train", interrupted, "--out", str(tmp_path))
    assert code == 130
    assert last == (
        f"Error: interrupted; epoch 1's checkpoint is in {tmp_path / 'model.npz'} (not yet tested); "
        f"continue with `fastnn train --resume {tmp_path}`"
    )


def test_ctrl_c_during_experiments_says_the_same_command_resumes(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    code, last = run_with_training_replaced(monkeypatch, "experiments", interrupted, "--quick", "--out", str(tmp_path))
    assert code == 130
    assert last == f"Error: interrupted; finished runs are kept in {tmp_path}, and the same command resumes"


def test_a_full_disk_during_training_is_a_one_line_error(tmp_path, monkeypatch):
    def disk_full(config, split, backend, out_dir, listener, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / ".model.npz.x.part"))

    code, last = run_with_training_replaced(monkeypatch, "train", disk_full, "--out", str(tmp_path))
    assert code == 1
    assert last == f"Error: cannot write to {tmp_path}: No space left on device; nothing was saved"


def test_missing_data_is_a_one_line_error(tmp_path, monkeypatch):
    import fastnn.data.cifar10 as cifar10

    def no_network(*args, **kwargs):
        raise cifar10.DataError("no network")

    monkeypatch.setattr(cifar10, "download_cifar10", no_network)
    result = run("train", "--device", "cpu", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


def test_evaluate_missing_checkpoint(tmp_path):
    result = run("evaluate", str(tmp_path / "nope.npz"), "--device", "cpu")
    assert result.exit_code == 1
    assert "no such checkpoint" in result.output


@pytest.mark.parametrize(
    "change",
    [
        lambda meta: meta.pop("config"),
        lambda meta: meta["config"].update(bogus=1),
        lambda meta: meta.pop("normalization"),
        lambda meta: meta["results"].update(test_accuracy="x"),
        lambda meta: meta.update(class_names=["a", "b"]),
    ],
    ids=["no-config", "unknown-setting", "no-normalization", "accuracy-not-a-number", "class-names"],
)
def test_evaluate_checkpoint_with_damaged_metadata_is_a_one_line_error(tmp_path, change):
    import json

    import numpy as np

    from fastnn.backend import get_backend
    from fastnn.checkpoint import save
    from fastnn.config import TrainConfig
    from fastnn.network import Network

    meta = {
        "config": TrainConfig(hidden=(3,)).to_dict(),
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
        "results": {"test_accuracy": 0.5},
        "class_names": [str(i) for i in range(10)],
    }
    change(meta)
    path = tmp_path / "model.npz"
    save(path, Network([3072, 3, 10], "relu", backend=get_backend("cpu"), seed=0), meta)
    assert "meta" in np.load(path).files and json.loads(str(np.load(path)["meta"]))["format"]
    result = run("evaluate", str(path), "--device", "cpu", "--data-dir", str(tmp_path / "no-data"))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}: a fastnn checkpoint with damaged metadata (")
    assert result.output.count("\n") == 1


@pytest.fixture(scope="module")
def learnable_data(tmp_path_factory):
    from _util import write_learnable_cifar

    return write_learnable_cifar(tmp_path_factory.mktemp("cifar"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "device, options",
    [
        ("cpu", ["--tf32"]),  # a note, and full float32: the flag acts on NVIDIA GPUs only
        pytest.param("gpu", [], marks=pytest.mark.gpu),
        pytest.param("gpu", ["--tf32"], marks=pytest.mark.gpu),
    ],
)
def test_train_then_evaluate_as_a_user_would(learnable_data, tmp_path, device, options):
    """``fastnn train`` and ``fastnn evaluate`` end to end on data of CIFAR-10's sizes: one epoch
    learns the easy classes, the checkpoint records the settings, and evaluating it again, on the
    same device and on the CPU, gives the accuracy that training printed."""
    import numpy as np

    from fastnn.backend import get_backend
    from fastnn.checkpoint import load

    if device == "gpu" and gpu_unavailable():
        pytest.skip(f"no GPU backend here: {gpu_unavailable().split(';')[0]}")
    data, out = str(learnable_data), tmp_path / "run"
    common = ["--data-dir", data]
    trained = run("train", "--device", device, "--epochs", "1", "--hidden", "128", "--out", str(out), *common, *options)
    assert trained.exit_code == 0, trained.output
    accuracy = printed_test_accuracy(trained.output)
    assert accuracy >= 90.0, trained.output
    assert ("--tf32 acts only on NVIDIA GPUs" in trained.output) == (device == "cpu" and "--tf32" in options)
    _, meta = load(out / "model.npz", get_backend("cpu"))
    assert meta["config"]["tf32"] == ("--tf32" in options)
    again = run("evaluate", str(out / "model.npz"), "--device", device, *common)
    assert again.exit_code == 0, again.output
    assert printed_test_accuracy(again.output) == accuracy
    on_cpu = run("evaluate", str(out / "model.npz"), "--device", "cpu", *common)
    assert on_cpu.exit_code == 0, on_cpu.output
    assert np.isclose(printed_test_accuracy(on_cpu.output), accuracy, atol=0.1)  # a few borderline images may flip


def _write_run(folder, stop_after=None):
    """A real checkpoint in ``folder`` of a tiny synthetic run: finished, or interrupted after
    ``stop_after`` epochs; returns its config."""
    from _util import synthetic_split

    from fastnn.backend import get_backend
    from fastnn.config import TrainConfig
    from fastnn.run import run_training
    from fastnn.train import TrainingListener

    config = TrainConfig(hidden=(8,), epochs=3, batch_size=64, augment=False, validation=150)

    class Stop(TrainingListener):
        def epoch_finished(self, record, network):
            if record.epoch == stop_after:
                raise KeyboardInterrupt

    try:
        run_training(config, synthetic_split(n_train=300), get_backend("cpu"), str(folder), listener=Stop())
    except KeyboardInterrupt:
        pass
    return config


def _never_called(*args, **kwargs):
    raise AssertionError("training started")


@pytest.mark.parametrize("stop_after, holds", [(None, "a finished run (3 of 3 epochs)"), (1, "an interrupted run")])
def test_a_folder_holding_a_run_is_not_overwritten_silently(tmp_path, monkeypatch, stop_after, holds):
    _write_run(tmp_path, stop_after)
    before = (tmp_path / "model.npz").read_bytes()
    code, last = run_with_training_replaced(monkeypatch, "train", _never_called, "--out", str(tmp_path))
    assert code == 2
    assert holds in last and "pass --overwrite to replace it" in last
    assert ("--resume" in last) == (stop_after is not None)
    assert (tmp_path / "model.npz").read_bytes() == before

    def stop(*args, **kwargs):
        raise SystemExit(0)

    code, last = run_with_training_replaced(monkeypatch, "train", stop, "--out", str(tmp_path), "--overwrite")
    assert code == 0


def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path, monkeypatch):
    import json
    import os
    import socket

    (tmp_path / ".fastnn.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    code, last = run_with_training_replaced(monkeypatch, "train", _never_called, "--out", str(tmp_path))
    assert code == 1
    assert f"is in use by another run (pid {os.getppid()} on {socket.gethostname()})" in last
    assert (tmp_path / ".fastnn.lock").exists()  # still the other run's


def test_a_lock_left_by_a_dead_process_and_its_part_files_are_cleared(tmp_path, monkeypatch):
    import json
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".fastnn.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    (tmp_path / ".model.npz.k1ll3d.part").write_bytes(b"half a checkpoint")
    seen = []

    def look(config, split, backend, out_dir, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        raise SystemExit(0)

    code, _ = run_with_training_replaced(monkeypatch, "train", look, "--out", str(tmp_path))
    assert code == 0
    assert seen == [[".fastnn.lock"]]  # the lock taken over, the dead writer's .part removed
    assert not (tmp_path / ".fastnn.lock").exists()  # released at the end


def test_resume_continues_with_the_saved_settings(tmp_path, monkeypatch):
    config = _write_run(tmp_path, stop_after=1)
    calls = []

    def record(config, split, backend, out_dir, resume=False, **kwargs):
        calls.append((config, out_dir, resume))
        raise SystemExit(0)

    code, _ = run_with_training_replaced(monkeypatch, "train", record, "--resume", str(tmp_path))
    assert code == 0
    assert calls == [(dataclasses_replace(config, device="cpu"), str(tmp_path), True)]
    code, last = run_with_training_replaced(monkeypatch, "train", _never_called, "--resume", str(tmp_path), "--lr", "1")
    assert code == 2 and "--resume continues with the run's saved settings; drop --lr" in last


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda folder: None, "no checkpoint to resume from"),
        (lambda folder: _write_run(folder), "holds a finished run; there is nothing to resume"),
    ],
)
def test_resume_refuses_what_cannot_be_resumed(tmp_path, monkeypatch, setup, message):
    setup(tmp_path)
    code, last = run_with_training_replaced(monkeypatch, "train", _never_called, "--resume", str(tmp_path))
    assert code == 2 and message in last


def test_a_run_failing_before_its_first_epoch_leaves_no_folder(tmp_path):
    out = tmp_path / "run"
    result = run("train", "--device", "cpu", "--data-dir", str(tmp_path / "no-data-here"), "--out", str(out))
    assert result.exit_code == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "optimizer, message",
    [("adam", "times the untrained loss"), ("sgd", "the training loss became nan")],  # finite, and overflowed
)
def test_divergence_stops_with_one_line_and_no_numpy_warnings(learnable_data, tmp_path, optimizer, message):
    import warnings

    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:  # pytest would otherwise hide them
        warnings.simplefilter("always")
        result = CliRunner().invoke(
            cli,
            ["train", "--device", "cpu", "--data-dir", str(learnable_data), "--out", str(out), "--epochs", "3",
             "--subset", "2000", "--hidden", "64", "--lr", "1e6", "--optimizer", optimizer],
        )
    assert result.exit_code == 1, result.output
    assert [str(w.message) for w in caught] == []
    last = result.output.splitlines()[-1]
    assert message in last and "try a smaller learning rate (e.g. --lr 1e+05)" in last
    assert not out.exists()  # no epoch finished


def test_resume_names_a_checkpoint_without_training_state(tmp_path, monkeypatch):
    from fastnn.checkpoint import save
    from fastnn.config import TrainConfig
    from fastnn.network import Network

    config = TrainConfig(hidden=(8,), epochs=3)
    save(tmp_path / "model.npz", Network([20, 8, 3], backend="cpu"), {"config": config.to_dict(), "history": []})
    code, last = run_with_training_replaced(monkeypatch, "train", _never_called, "--resume", str(tmp_path))
    assert code == 2 and "was written by an older fastnn, without the training state; train again" in last


def test_a_lock_being_written_is_not_taken_for_stale(tmp_path, monkeypatch):
    (tmp_path / ".fastnn.lock").write_text("")  # created an instant ago, its line not yet written
    code, last = run_with_training_replaced(monkeypatch, "train", _never_called, "--out", str(tmp_path))
    assert code == 1 and "is in use by another run" in last
