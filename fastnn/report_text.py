"""An experiment's report in words: report.md, its tables of runs and arms, and under each study a
comparison generated from the measured numbers (differences in accuracy points, loss and seconds)
that says nothing the numbers do not. :mod:`fastnn.report` draws the figures and writes the files."""

from __future__ import annotations

from typing import Any

from fastnn.config import TrainConfig
from fastnn.experiments import Arm, ExperimentResult, Study, schedule_text

QUICK_WARNING = "quick run: not for conclusions"
TARGET = 0.42  # the test accuracy the assignment asks the base recipe to reach
RUN_HEADERS = (
    "Run", "Layers", "Activation", "Optimizer", "LR", "Regularization", "Schedule", "Epochs", "Batch",
    "Seed", "Test acc", "Best val acc", "Train acc", "Train loss", "Wall time",
)  # fmt: skip
ARM_HEADERS = ("Study", "Arm", "Runs", "Test acc", "Best val acc", "Train acc", "Train loss", "Wall time")


# ---------------------------------------------------------------- numbers to text


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


FORMATS = {
    "test_accuracy": _pct,
    "best_val_accuracy": _pct,
    "final_train_accuracy": _pct,
    "final_train_loss": _loss,
    "seconds": _secs,
}


def _stat_text(metric: str, stat: dict[str, float] | None) -> str:
    """One value, or ``mean ± std (min–max)`` over seeds."""
    if stat is None:
        return "diverged"
    fmt = FORMATS[metric]
    if stat["n"] == 1:
        return fmt(stat["mean"])
    spread = {"final_train_loss": f"{stat['std']:.4f}", "seconds": f"{stat['std']:.1f} s"}.get(
        metric, f"{100 * stat['std']:.2f}"
    )  # accuracies: in points
    return f"{fmt(stat['mean'])} ± {spread} ({fmt(stat['min'])}–{fmt(stat['max'])})"


def layers_text(config: TrainConfig, data: dict[str, int]) -> str:
    """Neurons per layer, input to output, e.g. ``3072-1024-512-10 (2 hidden)``."""
    sizes = [data["features"], *config.hidden, data["classes"]]
    blocks = f" with {config.blocks} residual blocks ({config.expansion}x wide inside)" if config.blocks else ""
    norm = f", {config.norm} norm" if config.norm != "none" else ""
    return f"{'-'.join(map(str, sizes))} ({len(config.hidden)} hidden){blocks}{norm}"


def optimizer_text(config: TrainConfig) -> str:
    if config.optimizer == "adam":
        return "Adam"
    if config.optimizer == "adamw":
        return f"AdamW weight decay {config.weight_decay:g}"
    return f"SGD momentum {config.momentum:g}" + (" Nesterov" if config.nesterov and config.momentum else "")


def regularization_text(config: TrainConfig) -> str:
    parts = [f"L2 lambda={config.l2:g}"] if config.l2 else []
    parts += [f"dropout {config.dropout:g}"] if config.dropout else []
    parts += [f"label smoothing {config.label_smoothing:g}"] if config.label_smoothing else []
    parts += [f"mixup alpha={config.mixup:g}"] if config.mixup else []
    parts += ["augmentation"] if config.augment else []
    return ", ".join(parts) or "none"


def run_rows(result: ExperimentResult) -> list[list[str]]:
    """One row of RUN_HEADERS per distinct run: the studies' runs first, then sweep-only runs."""
    order = list(dict.fromkeys(rid for s in _report_order(result) for a in s.arms for rid in a.run_ids))
    rows = []
    for rid in order:
        run, record = result.plan.runs[rid], result.records[rid]
        c = run.config
        s = record.summary or {}
        results = (
            [_pct(s["test_accuracy"]), _pct(s["best_val_accuracy"]), _pct(s["final_train_accuracy"]),
             _loss(s["final_train_loss"]), _secs(s["seconds"])]
            if record.ok else ["diverged", "", "", "", ""]
        )  # fmt: skip
        rows.append([
            run.label, layers_text(c, result.data), c.activation, optimizer_text(c), f"{c.lr:g}",
            regularization_text(c), schedule_text(c), str(c.epochs), str(c.batch_size), str(c.seed), *results,
        ])  # fmt: skip
    return rows


