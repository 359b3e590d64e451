"""CIFAR-10 on the host: find it, download it if asked, read it safely, split and standardise it.

This module is the only place that touches the CIFAR-10 files. It hands the rest of fastnn plain
NumPy arrays on the host; putting them on a device is the backend's job (``backend.asarray``), so
this module never imports CuPy.

Where the data lives (``data_dir``): an explicit folder (the CLI's ``--data-dir``), else the
environment variable ``FASTNN_DATA_DIR``, else ``~/.cache/fastnn``. That folder holds either the
official archive ``cifar-10-python.tar.gz`` (read without extracting it) or the extracted
``cifar-10-batches-py/`` folder. When neither is there, the official archive is downloaded and
checked against its published md5.

The files are pickles, read safely by :mod:`fastnn.data.cifar10_files` (which also names them); a
local copy is checked by its structure, not by md5.

What it is not: an augmentation pipeline or a batch iterator (the trainer slices batches on the
device), nor a loader for CIFAR-100.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from fastnn.atomic import temporary_beside
from fastnn.data.cifar10_files import (  # noqa: F401 - the names of the files, re-exported here as before
    ARCHIVE_NAME,
    CHANNEL_SIZE,
    CLASS_NAMES,
    FOLDER_NAME,
    IMAGES_PER_BATCH,
    META,
    PIXELS,
    TEST_BATCH,
    TRAIN_BATCHES,
    Cifar10Raw,
    DataError,
    _one_line,
    _read_archive,
    _read_folder,
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
log = logging.getLogger("fastnn")

_DOWNLOAD_CHUNK = 2**20
_DOWNLOAD_TIMEOUT_S = 60


class SplitError(ValueError):
    """A validation or subset size the training set cannot give: ``option`` names which, ``detail``
    says why (the message is ``"option = detail"``)."""

    def __init__(self, option: str, detail: str):
        super().__init__(f"{option} = {detail}")
        self.option, self.detail = option, detail


def check_split(validation: int, subset: int | None, n_total: int) -> None:
    """Refuse a split of ``n_total`` training images that holds out ``validation`` of them and trains
    on the first ``subset`` of the rest, when it cannot be made (SplitError). The command line calls
    it with CIFAR-10's size before loading anything; :func:`prepare` with the loaded data's."""
    if validation < 0:
        raise SplitError("validation", f"{validation} is negative; hold out 0 or more images")
    if validation >= n_total:
        raise SplitError(
            "validation", f"{validation} leaves no training images; CIFAR-10 has {n_total:,} (default 5000)"
        )
    if subset is not None and not 1 <= subset <= n_total - validation:
        raise SplitError(
            "subset",
            f"{subset} is more than the {n_total - validation:,} training images left after holding out "
            f"{validation} for validation"
            if subset > 0
            else f"{subset} is not a number of images; give 1 or more",
        )


def data_dir(explicit: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder that holds (or will hold) CIFAR-10.

    Precedence: ``explicit`` (the CLI's ``--data-dir``) > ``$FASTNN_DATA_DIR`` > ``~/.cache/fastnn``.
    The folder is not created here; a download creates it.
    """
    if explicit is not None:
        return pathlib.Path(explicit).expanduser()
    from_env = os.environ.get("FASTNN_DATA_DIR")
    if from_env:
        return pathlib.Path(from_env).expanduser()
    return pathlib.Path.home() / ".cache" / "fastnn"


# load_cifar10's parameter is called data_dir too (as the CLI option is), which hides the function.
_resolve_data_dir = data_dir


