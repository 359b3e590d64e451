"""Pictures of what a trained network learned: the page that ``fastnn inspect`` writes.

From host arrays (the first layer's weights, the test images, the predictions) this draws

- the first layer's weights as 32x32 colour images, one per unit, the units with the largest norm
  first, each scaled to its own range: ``pixel = 255 * (w - min(w)) / (max(w) - min(w))``. A network
  without hidden layers has one unit per class, and these are its class templates, in class order;
- the confusion matrix as a heatmap with its counts, and per-class accuracy as bars;
- the test images the network gets most confidently wrong, with true and predicted class;
- the training curves of ``metrics.jsonl`` (loss, accuracy, learning rate).

:func:`inspection_files` renders ``inspect.png`` (all of it on one picture), ``weights.png`` (every
unit at its own size), ``inspect.json`` (the numbers drawn) and ``index.html`` (the pictures, embedded,
with the run's settings and numbers) in memory; the caller writes them as a set. matplotlib (the
``plots`` extra) draws on the Agg canvas, without pyplot. What this is not: an evaluation; the
numbers come from ``fastnn evaluate``'s computation.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "fastnn-inspect-1"
SIDE = 32  # CIFAR-10 images are 32x32 pixels, three colour planes of SIDE * SIDE values each
GAP = 1  # pixels between two tiles of weights.png
SHOWN_UNITS = 100  # units drawn on inspect.png (weights.png has them all)
MISTAKES = 24  # confidently wrong test images drawn
FIGSIZE, DPI = (20.0, 12.0), 100


def first_weights(network: Any) -> tuple[np.ndarray, bool]:
    """The first weight matrix that reads the images, on the host: (3072, units); and whether its
    units are the classes (a network without hidden layers), so that the tiles are class templates.

    Whatever the layers are (dense, normalization, residual blocks), this is the first 2-D parameter
    with one row per input value, in the order of ``network.parameters()``."""
    n_in = network.sizes[0]
    for _, value in network.parameters():
        if value.ndim == 2 and value.shape[0] == n_in:
            weights = np.asarray(network.backend.to_numpy(value), dtype=np.float64)
            return weights, len(network.sizes) == 2
    raise ValueError(f"the network has no weight matrix of {n_in} rows to draw")


def unit_order(weights: np.ndarray, templates: bool) -> np.ndarray:
    """Indices of the units (columns of ``weights``) as drawn: largest L2 norm first, ties in index
    order; class templates keep the class order."""
    if templates:
        return np.arange(weights.shape[1])
    return np.argsort(-np.linalg.norm(weights, axis=0), kind="stable")


def weight_tiles(weights: np.ndarray) -> np.ndarray:
    """(units, 32, 32, 3) uint8: each column of ``weights`` (3072,) as an image, R, G, B planes, scaled
    to its own range; a constant column is mid-grey."""
    planes = weights.T.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    low = planes.min(axis=(1, 2, 3), keepdims=True)
    span = planes.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = np.where(span > 0, (planes - low) / np.where(span > 0, span, 1.0), 0.5)
    return np.rint(scaled * 255).astype(np.uint8)


def mosaic(tiles: np.ndarray, columns: int, gap: int = GAP) -> np.ndarray:
    """Tiles (n, h, w, 3) in rows of ``columns`` on white: tile k starts at pixel row
    ``(k // columns) * (h + gap)``, column ``(k % columns) * (w + gap)``."""
    n, h, w = tiles.shape[:3]
    rows = max(1, math.ceil(n / columns))
    out = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        top, left = (k // columns) * (h + gap), (k % columns) * (w + gap)
        out[top : top + h, left : left + w] = tile
    return out


def as_images(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised rows (n, 3072) back to (n, 32, 32, 3) uint8 pixels: ``255 * (x * std[c] + mean[c])``."""
    planes = x.reshape(-1, 3, SIDE, SIDE).astype(np.float64) * std[:, None, None] + mean[:, None, None]
    return np.clip(np.rint(planes * 255), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def class_probabilities(network: Any, x: Any, batch_size: int = 2000) -> np.ndarray:
    """Softmax outputs (n, classes) for the device array ``x``, in evaluation mode, on the host
    (read back once per batch of ``batch_size``)."""
    parts = [
        network.backend.to_numpy(network.forward_pass(x[start : min(start + batch_size, x.shape[0]), ...]))
        for start in range(0, x.shape[0], batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, network.n_classes))


def confident_mistakes(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` wrong predictions with the highest ``confidence`` (the probability given
    to the predicted class), highest first."""
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-confidence[wrong], kind="stable")[:k]]


def read_metrics(path: Path) -> tuple[list[dict[str, Any]] | None, str | None]:
    """The rows of a run's ``metrics.jsonl`` (one per epoch), or (None, a note why the curves are left out)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, f"no {path.name} in {path.parent}: the training curves are left out"
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}; the training curves are left out"
    try:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not rows or not all(isinstance(r, dict) and "epoch" in r and "train_loss" in r for r in rows):
            raise ValueError("no epoch rows")
    except ValueError:
        return None, f"{path} holds no epoch rows of `fastnn train`: the training curves are left out"
    return rows, None


def _column(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])


def _draw_weights(ax: Any, tiles: np.ndarray, labels: list[str] | None, title: str) -> None:
    columns = 5 if labels is not None else max(1, math.ceil(math.sqrt(len(tiles))))
    gap = 10 if labels is not None else GAP  # room for a class name under each template
    ax.imshow(mosaic(tiles, columns, gap), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title)
    for k, label in enumerate(labels or []):
        x, y = (k % columns) * (SIDE + gap) + SIDE / 2, (k // columns) * (SIDE + gap) + SIDE
        ax.text(x, y, label, ha="center", va="top", fontsize=9)


def _draw_confusion(ax: Any, counts: np.ndarray, names: list[str]) -> None:
    ax.imshow(counts, cmap="Blues")
    high = counts.max() / 2 if counts.size else 0
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color="white" if count > high else "black")
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix of the test set")


def _draw_class_accuracy(ax: Any, per_class: np.ndarray, names: list[str], accuracy: float) -> None:
    positions = np.arange(len(names))
    ax.barh(positions, per_class * 100, color="tab:blue")
    ax.axvline(accuracy * 100, color="black", linestyle="--", linewidth=1, label=f"all: {accuracy:.1%}")
    for y, value in zip(positions, per_class):
        ax.text(value * 100 + 1, y, f"{value:.0%}", va="center", fontsize=8)
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("accuracy per class")
    ax.legend(loc="lower right", fontsize=8)


def _draw_mistakes(subfig: Any, images: np.ndarray, captions: list[str]) -> None:
    subfig.suptitle("most confidently wrong test images (true -> predicted, probability)")
    if not len(images):
        subfig.text(0.5, 0.5, "no wrong predictions", ha="center")
        return
    axes = subfig.subplots(4, MISTAKES // 4, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < len(images):
            ax.imshow(images[k], interpolation="nearest")
            ax.set_title(captions[k], fontsize=8)


def _draw_curves(subfig: Any, rows: list[dict[str, Any]] | None, note: str | None) -> None:
    if rows is None:
        subfig.text(0.5, 0.5, note, ha="center", va="center", wrap=True)
        return
    epochs = _column(rows, "epoch")
    loss, accuracy, lr = subfig.subplots(1, 3)
    for ax, key, scale, title in ((loss, "loss", 1.0, "loss"), (accuracy, "accuracy", 100.0, "accuracy (%)")):
        for part in ("train", "val"):
            values = _column(rows, f"{part}_{key}") * scale
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, marker="o", markersize=3, label="validation" if part == "val" else part)
        ax.set_title(title)
        ax.legend(fontsize=8)
    lr.plot(epochs, _column(rows, "lr"), marker="o", markersize=3, color="tab:green")
    lr.set_title("learning rate")
    for ax in (loss, accuracy, lr):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)


def inspection_figure(view: dict[str, Any], tiles: np.ndarray, mistakes: np.ndarray, rows: Any) -> Any:
    """The one picture: weights, confusion matrix and class accuracy above; mistakes and curves below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(view["title"], fontsize=14)
    top, bottom = fig.subfigures(2, 1)
    weights_ax, confusion_ax, classes_ax = top.subplots(1, 3, width_ratios=[1.1, 1.1, 0.8])
    names = view["class_names"]
    counts = np.array(view["confusion_matrix"])
    templates = view["templates"]
    title = (
        "class templates (weights of each class, own range)"
        if templates
        else f"first-layer weights: {len(tiles)} of {view['units']} units, largest norm first"
    )
    _draw_weights(weights_ax, tiles, names if templates else None, title)
    _draw_confusion(confusion_ax, counts, names)
    _draw_class_accuracy(classes_ax, np.array(view["per_class_accuracy"]), names, view["test_accuracy"])
    left, right = bottom.subfigures(1, 2, width_ratios=[1, 1.3])
    captions = [f"{names[m['true']]} -> {names[m['predicted']]}\n{m['probability']:.0%}" for m in view["mistakes"]]
    _draw_mistakes(left, mistakes, captions)
    _draw_curves(right, rows, view["note"])
    return fig


def _png(array_or_figure: Any) -> bytes:
    buffer = io.BytesIO()
    if isinstance(array_or_figure, np.ndarray):
        from PIL import Image  # matplotlib's own dependency; it writes RGB as RGB, matplotlib as RGBA

        Image.fromarray(array_or_figure).save(buffer, format="png")
    else:
        array_or_figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html(view: dict[str, Any], settings: dict[str, Any], pictures: dict[str, bytes]) -> str:
    names = view["class_names"]
    numbers = [
        ["test accuracy", f"{view['test_accuracy']:.2%}"],
        ["test loss", f"{view['test_loss']:.4f}"],
        ["test images", sum(map(sum, view["confusion_matrix"]))],
        ["layer sizes", " - ".join(map(str, view["sizes"]))],
        ["parameters", f"{view['parameters']:,}"],
    ]
    if view["trained_accuracy"] is not None:
        numbers.insert(1, ["test accuracy the training run reported", f"{view['trained_accuracy']:.2%}"])
    confusion = [
        [name, *row, f"{accuracy:.1%}"]
        for name, row, accuracy in zip(names, view["confusion_matrix"], view["per_class_accuracy"])
    ]
    images = "".join(
        f'<h2>{html.escape(caption)}</h2><img src="data:image/png;base64,{base64.b64encode(data).decode()}" '
        f'alt="{html.escape(caption)}"{style}>'
        for caption, data, style in (
            ("inspect.png", pictures["inspect.png"], ' style="max-width:100%"'),
            ("weights.png: every first-layer unit", pictures["weights.png"], ' class="pixels"'),
        )
    )
    note = f"<p><b>note:</b> {html.escape(view['note'])}</p>" if view["note"] else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(view["title"])}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}
