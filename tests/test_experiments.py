"""``fastnn experiments``: the plan of studies, the learning-rate choice, resuming, the command.

Most tests replace ``run_training`` by a fake whose numbers are set per config, so that what is
chosen and what is trained again can be checked exactly; one test trains tiny real networks through
the command, and one (data, slow) runs ``--quick`` on the real CIFAR-10.
"""

import dataclasses
import json
import os
from pathlib import Path

import pytest
from _util import synthetic_split
from click.testing import CliRunner

import fastnn.experiments.runner as experiment_runner  # where run_training is looked up
from fastnn.backend import get_backend
from fastnn.config import TrainConfig
from fastnn.experiments import (
    ExperimentError,
    ExperimentSettings,
    Plan,
    Reporter,
    add_studies,
    add_sweep,
    config_key,
    quick,
    run_experiments,
    run_id,
    stats,
)
from fastnn.run import RunResult
from fastnn.train import EpochRecord, NonFiniteLoss
from fastnn_cli.main import cli

BASE = TrainConfig(hidden=(8,), epochs=3, batch_size=64, validation=150, augment=False)


def _split(**kwargs):
    return synthetic_split(**{"n_train": 300, **kwargs})


class FakeTraining:
    """Stands in for run_training: validation and test accuracy are functions of the config, a
    learning rate in ``diverge`` raises NonFiniteLoss, and every call is counted."""

    def __init__(self, val=lambda c: 0.5, test=lambda c: 0.5, diverge=()):
        self.val, self.test, self.diverge, self.calls = val, test, set(diverge), []

    def __call__(self, config, split, backend, out_dir=None, *, listener=None):
        self.calls.append(config)
        history = []
        for epoch in range(config.epochs):
            if config.lr in self.diverge and epoch == 1:
                raise NonFiniteLoss(f"loss became nan with learning rate {config.lr}")
            listener.epoch_started(epoch, config.lr)
            val_accuracy = self.val(config) - 0.01 * epoch  # the best is the first epoch's
            record = EpochRecord(epoch + 1, config.lr, 1.0 / (epoch + 1), 0.6, 1.0, val_accuracy, 0.1)
            history.append(record)
            listener.epoch_finished(record, None)
        return RunResult(config, None, history, 1.0, self.test(config), 0.3)


@pytest.fixture
def fake(monkeypatch):
    def install(**kwargs):
        training = FakeTraining(**kwargs)
        monkeypatch.setattr(experiment_runner, "run_training", training)
        return training

    return install


def _ids(plan, key):
    return {arm.name: arm.run_ids for arm in plan.study(key).arms}


def test_plan_has_every_study_and_trains_each_config_once():
    settings = ExperimentSettings(seeds=2)
    plan = Plan(BASE)
    add_sweep(plan, settings)
    add_studies(plan, settings, {"adam": BASE.lr, "sgd": 0.01})
    assert [s.key for s in plan.studies] == ["sweep", "base", "optimizer", "l2", "schedule"]
    base = _ids(plan, "base")["base"]
    assert [plan.runs[rid].config.seed for rid in base] == [0, 1]
    # The base run is also the Adam, the without-L2 and the with-schedule run.
    assert _ids(plan, "optimizer")["Adam lr=0.001"] == base
    assert _ids(plan, "l2")["without L2"] == base
    assert _ids(plan, "schedule")["with schedule (exp k=0.05)"] == base
    # The sweep runs the base's epochs, so its seed-0 runs at the chosen lrs are the study runs.
    sweep = _ids(plan, "sweep")
    assert sweep["adam lr=0.001"] == base[:1] and sweep["sgd lr=0.01"] == _ids(plan, "optimizer")["SGD lr=0.01"][:1]
    # 7 sweep runs (seed 0) + seed 1 of base and SGD + 2 seeds each of with-L2 and without-schedule.
    assert len(plan.runs) == 7 + 2 + 4
    with_l2 = plan.runs[_ids(plan, "l2")["with L2 (lambda=0.0001)"][0]].config
    assert with_l2 == dataclasses.replace(BASE, l2=1e-4)
    no_schedule = plan.runs[_ids(plan, "schedule")["without schedule"][0]].config
    assert no_schedule == dataclasses.replace(BASE, schedule="none")
    sgd = plan.runs[_ids(plan, "optimizer")["SGD lr=0.01"][0]].config
    assert sgd == dataclasses.replace(BASE, optimizer="sgd", lr=0.01)
    roles = plan.roles()[base[0]]
    assert "Base run: base" in roles and "With vs without L2: without L2" in roles


