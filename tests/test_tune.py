"""``fastnn tune``: the space file's checks, bad storage URLs, and real studies on a small subset of
CIFAR-10 (real Optuna, real SQLite, a real PostgreSQL server; no mocks): two workers with pruning,
resuming after Ctrl-C, a trial orphaned by SIGKILL, two commands joining one PostgreSQL study."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _util import needs_real_data
from click.testing import CliRunner

from fastnn_cli.main import cli

optuna = pytest.importorskip("optuna", reason='fastnn tune needs Optuna: pip install "fastnn[tune]"')

SMALL = """
epochs = 3
subset = 500
validation = 200
hidden = [32]
augment = false
device = "cpu"
batch_size = 64
[space]
lr = { float = [1e-5, 1e-1], log = true }
dropout = { float = [0.0, 0.5] }
"""
SLOW = SMALL.replace("epochs = 3", "epochs = 30").replace("[1e-5, 1e-1]", "[1e-4, 1e-3]")
"""Trials long enough (30 epochs) for a signal to land inside one, at learning rates that never diverge."""
FASTNN = [sys.executable, "-c", "from fastnn_cli.main import cli; cli()"]


def real_data(test):
    """The real-data marks (a list in _util) on one test."""
    for mark in needs_real_data:
        test = mark(test)
    return test


def _space(tmp_path: Path, text: str = SMALL) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "space, problem",
    [
        ("[space]\nwidth = [1, 2]\n", "unknown setting 'width'"),
        ("colour = 1\n[space]\nlr = { float = [1e-3, 1e-2] }\n", "unknown setting 'colour'"),
        ("[space]\nlr = { float = [1e-2, 1e-3] }\n", "empty or reversed"),
        ("[space]\nlr = { float = [1e-2, 1e-2] }\n", "empty or reversed"),
        ("[space]\nlr = { float = [0, 1e-2], log = true }\n", "a log range must be above 0"),
        ("[space]\ndropout = { float = [0.0, 1.5] }\n", "dropout must be a number in [0, 1)"),
        ("[space]\nbatch_size = { int = [16.5, 64] }\n", "whole numbers"),
        ("[space]\nhidden = { choices = [] }\n", "non-empty list"),
        ("[space]\nsubset = [100, 200]\n", "shared by all trials"),
        ("epochs = 3\n", "no [space] table"),
        ("[space\n", "cannot read"),
    ],
)
def test_bad_space_is_one_line_usage_error(tmp_path, space, problem):
    path = _space(tmp_path, space)
    result = CliRunner().invoke(cli, ["tune", "--space", str(path), "--trials", "2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "study.db").exists()  # refused before any study was made


@pytest.mark.parametrize(
    "url, problem",
    [
        ("postgresql://nobody@127.0.0.1:1/none", "cannot open the storage"),
        ("nosuchdb://x/y", "cannot open the storage"),
        ("sqlite:////no/such/folder/study.db", "cannot open the storage"),
    ],
)
def test_bad_storage_url_is_one_line_usage_error(tmp_path, url, problem):
    path = _space(tmp_path)
    args = ["tune", "--space", str(path), "--trials", "2", "--out", str(tmp_path / "o"), "--storage", url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if "Error" in line]) == 1


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The real archive extracted once: each process of a study loads it in a second, not seven."""
    import tarfile

    archive = Path(os.environ.get("FASTNN_DATA_DIR", "")) / "cifar-10-python.tar.gz"
    if not archive.exists():
        pytest.skip("set FASTNN_DATA_DIR to a folder with cifar-10-python.tar.gz")
    folder = tmp_path_factory.mktemp("cifar")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _tune(out: Path, space: Path, data: Path, *extra: str) -> subprocess.Popen:
    args = [*FASTNN, "tune", "--space", str(space), "--out", str(out), "--seed", "0", "--data-dir", str(data), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _states(storage: str, name: str = "fastnn") -> list[str]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [t.state.name for t in study.trials]


def _wait_for_line(process: subprocess.Popen, text: str, limit: float = 60) -> str:
    """Read the command's output until a line holds ``text``; what was read so far."""
    seen = ""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"no line with {text!r} in:\n{seen}")