@dataclass(frozen=True, eq=False)
class Cifar10Split:
    """CIFAR-10 ready for training: float32 host arrays, standardised per channel.

    x_train (n_train, 3072), x_val (n_val, 3072), x_test (10000, 3072): float32, each value
    ``(pixel / 255 - mean[c]) / std[c]`` for its channel c.
    y_train (n_train,), y_val (n_val,), y_test (10000,): int64 labels 0-9.
    mean (3,), std (3,): float64 per-channel statistics of the training images (pixels in [0, 1]),
    computed on x_train only, never on validation or test images.
    class_names: the 10 names, indexed by label.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    class_names: tuple[str, ...]


def download_cifar10(folder: str | os.PathLike, progress: bool = True) -> pathlib.Path:
    """Download the official archive into ``folder`` and return its path.

    The bytes go to a temporary file in the same folder and are checked against the official md5
    while they arrive; only a complete, verified file is renamed (atomically, ``os.replace``) to
    cifar-10-python.tar.gz. An interruption or a bad checksum deletes the temporary file, so a file
    with the final name is always complete. Raises DataError when the download fails or the md5
    differs.
    """
    folder = pathlib.Path(folder)
    final = folder / ARCHIVE_NAME
    url, expected_md5 = CIFAR10_URL, CIFAR10_MD5  # read at call time, so tests can point them elsewhere
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # removed again if the download fails
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = temporary_beside(final)
    except OSError as exc:
        raise DataError(
            f"CIFAR-10 is not in {folder} (looked for {FOLDER_NAME}/ and {ARCHIVE_NAME}), and it cannot be downloaded "
            f"there ({_one_line(exc)}); pass --data-dir or set FASTNN_DATA_DIR to a folder holding {ARCHIVE_NAME}, "
            "or to a writable folder for the download"
        ) from None
    tmp = pathlib.Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with (
            os.fdopen(fd, "wb") as sink,
            urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with _progress_bar(progress, total) as advance:
                while chunk := response.read(_DOWNLOAD_CHUNK):
                    sink.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
        if digest.hexdigest() != expected_md5:
            raise DataError(
                f"the download of {url} has md5 {digest.hexdigest()}, expected {expected_md5} "
                f"(damaged in transit); run again, or place the official {ARCHIVE_NAME} "
                f"in {folder}"
            )
        os.replace(tmp, final)
    except OSError as exc:  # URLError, HTTPError, timeouts and a full disk are all OSErrors
        _remove(tmp, made)
        raise DataError(
            f"CIFAR-10 is not in {folder} (looked for {FOLDER_NAME}/ and {ARCHIVE_NAME}) and its download "
            f"from {url} failed ({_one_line(exc)}); pass --data-dir or set FASTNN_DATA_DIR to a folder "
            f"holding {ARCHIVE_NAME}"
        ) from None
    except BaseException:  # DataError, KeyboardInterrupt: no half-written file stays behind
        _remove(tmp, made)
        raise
    return final


def _remove(tmp: pathlib.Path, made: list[pathlib.Path]) -> None:
    """Delete the partial download and the folders made for it (innermost first), if still empty."""
    tmp.unlink(missing_ok=True)
    for path in made:
        try:
            path.rmdir()
        except OSError:  # not empty (another process wrote there), or gone: leave it
            break


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int | None) -> Iterator[Callable[[int], object]]:
    """Yield ``advance(n_bytes)``, drawing a rich progress bar (bytes, speed, time left) on stderr,
    so that it does not mix with a command's output; a no-op when ``enabled`` is False. Where
    stderr is no terminal (a log, ``docker run`` without ``-t``) a bar cannot redraw: one line says
    the download started and one that it ended, so a long silence is explained."""
    if not enabled:
        yield lambda n_bytes: None
        return
    if not sys.stderr.isatty():
        size = "" if total is None else f" ({total / 2**20:.0f} MiB)"
        print(f"downloading CIFAR-10{size} from {CIFAR10_URL} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        yield lambda n_bytes: None
        print(f"downloaded in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("downloading CIFAR-10"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("download", total=total)
        yield lambda n_bytes: bar.advance(task, n_bytes)


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    _images_per_batch: int = IMAGES_PER_BATCH,
) -> Cifar10Raw:
    """Load CIFAR-10 as uint8 arrays: x_train (50000, 3072), y_train (50000,), x_test (10000, 3072),
    y_test (10000,).

    Looks in ``data_dir(data_dir)`` for the extracted ``cifar-10-batches-py/`` folder, then for
    ``cifar-10-python.tar.gz``; if neither is there and ``download`` is True, downloads the official
    archive (with a progress bar when ``progress``). Raises DataError, with a one-line message naming
    the file and the fix, when the data is missing, damaged or not CIFAR-10.

    ``_images_per_batch`` is for tests, which build tiny fake archives; real data must hold 10000
    images per batch (50,000 train, 10,000 test).
    """
    folder = _resolve_data_dir(data_dir)
    extracted, archive = folder / FOLDER_NAME, folder / ARCHIVE_NAME
    if extracted.is_dir():
        try:
            return _read_folder(extracted, _images_per_batch)
        except DataError as exc:
            if not archive.is_file():
                raise
            log.warning("%s; reading %s instead", exc.args[0].split("; ")[0], archive)
    if not archive.is_file():
        if not download:
            raise DataError(
                f"CIFAR-10 is not in {folder} (looked for {FOLDER_NAME}/ and {ARCHIVE_NAME}); "
                f"pass --data-dir or set FASTNN_DATA_DIR to a folder holding {ARCHIVE_NAME}, "
                f"or allow the download"
            )
        download_cifar10(folder, progress=progress)
    return _read_archive(archive, _images_per_batch)


_PLANES = tuple(slice(c * CHANNEL_SIZE, (c + 1) * CHANNEL_SIZE) for c in range(3))
_CHUNK_ROWS = 2048


def _chunks(x_u8: np.ndarray, index: np.ndarray) -> Iterator[np.ndarray]:
    """Yield ``x_u8[index]`` in consecutive pieces of at most _CHUNK_ROWS rows, each (rows, 3072)."""
    for start in range(0, len(index), _CHUNK_ROWS):
        yield x_u8[index[start : start + _CHUNK_ROWS]]


def prepare(raw: Cifar10Raw, validation: int = 5000, seed: int = 0, subset: int | None = None) -> Cifar10Split:
    """Split off a validation set and standardise every image per channel, as float32.

    validation: how many of the training images to hold out, chosen at random with ``seed``
        (0 gives empty (0, 3072) validation arrays). Both parts keep the file order.
    subset: if given, keep only the first ``subset`` training images after the split (quick runs).
    Each channel c (R, G, B: the three planes of 1024 values) becomes ``(pixel/255 - mean[c]) /
    std[c]``, with mean (3,) and std (3,) computed on the kept training images only.
    Returns x_* (n, 3072) float32 and y_* (n,) int64.
    """
    n_total = len(raw.x_train)
    check_split(validation, subset, n_total)
    order = np.random.default_rng(seed).permutation(n_total)
    val_idx, train_idx = np.sort(order[:validation]), np.sort(order[validation:])
    if subset is not None:
        train_idx = train_idx[:subset]

    # Pixels are uint8, so a 256-bin histogram per channel gives exact float64 statistics without a
    # float copy of the training set. Rows go in chunks that stay in cache and keep temporaries small.
    counts = np.zeros((3, 256), np.int64)
    for rows in _chunks(raw.x_train, train_idx):
        for c, plane in enumerate(_PLANES):
            counts[c] += np.bincount(rows[:, plane].ravel(), minlength=256)
    levels = np.arange(256) / 255.0
    n_values = counts.sum(axis=1)
    mean = counts @ levels / n_values
    std = np.sqrt(np.sum(counts * (levels[None, :] - mean[:, None]) ** 2, axis=1) / n_values)
    if np.any(std == 0):
        raise ValueError("a channel of the training images is constant; it cannot be standardised")
    # One float32 lookup table per channel maps every uint8 value to its standardised value, so the
    # only large arrays made are the float32 results themselves.
    tables = ((levels[None, :] - mean[:, None]) / std[:, None]).astype(np.float32)

    def standardise(x_u8: np.ndarray, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), PIXELS), np.float32)
        start = 0
        for rows in _chunks(x_u8, index):
            for c, plane in enumerate(_PLANES):
                out[start : start + len(rows), plane] = tables[c][rows[:, plane]]
            start += len(rows)
        return out

    return Cifar10Split(
        x_train=standardise(raw.x_train, train_idx),
        y_train=raw.y_train[train_idx],
        x_val=standardise(raw.x_train, val_idx),
        y_val=raw.y_train[val_idx],
        x_test=standardise(raw.x_test, np.arange(len(raw.x_test))),
        y_test=raw.y_test.astype(np.int64, copy=True),
        mean=mean,
        std=std,
        class_names=tuple(raw.class_names),
    )
