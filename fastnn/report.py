"""The report of an experiment: report.md, curves.png, report.pdf (three pages) and results.json.

Everything here is drawn from a :class:`fastnn.experiments.ExperimentResult`: the tables list each
run's settings and results, and the comparison under each study is generated from the measured
numbers (differences in accuracy points, loss and seconds) and says nothing the numbers do not.

All four files are rendered in memory first and then each is written atomically, so a report is
either whole or not there. matplotlib draws the plots and the PDF; it is an optional dependency
(``pip install matplotlib``, or the ``plots`` extra), imported inside the functions that draw, on the Agg canvas and
without pyplot, so that no global plotting state is touched.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from fastnn.atomic import write_atomic_set
from fastnn.config import TrainConfig
from fastnn.experiments import Arm, ExperimentResult, Study, schedule_text

FORMAT = "fastnn-experiments-1"
PLOTS_HINT = "matplotlib is needed for curves.png and report.pdf: pip install matplotlib"
QUICK_WARNING = "quick run: not for conclusions"
TARGET = 0.42  # the test accuracy the assignment asks the base recipe to reach
PAGE = (11.69, 8.27)  # A4 landscape, inches
# Studies drawn in curves.png, one panel column each, in this order.
PLOTTED = ("optimizer", "l2", "schedule", "norm", "smoothing", "mixup", "adamw", "sweep")
RUN_HEADERS = (
    "Run", "Layers", "Activation", "Optimizer", "LR", "Regularization", "Schedule", "Epochs", "Batch",
    "Seed", "Test acc", "Best val acc", "Train acc", "Train loss", "Wall time",
)  # fmt: skip
ARM_HEADERS = ("Study", "Arm", "Runs", "Test acc", "Best val acc", "Train acc", "Train loss", "Wall time")


class ReportError(RuntimeError):
    """The report cannot be drawn (matplotlib missing); the message says how to fix it."""


def require_matplotlib() -> None:
    """Raise ReportError with the install command unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ReportError(PLOTS_HINT) from exc


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


# ---------------------------------------------------------------- curves.png