img.pixels{{image-rendering:pixelated;width:min(100%,{2 * view["weights_width"]}px)}}</style></head>
<body><h1>{html.escape(view["title"])}</h1>{note}
<h2>numbers</h2>{_table(["", ""], numbers)}
<h2>confusion matrix of the test set (rows: true class)</h2>{_table(["true", *names, "accuracy"], confusion)}
<h2>settings of the run</h2>{_table(["setting", "value"], [[k, v] for k, v in settings.items()])}
{images}
</body></html>
"""


def inspection_files(
    network: Any,
    measured: Any,
    probabilities: np.ndarray,
    rows: list[dict[str, Any]] | None,
    note: str | None,
    title: str,
) -> dict[str, bytes]:
    """inspect.png, weights.png, inspect.json and index.html, rendered in memory.

    ``measured`` holds what ``fastnn evaluate`` computes (names, split, loss, accuracy, predicted,
    counts, config, trained); ``probabilities`` (n_test, classes) the softmax outputs on the test set;
    ``rows`` the epochs of the run's metrics.jsonl, or None with a ``note`` why (:func:`read_metrics`).
    """
    split, names, counts = measured.split, measured.names, measured.counts
    weights, templates = first_weights(network)
    order = unit_order(weights, templates)
    tiles = weight_tiles(weights[:, order])
    confidence = probabilities[np.arange(len(measured.predicted)), measured.predicted]
    chosen = confident_mistakes(split.y_test, measured.predicted, confidence, MISTAKES)
    columns = 5 if templates else max(1, math.ceil(math.sqrt(len(tiles))))
    all_units = mosaic(tiles, columns)
    view = {
        "format": FORMAT,
        "title": title,
        "class_names": names,
        "sizes": list(network.sizes),
        "parameters": sum(int(value.size) for _, value in network.parameters()),
        "test_accuracy": measured.accuracy,
        "test_loss": measured.loss,
        "trained_accuracy": measured.trained,
        "confusion_matrix": counts.tolist(),
        "per_class_accuracy": (np.diag(counts) / np.maximum(counts.sum(axis=1), 1)).tolist(),
        "templates": templates,
        "units": int(weights.shape[1]),
        "unit_order": order.tolist(),
        "weights_columns": columns,
        "weights_width": int(all_units.shape[1]),
        "mistakes": [
            {
                "index": int(i),
                "true": int(split.y_test[i]),
                "predicted": int(measured.predicted[i]),
                "probability": float(probabilities[i, measured.predicted[i]]),
            }
            for i in chosen
        ],  # fmt: skip
        "curves": rows is not None,
        "note": note,
    }
    mistakes = as_images(split.x_test[chosen], np.asarray(split.mean), np.asarray(split.std))
    figure = inspection_figure(view, tiles[:SHOWN_UNITS], mistakes, rows)
    pictures = {"inspect.png": _png(figure), "weights.png": _png(all_units)}
    return {
        **pictures,
        "inspect.json": json.dumps(view, indent=1).encode(),
        "index.html": _html(view, measured.config.to_dict(), pictures).encode(),
    }