@real_data
def test_two_workers_share_one_sqlite_study_and_prune(tmp_path, data_dir):
    out = tmp_path / "study"
    process = _tune(out, _space(tmp_path), data_dir, "--trials", "6", "--workers", "2")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    states = _states(f"sqlite:///{out / 'study.db'}")
    assert "PRUNED" in states, output
    assert "RUNNING" not in states
    # A trial fails only by diverging (the space's learning rates reach 0.1), and says so.
    trials = optuna.load_study(study_name="fastnn", storage=f"sqlite:///{out / 'study.db'}").trials
    failed = [t.user_attrs.get("error", "") for t in trials if t.state.name == "FAIL"]
    assert all("try a smaller learning rate" in error for error in failed), failed
    assert states.count("COMPLETE") + states.count("PRUNED") >= 6
    assert len(states) == len([line for line in output.splitlines() if line.startswith("trial ")])  # each once
    for name in ("best.toml", "report.md", "trials.md", "history.png", "parallel.png", "best/model.npz"):
        assert (out / name).stat().st_size > 0, name
    # best.toml is a --config file of `fastnn train`, as it is.
    args = ["train", "--config", str(out / "best.toml"), "--out", str(tmp_path / "t"), "--data-dir", str(data_dir)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t" / "model.npz").exists()


@real_data
def test_interrupted_study_continues(tmp_path, data_dir):
    out, space = tmp_path / "study", _space(tmp_path, SLOW)  # Ctrl-C lands in trial 1, not after the last
    process = _tune(out, space, data_dir, "--trials", "4", "--pruner", "none")
    _wait_for_line(process, "trial 0:")
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "the same command continues" in output
    storage = f"sqlite:///{out / 'study.db'}"
    assert "RUNNING" not in _states(storage)
    process = _tune(out, space, data_dir, "--trials", "4", "--pruner", "none")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "1 of 4 trials finished" in output or "2 of 4 trials finished" in output
    assert _states(storage).count("COMPLETE") == 4


@real_data
def test_trial_orphaned_by_sigkill_is_marked_failed(tmp_path, data_dir):
    out, space = tmp_path / "study", _space(tmp_path, SLOW)  # the kill lands inside a trial
    process = _tune(out, space, data_dir, "--trials", "3", "--pruner", "none")
    _wait_for_line(process, "trial 0:")
    storage = f"sqlite:///{out / 'study.db'}"
    deadline = time.monotonic() + 30
    while "RUNNING" not in _states(storage) and time.monotonic() < deadline:  # trial 1 starts
        time.sleep(0.05)
    process.kill()
    process.communicate(timeout=30)
    assert "RUNNING" in _states(storage)
    process = _tune(out, space, data_dir, "--trials", "3", "--pruner", "none")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "1 trial(s) left running by a stopped run marked failed" in output
    states = _states(storage)
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 3 and "RUNNING" not in states


PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "fastnn-pg"


def _as_pg_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *args] if os.geteuid() == 0 else args


@pytest.fixture
def postgres():
    """A PostgreSQL 15 server in a temporary folder, on a free port, run as an unprivileged user."""
    if not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"no PostgreSQL 15 server in {PG_BIN} (apt-get install postgresql-15)")
    if os.geteuid() == 0 and subprocess.run(["id", PG_USER], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"cannot make the user {PG_USER} to run PostgreSQL: {made.stderr.strip()}")
    folder = Path(tempfile.mkdtemp(prefix="fastnn-pg-"))  # pytest's folders are root's alone
    folder.chmod(0o777)
    data = folder / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    init = subprocess.run(
        _as_pg_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    start = subprocess.run(
        _as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]),
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        pytest.skip(f"the PostgreSQL server did not start: {(folder / 'log').read_text()[-300:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_pg_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]))
        shutil.rmtree(folder, ignore_errors=True)


@real_data
def test_two_commands_join_one_postgresql_study(tmp_path, data_dir, postgres):
    pytest.importorskip("psycopg", reason='PostgreSQL storage needs psycopg: pip install "fastnn[tune]"')
    space = _space(tmp_path)
    extra = ("--trials", "4", "--storage", postgres, "--study", "shared")
    first, second = _tune(tmp_path / "a", space, data_dir, *extra), _tune(tmp_path / "b", space, data_dir, *extra)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    states = _states(postgres, "shared")
    assert states.count("COMPLETE") + states.count("PRUNED") >= 4
    assert "RUNNING" not in states
    failed = [t.user_attrs.get("error", "") for t in optuna.load_study(study_name="shared", storage=postgres).trials
              if t.state.name == "FAIL"]
    assert all("try a smaller learning rate" in error for error in failed), failed  # only by diverging
    # Both commands worked on the one study: every trial in it was run by one of them, none by both.
    # (Which command runs how many depends on timing: the first may finish all before the second starts.)
    numbers = [{line.split(":")[0] for line in out.splitlines() if line.startswith("trial ")} for out in outputs]
    assert numbers[0] | numbers[1] == {f"trial {n}" for n in range(len(states))}
    assert not numbers[0] & numbers[1]


def test_without_optuna_says_what_to_install(tmp_path):
    # An interpreter where `import optuna` fails, as where the [tune] extra is not installed.
    code = "import sys; sys.modules['optuna'] = None; from fastnn_cli.main import cli; cli()"
    args = [sys.executable, "-c", code, "tune", "--space", str(_space(tmp_path)), "--trials", "1", "--out", "o"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == 'Error: fastnn tune needs Optuna: pip install "fastnn[tune]"'


@real_data
def test_study_where_every_trial_diverges_ends_with_one_line(tmp_path, data_dir):
    text = SMALL.replace("lr = { float = [1e-5, 1e-1], log = true }", "lr = { float = [1e8, 1e9] }")
    space = _space(tmp_path, "optimizer = \"sgd\"\n" + text)  # Adam's steps are bounded; SGD's overflow
    process = _tune(tmp_path / "study", space, data_dir, "--trials", "2")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    assert "Error: no trial completed" in output and "Traceback" not in output
    assert output.count("the training loss became") == 2  # each failure says why; the study gives up after 2
    assert _states(f"sqlite:///{tmp_path / 'study' / 'study.db'}") == ["FAIL", "FAIL"]


def test_workers_take_one_gpu_each_where_there_are_several(monkeypatch):
    from fastnn.backend import gpu_ids
    from fastnn.experiments import environment
    from fastnn.tune import worker_gpu

    assert [worker_gpu(["0", "1"], w) for w in range(3)] == [{"CUDA_VISIBLE_DEVICES": n} for n in "010"]
    assert worker_gpu(["3"], 1) == {} and worker_gpu([], 0) == {}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    with environment({"CUDA_VISIBLE_DEVICES": "1", "FASTNN_TEST_UNSET": "x"}):
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and os.environ["FASTNN_TEST_UNSET"] == "x"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7" and "FASTNN_TEST_UNSET" not in os.environ
    if not gpu_ids():  # no usable CuPy here: a worker's environment is left as it is
        assert worker_gpu(gpu_ids(), 0) == {}
