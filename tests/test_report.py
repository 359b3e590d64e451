"""The experiment report: every file written (whole or not at all), every run and field in report.md,
every number in results.json, and a PDF of at most three pages."""

import json
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import fastnn.experiments as experiments
import fastnn.experiments.runner as experiment_runner  # where run_training is looked up
import fastnn.report as report
from fastnn.backend import get_backend
from fastnn.config import TrainConfig
from fastnn.experiments import ExperimentSettings, run_experiments
from fastnn.run import RunResult
from fastnn.train import EpochRecord

BASE = TrainConfig(hidden=(8,), epochs=2, batch_size=64, validation=150, augment=False, norm="none",
                   label_smoothing=0.0)


def _split(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(3, 20))

    def part(n):
        y = rng.integers(0, 3, size=n)
        return (centres[y] + rng.normal(size=(n, 20))).astype(np.float32), y.astype(np.int64)

    (xt, yt), (xv, yv), (xs, ys) = part(300), part(150), part(150)
    return SimpleNamespace(
        x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys,
        mean=np.zeros(3), std=np.ones(3), class_names=("a", "b", "c"),
    )


def pdf_pages(data: bytes) -> int:
    """Pages of a PDF: its page objects (``/Type /Page``, not ``/Pages``). Enough for matplotlib's
    uncompressed object dictionaries; no PDF library needed."""
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    return len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", data))


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """A tiny real experiment: two seeds, one SGD learning rate that diverges."""
    out = tmp_path_factory.mktemp("experiment")
    settings = ExperimentSettings(adam_lrs=(1e-3, 1e-2), sgd_lrs=(0.01, 1e4), seeds=2, quick=True)
    return run_experiments(BASE, settings, _split(), get_backend("cpu"), out)


@pytest.fixture(scope="module")
def written(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, report.write_report(result, out)


def test_every_file_is_written(written):
    out, paths = written
    assert sorted(paths) == ["curves.png", "report.md", "report.pdf", "results.json"]
    for path in paths.values():
        assert path.parent == out and path.stat().st_size > 0
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert not list(out.glob(".*.part"))  # no temporary files left


def test_pdf_has_at_most_three_pages(written):
    out, _ = written
    assert 1 <= pdf_pages((out / "report.pdf").read_bytes()) <= 3


def test_markdown_lists_every_run_with_every_field(result, written):
    text = (written[0] / "report.md").read_text()
    assert "quick run: not for conclusions" in text
    for header in report.RUN_HEADERS:
        assert f"| {header} " in text or f" {header} |" in text
    for run_id, run in result.plan.runs.items():
        assert f"`{run_id}`" in text
        row = next(line for line in text.splitlines() if line.startswith(f"| {run.label} | 20-8-3"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:10] == [
            "20-8-3 (1 hidden)", "relu", report.optimizer_text(run.config), f"{run.config.lr:g}",
            report.regularization_text(run.config), experiments.schedule_text(run.config),
            str(run.config.epochs), "64", str(run.config.seed),
        ]  # fmt: skip
        record = result.records[run_id]
        expected = f"{100 * record.summary['test_accuracy']:.2f}%" if record.ok else "diverged"
        assert cells[10] == expected
    for words in ("L2 lambda=0.0001", "none (constant)", "exp k=0.05", "SGD momentum 0.9", "diverged"):
        assert words in text
    for study in result.plan.studies:
        assert f"### {study.title}" in text


def test_comparisons_state_the_measured_numbers(result):
    study = result.plan.study("l2")
    text = report.comparison(result, study)
    with_l2, without = (result.arm_stats(arm)["test_accuracy"]["mean"] for arm in study.arms)
    assert f"test accuracy {100 * with_l2:.2f}% vs {100 * without:.2f}%" in text
    assert f"difference {100 * (with_l2 - without):+.2f} points" in text and "Means over 2 seeds" in text
    sweep = report.comparison(result, result.plan.study("sweep"))
    assert "lr=10000 diverged" in sweep and f"chosen lr={result.chosen_lr['sgd']:g}" in sweep


def test_results_json_holds_every_number(result, written):
    def no_nan(name):
        raise AssertionError(f"{name} in results.json is not standard JSON")

    data = json.loads((written[0] / "results.json").read_text(), parse_constant=no_nan)
    assert data["format"] == report.FORMAT and data["quick"] is True
    assert data["base_config"] == BASE.to_dict() and data["chosen_lr"] == result.chosen_lr
    assert set(data["runs"]) == set(result.plan.runs)
    for run_id, run in data["runs"].items():
        assert run["config"] == result.plan.runs[run_id].config.to_dict() and run["roles"]
        if run["status"] == "ok":
            assert set(run["summary"]) >= set(experiments.METRICS)
            assert [row["epoch"] for row in run["history"]] == list(range(1, run["config"]["epochs"] + 1))
    assert [s["key"] for s in data["studies"]] == ["sweep", "base", "optimizer", "l2", "schedule"]
    base_arm = data["studies"][1]["arms"][0]
    assert base_arm["stats"]["test_accuracy"]["n"] == 2 and set(base_arm["stats"]["test_accuracy"]) == {
        "n", "mean", "std", "min", "max"
    }  # fmt: skip
    assert set(data["comparisons"]) == {"sweep", "base", "optimizer", "l2", "schedule"}


def test_a_full_report_is_written_or_none(result, tmp_path, monkeypatch):
    def broken(result):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(report, "pdf_bytes", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        report.write_report(result, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_says_how_to_install(result, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(report.ReportError, match=r"pip install matplotlib"):
        report.write_report(result, tmp_path)


def test_many_runs_still_fit_three_pages(tmp_path, monkeypatch):
    """Five seeds and larger sweeps: the tables shrink their font, the page count stays."""

    def fake_training(config, split, backend, out_dir=None, *, listener=None):
        history = [EpochRecord(e, config.lr, 1.0 / e, 0.5, 1.0, 0.3 + 0.01 * e + config.seed / 100, 0.1)
                   for e in range(1, config.epochs + 1)]  # fmt: skip
        return RunResult(config, None, history, 1.0, 0.4 + config.seed / 100, 1.0)

    monkeypatch.setattr(experiment_runner, "run_training", fake_training)
    settings = ExperimentSettings(adam_lrs=(1e-4, 3e-4, 1e-3, 3e-3), sgd_lrs=(1e-3, 3e-3, 0.01, 0.03), seeds=5)
    result = run_experiments(BASE, settings, _split(), get_backend("cpu"), tmp_path)
    assert len(result.plan.runs) > 25
    assert pdf_pages(report.pdf_bytes(result)) == 3
    assert "quick run" not in report.markdown(result)