def test_plan_from_a_base_with_l2_and_without_schedule():
    base = dataclasses.replace(BASE, l2=1e-3, schedule="none")
    settings = ExperimentSettings(sweep_epochs=1, decay_study=0.1)
    plan = Plan(base)
    add_sweep(plan, settings)
    add_studies(plan, settings, {"adam": 3e-3, "sgd": 0.03})
    assert all(plan.runs[ids[0]].config.epochs == 1 for ids in _ids(plan, "sweep").values())
    l2 = {name: plan.runs[ids[0]].config.l2 for name, ids in _ids(plan, "l2").items()}
    assert l2 == {"with L2 (lambda=0.001)": 1e-3, "without L2": 0.0}
    schedule = {name: plan.runs[ids[0]].config for name, ids in _ids(plan, "schedule").items()}
    assert schedule["with schedule (exp k=0.1)"] == dataclasses.replace(base, schedule="exp", decay=0.1)
    assert schedule["without schedule"] == base
    # The chosen Adam lr differs from the base's, so the Adam run is not the base run.
    assert _ids(plan, "optimizer")["Adam lr=0.003"] != _ids(plan, "base")["base"]


def test_optional_studies_compare_each_technique_with_and_without():
    settings = ExperimentSettings(studies=("norm", "smoothing", "mixup", "adamw"))
    plain = dataclasses.replace(BASE, norm="none", label_smoothing=0.0)  # a base without them
    plan = Plan(plain)
    add_sweep(plan, settings)
    add_studies(plan, settings, {"adam": 3e-3, "sgd": 0.01})
    assert [s.key for s in plan.studies] == [
        "sweep", "base", "optimizer", "l2", "schedule", "norm", "smoothing", "mixup", "adamw"
    ]  # fmt: skip
    base = _ids(plan, "base")["base"]

    def configs(key):
        return {name: plan.runs[ids[0]].config for name, ids in _ids(plan, key).items()}

    norm = {"with batch norm": dataclasses.replace(plain, norm="batch"), "without normalization": plain}
    assert configs("norm") == norm
    assert configs("smoothing")["with smoothing eps=0.1"] == dataclasses.replace(plain, label_smoothing=0.1)
    assert configs("mixup")["with mixup alpha=0.2"] == dataclasses.replace(plain, mixup=0.2)
    for key in ("norm", "smoothing", "mixup"):  # "without" is the base run, trained once
        assert list(_ids(plan, key).values())[1] == base
    assert configs("adamw") == {
        "AdamW wd=0.05": dataclasses.replace(plain, optimizer="adamw", lr=3e-3, weight_decay=0.05),
        "Adam L2 lambda=0.0001": dataclasses.replace(plain, lr=3e-3, l2=1e-4),
    }
    assert plan.runs[_ids(plan, "adamw")["AdamW wd=0.05"][0]].label == "adamw lr=0.003 wd=0.05"
    assert plan.runs[_ids(plan, "mixup")["with mixup alpha=0.2"][0]].label == "adam lr=0.001 mixup 0.2"


def test_optional_studies_keep_a_base_that_has_the_technique():
    base = dataclasses.replace(BASE, norm="layer", mixup=0.8)
    plan = Plan(base)
    add_studies(plan, ExperimentSettings(studies=("mixup", "norm")), {"adam": 1e-3, "sgd": 0.01})
    assert [plan.runs[ids[0]].config.mixup for ids in _ids(plan, "mixup").values()] == [0.8, 0.0]
    assert [plan.runs[ids[0]].config.norm for ids in _ids(plan, "norm").values()] == ["layer", "none"]
    assert "The base's mixup = 0.8 against 0.0." in plan.study("mixup").note