def arm_rows(result: ExperimentResult) -> list[list[str]]:
    """One row of ARM_HEADERS per arm of every study: the results over its seeds."""
    rows = []
    for study in _report_order(result):
        for arm in study.arms:
            st = result.arm_stats(arm)
            runs = f"{len(arm.run_ids)}" + (f" ({st['diverged']} diverged)" if st["diverged"] else "")
            rows.append([study.title, arm.name, runs, *(_stat_text(m, st[m]) for m in FORMATS)])
    return rows


def _report_order(result: ExperimentResult) -> list[Study]:
    """Studies in reading order: base, optimizer, L2, schedule, the --study ones, then the sweep that chose
    the lrs."""
    rank = {"base": 0, "optimizer": 1, "l2": 2, "schedule": 3, "sweep": 9}  # --study ones before the sweep
    return sorted(result.plan.studies, key=lambda s: rank.get(s.key, 5))


# ---------------------------------------------------------------- comparisons in numbers


def _mean(result: ExperimentResult, arm: Arm, metric: str) -> float | None:
    stat = result.arm_stats(arm)[metric]
    return None if stat is None else stat["mean"]


def _difference(metric: str, a: float, b: float) -> str:
    if metric.endswith("accuracy"):
        return f"{100 * (a - b):+.2f} points"
    if metric == "seconds":
        return f"{a - b:+.1f} s"
    return f"{a - b:+.4f}"


def comparison(result: ExperimentResult, study: Study) -> str:
    """What the study measured, in numbers only: each arm's values and the first arm minus the second."""
    names = {
        "test_accuracy": "test accuracy",
        "best_val_accuracy": "best validation accuracy",
        "final_train_accuracy": "final training accuracy",
        "final_train_loss": "final training loss",
        "seconds": "wall time",
    }
    if study.key == "sweep":
        return _sweep_comparison(result, study)
    seeds = len(study.arms[0].run_ids)
    prefix = f"Means over {seeds} seeds. " if seeds > 1 else ""
    diverged = [
        f"{arm.name} diverged in {n} of {len(arm.run_ids)} runs (non-finite training loss)."
        for arm in study.arms
        if (n := result.arm_stats(arm)["diverged"])
    ]
    if len(study.arms) == 1:
        arm = study.arms[0]
        test = _mean(result, arm, "test_accuracy")
        parts = [f"{names[m]} {FORMATS[m](_mean(result, arm, m))}" for m in FORMATS]
        sentences = [prefix + f"{arm.name}: " + ", ".join(parts) + "."]
        if test is not None:
            verdict = "met" if test >= TARGET else "not met"
            sentences.append(f"The assignment asks for at least {TARGET:.0%} test accuracy: {verdict}.")
        return " ".join(sentences + diverged)
    first, second = study.arms[0], study.arms[1]
    parts = []
    for metric in FORMATS:
        a, b = _mean(result, first, metric), _mean(result, second, metric)
        fmt = FORMATS[metric]
        delta = f" (difference {_difference(metric, a, b)})" if a is not None and b is not None else ""
        parts.append(f"{names[metric]} {fmt(a)} vs {fmt(b)}{delta}")
    if seeds > 1:
        spread = [result.arm_stats(arm)["test_accuracy"] for arm in (first, second)]
        if all(spread):
            parts.append(
                f"test accuracy std over seeds {100 * spread[0]['std']:.2f} vs {100 * spread[1]['std']:.2f} points"
            )
    text = prefix + f"{first.name} vs {second.name}: " + "; ".join(parts) + "."
    return " ".join([text, *diverged])