def curves_figure(result: ExperimentResult, figsize: tuple[float, float] = (16, 7.5)) -> Any:
    """Validation accuracy (top) and training loss (bottom) against epoch: one column a study, one
    line an arm (the mean over seeds, with a min-max band when there are several)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    studies = [s for key in PLOTTED for s in result.plan.studies if s.key == key]
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(studies), squeeze=False)
    for column, study in enumerate(studies):
        top, bottom = axes[0][column], axes[1][column]
        for arm in study.arms:
            histories = [r.history for r in result.arm_records(arm) if r.ok and r.history]
            if not histories:
                top.plot([], [], label=f"{arm.name} (diverged)")
                continue
            length = min(len(h) for h in histories)
            epochs = np.arange(1, length + 1)
            for ax, key, scale in ((top, "val_accuracy", 100.0), (bottom, "train_loss", 1.0)):
                values = np.array([[row[key] for row in h[:length]] for h in histories], dtype=float) * scale
                (line,) = ax.plot(epochs, values.mean(axis=0), marker="o", markersize=3, label=arm.name)
                if len(histories) > 1:
                    ax.fill_between(epochs, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
        longest = max((len(r.history) for a in study.arms for r in result.arm_records(a)), default=1)
        top.set_title(study.title, fontsize=10)
        top.set_ylabel("validation accuracy (%)")
        bottom.set_ylabel("training loss")
        bottom.set_xlabel("epoch")
        top.legend(fontsize=7)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.set_xlim(0.5, longest + 0.5)  # a one-epoch sweep is a column of points, not an empty axis
            ax.xaxis.get_major_locator().set_params(integer=True)
    title = "Validation accuracy and training loss per epoch"
    fig.suptitle(f"{title} ({QUICK_WARNING})" if result.settings.quick else title, fontsize=11)
    return fig


def _png(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


# ---------------------------------------------------------------- report.pdf


def _text_block(fig: Any, top: float, lines: list[str], fontsize: float, **style: Any) -> float:
    """Write wrapped ``lines`` from height ``top`` (figure fraction) down; return where they end."""
    width_in = PAGE[0] * 0.94
    chars = int(width_in * 72 / (0.55 * fontsize))  # about 0.5 em a character in DejaVu Sans, with margin
    wrapped = [part for line in lines for part in (textwrap.wrap(line, chars) or [""])]
    fig.text(0.03, top, "\n".join(wrapped), fontsize=fontsize, va="top", ha="left", linespacing=1.35, **style)
    return top - len(wrapped) * fontsize * 1.35 / 72 / PAGE[1] - 0.01


def _table(fig: Any, top: float, bottom: float, headers: Any, rows: list[list[str]]) -> float:
    """A table artist from ``top`` down (figure fractions), its font shrunk until it fits the page
    width and the height down to ``bottom``; returns where it ends."""
    from matplotlib.font_manager import FontProperties

    # Text widths grow in proportion to the font size: measure every column at 10 pt, then pick the
    # size at which the widest cells, with the cells' padding, fill the page width at most.
    renderer = fig.canvas.get_renderer()
    regular, bold = FontProperties(size=10), FontProperties(size=10, weight="bold")

    def width(text: str, font: FontProperties) -> float:
        return renderer.get_text_width_height_descent(text, font, ismath=False)[0] / fig.dpi

    lengths = [
        max([width(str(headers[i]), bold), *(width(str(r[i]), regular) for r in rows)]) * 1.25 + 0.05
        for i in range(len(headers))
    ]
    width_in, height_in = PAGE[0] * 0.94, (top - bottom) * PAGE[1]
    row_em = 1.9  # a row's height in font sizes
    fontsize = min(8.0, 10 * width_in / sum(lengths), height_in * 72 / (row_em * (len(rows) + 1)))
    height = (len(rows) + 1) * row_em * fontsize / 72 / PAGE[1]
    ax = fig.add_axes((0.03, top - height, 0.94, height))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=list(headers), cellLoc="left", bbox=(0, 0, 1, 1))
    table.auto_set_font_size(False)
    table.set_fontsize(fontsize)
    for (row, col), cell in table.get_celld().items():
        cell.set_width(lengths[col])  # relative: the bbox scales the columns to the page width
        cell.set_linewidth(0.3)
        if row == 0:
            cell.set_text_props(weight="bold")
            cell.set_facecolor("#e8e8e8")
    return top - height - 0.02


def pdf_pages(result: ExperimentResult) -> list[Any]:
    """The three A4 landscape pages of report.pdf, as figures: setup and every run; the curves; each
    study's table and measured comparison."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def page() -> Any:
        fig = Figure(figsize=PAGE)
        FigureCanvasAgg(fig)
        return fig

    first = page()
    y = _text_block(first, 0.97, ["fastnn experiments on CIFAR-10"], 15, weight="bold")
    if result.settings.quick:
        y = _text_block(first, y, [QUICK_WARNING.upper()], 12, color="#b00000", weight="bold")
    y = _text_block(first, y, setup_lines(result), 8)
    y = _text_block(first, y, ["Every run (best validation accuracy: highest over the epochs; others at the end)"],
                    9, weight="bold")  # fmt: skip
    _table(first, y, 0.03, RUN_HEADERS, run_rows(result))

    curves = curves_figure(result, figsize=PAGE)

    last = page()
    y = _text_block(last, 0.97, ["Results by study" + (f"  ({QUICK_WARNING})" if result.settings.quick else "")],
                    12, weight="bold")  # fmt: skip
    y = _table(last, y, 0.45, ARM_HEADERS, arm_rows(result))
    notes = []
    for study in _report_order(result):
        notes += [f"{study.title}. {study.note} Measured: {comparison(result, study)}", ""]
    _text_block(last, y, notes, 7.5)
    return [first, curves, last]


def pdf_bytes(result: ExperimentResult) -> bytes:
    """report.pdf: the pages of :func:`pdf_pages`."""
    import io

    from matplotlib.backends.backend_pdf import PdfPages

    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"Title": "fastnn experiments on CIFAR-10", "Creator": "fastnn"}) as pdf:
        for fig in pdf_pages(result):
            pdf.savefig(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------- all files


def results_json(result: ExperimentResult) -> dict[str, Any]:
    """results.json: every number of the experiment plus the generated comparisons."""
    return {
        "format": FORMAT,
        **result.to_dict(),
        "comparisons": {s.key: comparison(result, s) for s in result.plan.studies},
    }


def write_report(result: ExperimentResult, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, curves.png, report.pdf and results.json into ``out_dir``; returns their paths.

    Everything is rendered before the first file is written, and the four are written as a set
    (:func:`fastnn.atomic.write_atomic_set`): all new or, on a failure, all as they were.
    Raises ReportError when matplotlib is missing.
    """
    require_matplotlib()
    out = Path(out_dir)
    payloads = {
        "report.md": markdown(result).encode(),
        "curves.png": _png(curves_figure(result)),
        "report.pdf": pdf_bytes(result),
        "results.json": json.dumps(results_json(result), indent=1, allow_nan=False).encode(),
    }
    paths = {name: out / name for name in payloads}
    write_atomic_set({paths[name]: data for name, data in payloads.items()})
    return paths
