"""``python -m bench.accuracy``: several seeds of ``fastnn train``, each on its own core, recorded whole."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _util import needs_real_data, printed_test_accuracy

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--device", "cpu", "--hidden", "32", "--epochs", "1", "--subset", "600", "--validation", "100"]


def _bench(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "bench.accuracy", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0", "--", "--seed", "3"], "--seed and --out are set per run"),
        (["--seeds", "0", "--", "--out=x"], "--seed and --out are set per run"),
        (["--seeds", "1,1"], "give distinct seeds >= 0"),
        (["--seeds", "a"], "seeds are whole numbers"),
    ],
)
def test_bad_options_are_refused_before_any_run(tmp_path, args, message):
    done = _bench("--out", str(tmp_path / "a.json"), *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "a.json").exists()


def _with_real_data(test):
    for mark in needs_real_data:
        test = mark(test)
    return test


@_with_real_data
def test_two_seeds_side_by_side_record_what_train_prints(tmp_path):
    """Each seed's accuracy is the one ``fastnn train`` prints for it on the whole machine: a run pinned
    to one core (one BLAS and update thread) gives the same bits as one on every core."""
    out = tmp_path / "accuracy.json"
    done = _bench("--seeds", "0,1", "--parallel", "2", "--out", str(out), "--", *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text())
    runs = document["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert all(len(r["cores"]) == 1 for r in runs) and runs[0]["cores"] != runs[1]["cores"]
    assert all(r["epochs"] == 1 and r["wall_seconds"] > 0 and 0 < r["test_accuracy_tta"] < 100 for r in runs)
    accuracies = [r["test_accuracy"] for r in runs]
    assert document["test_accuracy"]["mean"] == round(sum(accuracies) / 2, 2)
    assert document["test_accuracy"]["std"] is not None

    from click.testing import CliRunner

    from fastnn_cli.main import cli

    direct = CliRunner().invoke(cli, ["train", *SMALL, "--seed", "1", "--out", str(tmp_path / "direct")])
    assert direct.exit_code == 0, direct.output
    assert printed_test_accuracy(direct.output) == accuracies[1]