def _sweep_comparison(result: ExperimentResult, study: Study) -> str:
    sentences = []
    for optimizer in ("adam", "sgd"):
        tried = []
        for arm in study.arms:
            config = result.plan.runs[arm.run_ids[0]].config
            if config.optimizer != optimizer:
                continue
            val = _mean(result, arm, "best_val_accuracy")
            tried.append(f"lr={config.lr:g} {'diverged' if val is None else _pct(val)}")
        sentences.append(
            f"{optimizer} best validation accuracy by learning rate: {', '.join(tried)}; "
            f"chosen lr={result.chosen_lr[optimizer]:g}."
        )
    return " ".join(sentences)


# ---------------------------------------------------------------- report.md


def _md_table(headers: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    def line(cells: Any) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)])


def setup_lines(result: ExperimentResult) -> list[str]:
    """The shared setup in a few lines (the markdown list and the PDF's first page)."""
    base, settings, data = result.base, result.settings, result.data
    seeds = range(base.seed, base.seed + settings.seeds)
    sweep_epochs = settings.sweep_epochs or base.epochs
    return [
        f"Data: CIFAR-10, {data['train']:,} training / {data['validation']:,} validation / {data['test']:,} test "
        f"images; one split (validation seed {base.split_seed}) prepared once and used by every run.",
        f"Base recipe: {layers_text(base, data)}, {base.activation}, {optimizer_text(base)} lr={base.lr:g}, "
        f"regularization {regularization_text(base)}, schedule {schedule_text(base)}, {_epochs(base.epochs)}, "
        f"batch {base.batch_size}, {base.dtype}.",
        f"Seeds: {settings.seeds} ({', '.join(map(str, seeds))}) for every study run; the sweep uses seed {base.seed}.",
        f"Learning-rate sweep: Adam {', '.join(f'{lr:g}' for lr in settings.adam_lrs)}; SGD "
        f"{', '.join(f'{lr:g}' for lr in settings.sgd_lrs)}; {_epochs(sweep_epochs)} each; chosen by best "
        f"validation accuracy: Adam {result.chosen_lr['adam']:g}, SGD {result.chosen_lr['sgd']:g}.",
        f"Backend: {result.backend}. Wall time: a run's training, its per-epoch validation included, the test not.",
    ]


def markdown(result: ExperimentResult) -> str:
    """report.md: setup, a table and a comparison per study, the curves, and every run in full."""
    out = ["# fastnn experiments on CIFAR-10", ""]
    if result.settings.quick:
        out += [f"> **{QUICK_WARNING}** — few epochs on a subset of the training images; it checks the pipeline.", ""]
    out += ["## Setup", "", *(f"- {line}" for line in setup_lines(result)), ""]
    out += ["## Results by study", ""]
    for study in _report_order(result):
        rows = [row[1:] for row in arm_rows(result) if row[0] == study.title]
        out += [f"### {study.title}", "", study.note, "", _md_table(ARM_HEADERS[1:], rows), ""]
        out += [f"**Measured:** {comparison(result, study)}", ""]
    values = (
        "Values are one run each"
        if result.settings.seeds == 1
        else "Values are mean ± sample standard deviation (accuracy in points) and (min–max) over the seeds"
    )
    out += [f"{values}; best validation accuracy is the highest over the epochs, the others are at the last epoch.", ""]
    out += [
        "## Curves",
        "",
        "![Validation accuracy and training loss per epoch, one panel a study](curves.png)",
        "",
        "## Every run",
        "",
        "Each run is saved in `runs/<folder>/` (result.json, model.npz, metrics.jsonl). A run that plays",
        "several roles (e.g. the base run is also the Adam and the without-L2 run) was trained once.",
        "",
        _md_table(RUN_HEADERS, run_rows(result)),
        "",
        _md_table(("Run", "Folder", "Used in"), _role_rows(result)),
        "",
    ]
    return "\n".join(out)


def _role_rows(result: ExperimentResult) -> list[list[str]]:
    roles = result.plan.roles()
    order = list(dict.fromkeys(rid for s in _report_order(result) for a in s.arms for rid in a.run_ids))
    return [[result.plan.runs[rid].label, f"`{rid}`", "; ".join(roles[rid])] for rid in order]
