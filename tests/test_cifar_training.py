"""End to end on the real CIFAR-10 (FASTNN_DATA_DIR, set by .ci/run): train briefly, then evaluate.

A short budget (3 epochs of the default network) must already reach 45% test accuracy, the accuracy
the README's results table quotes for that command, and ``fastnn evaluate`` on the checkpoint must
reproduce the accuracy ``fastnn train`` printed.
"""

import contextlib
import re
from pathlib import Path

from _util import needs_real_data, printed_test_accuracy
from click.testing import CliRunner

from fastnn_cli.main import cli

pytestmark = needs_real_data


def _readme_threads():
    """BLAS on 2 threads, as the README's numbers were measured (2 cores): on another count BLAS sums,
    and so the last digits of the accuracy, come out otherwise."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=2, user_api="blas")


def _readme_quick_row_accuracy() -> float:
    """The accuracy in the README's results row made by ``fastnn train --epochs 3`` (this test's run)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.endswith("| `fastnn train --epochs 3` |"))
    return float(re.search(r"\| ([\d.]+)% \|", row).group(1))


def test_short_training_reaches_45_percent_and_evaluate_reproduces_it(tmp_path):
    runner = CliRunner()
    with _readme_threads():
        trained = runner.invoke(cli, ["train", "--device", "cpu", "--epochs", "3", "--out", str(tmp_path)])
    assert trained.exit_code == 0, trained.output
    accuracy = printed_test_accuracy(trained.output)
    assert accuracy >= 45.0
    assert accuracy == _readme_quick_row_accuracy(), "the README's results table quotes another accuracy"
    assert (tmp_path / "model.npz").is_file() and (tmp_path / "metrics.jsonl").is_file()
    evaluated = runner.invoke(cli, ["evaluate", str(tmp_path / "model.npz"), "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert printed_test_accuracy(evaluated.output) == accuracy
    assert "confusion matrix" in evaluated.output
