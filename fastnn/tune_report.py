"""A study's report: best.toml (the best trial as a ``[train]`` table for ``fastnn train --config``),
report.md, trials.md and Optuna's figures (history, parallel coordinates, importances), written as
one set."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

from fastnn.tune import Space, best_toml


def figures(study: Any) -> dict[str, bytes]:
    """The optimization history, parameter importances and parallel coordinates, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as vis

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the plots are stable enough to read

    plots = {"history.png": vis.plot_optimization_history, "parallel.png": vis.plot_parallel_coordinate}
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(done) >= 2 and len(study.trials[0].params) >= 1:
        plots["importances.png"] = vis.plot_param_importances
    out = {}
    for name, plot in plots.items():
        ax = plot(study)
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        out[name] = buffer.getvalue()
    return out


def trials_table(study: Any) -> str:
    """All trials as a Markdown table: number, state, validation accuracy, epochs reached, params."""
    names = sorted({name for t in study.trials for name in t.params})
    rows = ["| trial | state | val accuracy | epochs | " + " | ".join(names) + " |"]
    rows.append("|" + "---|" * (4 + len(names)))
    for t in study.trials:
        value = (
            f"{t.value:.2%}"
            if t.value is not None
            else (f"{t.intermediate_values[max(t.intermediate_values)]:.2%}" if t.intermediate_values else "-")
        )
        epochs = max(t.intermediate_values) if t.intermediate_values else 0
        cells = [_cell(t.params.get(n, "")) for n in names]
        rows.append(f"| {t.number} | {t.state.name.lower()} | {value} | {epochs} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def report_markdown(study: Any, command: str, best: dict[str, Any], figure_names: list[str]) -> str:
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    lines = [
        f"# Study `{study.study_name}`",
        "",
        f"Command: `{command}`",
        "",
        "Trials: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())),
        "",
        f"Best trial: {study.best_trial.number}, validation accuracy {study.best_value:.2%}, "
        f"params {study.best_trial.params}",
        "",
        f"Test accuracy of the best trial, trained again and measured once: {best['test_accuracy']:.2%} "
        f"(test loss {best['test_loss']:.4f})",
        "",
        *[f"![{name}]({name})" for name in figure_names],
        "",
        "## All trials",
        "",
        trials_table(study),
    ]
    return "\n".join(lines)


def write_report(out: Path, study: Any, space: Space, command: str, best: dict[str, Any]) -> None:
    """best.toml, report.md, trials.md and the figures, written as a set (all or none)."""
    from fastnn.atomic import write_atomic_set

    pngs = figures(study)
    files = {out / name: data for name, data in pngs.items()}
    files[out / "best.toml"] = best_toml(space, study.best_trial.params).encode()
    files[out / "trials.md"] = trials_table(study).encode()
    files[out / "report.md"] = report_markdown(study, command, best, sorted(pngs)).encode()
    write_atomic_set(files)