def test_quick_settings_keep_what_was_given():
    base, settings = quick(BASE, ExperimentSettings(), keep={"epochs"})
    assert settings.quick and settings.sweep_epochs == 1 and len(settings.adam_lrs) == len(settings.sgd_lrs) == 2
    assert base.epochs == BASE.epochs and base.subset == 5000 and base.validation == 1000


def test_sweep_chooses_by_validation_accuracy_never_test(fake, tmp_path):
    val = {1e-4: 0.30, 1e-3: 0.50, 1e-2: 0.60, 0.003: 0.40, 0.1: 0.45, 1.0: 0.99}
    test = {1e-4: 0.90, 1e-3: 0.10, 1e-2: 0.10, 0.003: 0.90, 0.1: 0.10, 1.0: 0.99}
    fake(val=lambda c: val[c.lr], test=lambda c: test[c.lr], diverge={1.0})
    settings = ExperimentSettings(adam_lrs=(1e-4, 1e-3, 1e-2), sgd_lrs=(0.003, 0.1, 1.0), sweep_epochs=2)
    result = run_experiments(BASE, settings, _split(), get_backend("cpu"), tmp_path)
    assert result.chosen_lr == {"adam": 1e-2, "sgd": 0.1}  # lr=1.0 diverged, so its 0.99 does not count
    diverged = [r for r in result.records.values() if not r.ok]
    assert [r.config["lr"] for r in diverged] == [1.0] and len(diverged[0].history) == 1
    saved = json.loads((tmp_path / "runs" / diverged[0].run_id / "result.json").read_text())
    assert saved["status"] == "diverged" and "nan" in saved["error"]


def test_every_lr_diverging_is_a_clear_error(fake, tmp_path):
    fake(diverge={0.01, 0.1})
    settings = ExperimentSettings(adam_lrs=(1e-3,), sgd_lrs=(0.01, 0.1))
    with pytest.raises(ExperimentError, match="every sgd learning rate of the sweep diverged.*--sgd-lrs"):
        run_experiments(BASE, settings, _split(), get_backend("cpu"), tmp_path)


def test_no_validation_images_is_a_clear_error(fake, tmp_path):
    split = _split(n_val=0)
    with pytest.raises(ExperimentError, match="--validation must be > 0"):
        run_experiments(BASE, ExperimentSettings(), split, get_backend("cpu"), tmp_path)


class CountingReporter(Reporter):
    def __init__(self):
        self.skipped_runs, self.started_runs = [], []

    def skipped(self, run, record):
        self.skipped_runs.append(run.run_id)

    def started(self, run, number, total):
        self.started_runs.append(run.run_id)


def test_resume_skips_finished_runs_and_trains_a_changed_config_again(fake, tmp_path):
    settings = ExperimentSettings(adam_lrs=(1e-3, 1e-2), sgd_lrs=(0.01,), sweep_epochs=1, seeds=2)
    backend, split = get_backend("cpu"), _split()
    first = fake()
    result = run_experiments(BASE, settings, split, backend, tmp_path)
    assert len(first.calls) == len(result.plan.runs) == 3 + 2 * 4  # sweep + 2 seeds x 4 distinct study configs
    assert len({json.dumps(c.to_dict(), sort_keys=True) for c in first.calls}) == len(first.calls)

    again, reporter = fake(), CountingReporter()
    resumed = run_experiments(BASE, settings, split, backend, tmp_path, reporter)
    assert again.calls == [] and sorted(reporter.skipped_runs) == sorted(result.plan.runs)
    assert {k: r.summary for k, r in resumed.records.items()} == {k: r.summary for k, r in result.records.items()}

    changed = fake()
    run_experiments(BASE, dataclasses.replace(settings, l2_study=1e-3), split, backend, tmp_path)
    assert [(c.l2, c.seed) for c in changed.calls] == [(1e-3, 0), (1e-3, 1)]  # only the with-L2 runs


