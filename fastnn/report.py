"""The report of an experiment: report.md, curves.png, report.pdf (three pages) and results.json.

Everything here is drawn from a :class:`fastnn.experiments.ExperimentResult`: the words and tables
(report.md, and the PDF's) come from :mod:`fastnn.report_text`; this module draws the curves and the
PDF pages and writes the four files.

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
from fastnn.experiments import ExperimentResult
from fastnn.report_text import (  # noqa: F401 - the text's names, re-exported here as before
    ARM_HEADERS,
    QUICK_WARNING,
    RUN_HEADERS,
    TARGET,
    _report_order,
    arm_rows,
    comparison,
    layers_text,
    markdown,
    optimizer_text,
    regularization_text,
    run_rows,
    setup_lines,
)

FORMAT = "fastnn-experiments-1"
PLOTS_HINT = "matplotlib is needed for curves.png and report.pdf: pip install matplotlib"
PAGE = (11.69, 8.27)  # A4 landscape, inches
# Studies drawn in curves.png, one panel column each, in this order.
PLOTTED = ("optimizer", "l2", "schedule", "norm", "smoothing", "mixup", "adamw", "sweep")


class ReportError(RuntimeError):
    """The report cannot be drawn (matplotlib missing); the message says how to fix it."""


def require_matplotlib() -> None:
    """Raise ReportError with the install command unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ReportError(PLOTS_HINT) from exc


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