def test_an_interrupted_run_is_trained_again(fake, tmp_path):
    settings = ExperimentSettings(adam_lrs=(1e-3,), sgd_lrs=(0.01,))
    fake()
    result = run_experiments(BASE, settings, _split(), get_backend("cpu"), tmp_path)
    victim = next(iter(result.plan.runs))
    (tmp_path / "runs" / victim / "result.json").unlink()  # as if stopped after its last checkpoint
    (tmp_path / "runs" / sorted(result.plan.runs)[-1] / "result.json").write_text("{not json")
    again = fake()
    run_experiments(BASE, settings, _split(), get_backend("cpu"), tmp_path)
    assert len(again.calls) == 2


def test_stats_mean_sample_std_min_max():
    assert stats([0.5]) == {"n": 1, "mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5}
    got = stats([0.2, 0.4, float("nan"), None])
    assert got["n"] == 2 and got["mean"] == pytest.approx(0.3) and got["std"] == pytest.approx(0.1414213562)
    assert stats([]) is None


def test_command_trains_reports_and_resumes(tmp_path, monkeypatch):
    import fastnn_cli.experiments as command

    monkeypatch.setattr(command, "load_split", lambda data_dir, validation, split_seed, subset: _split())
    args = ["experiments", "--device", "cpu", "--hidden", "8", "--epochs", "2", "--batch-size", "64",
            "--no-augment", "--adam-lrs", "1e-3,1e-2", "--sgd-lrs", "0.01", "--out", str(tmp_path)]  # fmt: skip
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "learning-rate sweep: 3 runs to train" in first.output
    assert "[adam lr=0.01] epoch   2/2" in first.output and "done  [sgd lr=0.01] run 3/3" in first.output
    for name in ("report.md", "curves.png", "report.pdf", "results.json"):
        assert (tmp_path / name).stat().st_size > 0
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "start" not in second.output and second.output.count("skip  [") == 5


def test_command_plans_the_studies_asked_for(tmp_path, monkeypatch, fake):
    """--study adds the optional studies (here from TOML, as --config gives the base), tiny and fake-trained."""
    import fastnn_cli.experiments as command

    training = fake()
    monkeypatch.setattr(command, "load_split", lambda data_dir, validation, split_seed, subset: _split())
    config = tmp_path / "base.toml"
    config.write_text('hidden = [8]\nepochs = 1\nstudy = ["smoothing", "adamw"]\n')
    args = ["experiments", "--config", str(config), "--device", "cpu", "--adam-lrs", "1e-3", "--sgd-lrs", "0.01",
            "--no-augment", "--out", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [s["key"] for s in results["studies"]][-2:] == ["smoothing", "adamw"]
    assert results["settings"]["studies"] == ["smoothing", "adamw"]
    assert {c.optimizer for c in training.calls} == {"adam", "sgd", "adamw"}
    assert "With vs without label smoothing" in (tmp_path / "out" / "report.md").read_text()


def test_command_usage_errors(tmp_path, monkeypatch):
    import sys

    result = CliRunner().invoke(cli, ["experiments", "--adam-lrs", "1e-3,x", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not a comma-separated list of numbers" in result.output
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    result = CliRunner().invoke(cli, ["experiments", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "pip install matplotlib" in result.output
    assert not (tmp_path / "runs").exists()  # nothing was trained


DATA = os.environ.get("FASTNN_DATA_DIR")


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(
    not DATA or not (Path(DATA) / "cifar-10-python.tar.gz").exists(),
    reason="set FASTNN_DATA_DIR to a folder with cifar-10-python.tar.gz",
)
def test_quick_experiments_on_cifar10_write_the_whole_report(tmp_path):
    result = CliRunner().invoke(cli, ["experiments", "--quick", "--device", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["quick"] and results["data"] == {
        "train": 5000, "validation": 1000, "test": 10000, "features": 3072, "classes": 10
    }  # fmt: skip
    report = (tmp_path / "report.md").read_text()
    assert "quick run: not for conclusions" in report
    for folder, run in results["runs"].items():
        assert (tmp_path / "runs" / folder / "result.json").is_file()
        assert (tmp_path / "runs" / folder / "model.npz").is_file()
        assert f"`{folder}`" in report and run["label"] in report
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "report.pdf").stat().st_size > 0
    assert {s["key"] for s in results["studies"]} == {"base", "optimizer", "l2", "schedule", "sweep"}


def test_recorded_runs_keep_their_ids_when_settings_are_added():
    """The committed study's runs were recorded before ``tf32`` existed: at its default it must not
    change their keys or folder names (else a resumed study retrains them); set, it must."""
    recorded = json.loads((Path(__file__).parent.parent / "docs/experiments/results.json").read_text())["runs"]
    for recorded_id, run in recorded.items():
        config = TrainConfig.from_saved(run["config"])
        assert "tf32" not in run["config"] and config.tf32 is False
        assert run_id(config) == recorded_id
        assert config_key(config) == config_key(run["config"])
        assert config_key(dataclasses.replace(config, tf32=True)) != config_key(run["config"])


def test_the_device_is_not_part_of_a_runs_identity(fake, tmp_path):
    # The same recipe first with --device auto, then --device cpu: the second resumes, into the same folders.
    settings = ExperimentSettings(adam_lrs=(1e-3,), sgd_lrs=(0.01,))
    fake()
    first = run_experiments(dataclasses.replace(BASE, device="auto"), settings, _split(), get_backend("cpu"), tmp_path)
    again = fake()
    second = run_experiments(dataclasses.replace(BASE, device="cpu"), settings, _split(), get_backend("cpu"), tmp_path)
    assert again.calls == [] and sorted(second.records) == sorted(first.records)
    config = dataclasses.replace(BASE, device="gpu")
    assert run_id(config) == run_id(dataclasses.replace(config, device="auto"))


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r["summary"].update(test_accuracy="0.5"),
        lambda r: r["summary"].pop("best_val_accuracy"),
        lambda r: r.update(summary=[0.5]),
        lambda r: r["history"][0].update(val_accuracy=[1]),
        lambda r: r.update(history={"epoch": 1}),
        lambda r: r["config"].update(validation="150"),
        lambda r: r.update(config="adam"),
        lambda r: r.update(status="fine"),
        lambda r: r.update(label=3),
        lambda r: r.pop("history"),
    ],
)
def test_a_result_json_of_the_wrong_kinds_counts_as_unfinished(fake, tmp_path, change):
    # Valid JSON with a wrong type in it: the run is trained again, not a TypeError on resuming.
    settings = ExperimentSettings(adam_lrs=(1e-3,), sgd_lrs=(0.01,))
    fake()
    result = run_experiments(BASE, settings, _split(), get_backend("cpu"), tmp_path)
    path = tmp_path / "runs" / next(iter(result.plan.runs)) / "result.json"
    saved = json.loads(path.read_text())
    change(saved)
    path.write_text(json.dumps(saved))
    again = fake()
    resumed = run_experiments(BASE, settings, _split(), get_backend("cpu"), tmp_path)
    assert len(again.calls) == 1
    assert json.loads(path.read_text())["summary"] == resumed.records[saved["run_id"]].summary


def test_workers_give_the_records_of_a_sequential_run(tmp_path):
    """--workers 2 trains real tiny networks in two processes: every record equals the sequential
    run's but for the seconds it took, and the results are in the same order; a second call resumes."""
    settings = ExperimentSettings(adam_lrs=(1e-3, 1e-2), sgd_lrs=(0.1,), sweep_epochs=2)
    split, backend = _split(), get_backend("cpu")

    def records(out, workers):
        result = run_experiments(BASE, settings, split, backend, out, workers=workers)
        rows = [r.to_dict() for r in result.records.values()]
        for row in rows:
            row["summary"] = {k: v for k, v in (row["summary"] or {}).items() if k != "seconds"}
            row["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in row["history"]]
        return rows

    sequential = records(tmp_path / "one", 1)
    assert records(tmp_path / "two", 2) == sequential
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "two").glob("runs/*/result.json")}
    assert records(tmp_path / "two", 2) == sequential  # resumed: nothing trained again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "two").glob("runs/*/result.json")} == before
