"""CIFAR-10 on the host: find it, download it if asked, read it safely, split and standardise it.

This module is the only place that touches the CIFAR-10 files. It hands the rest of fastnn plain
NumPy arrays on the host; putting them on a device is the backend's job (``backend.asarray``), so
this module never imports CuPy.

Where the data lives (``data_dir``): an explicit folder (the CLI's ``--data-dir``), else the
environment variable ``FASTNN_DATA_DIR``, else ``~/.cache/fastnn``. That folder holds either the
official archive ``cifar-10-python.tar.gz`` (read without extracting it) or the extracted
``cifar-10-batches-py/`` folder. When neither is there, the official archive is downloaded and
checked against its published md5.

The files are pickles, and unpickling runs code. So only the seven expected member names are ever
unpickled, with an ``Unpickler`` that resolves nothing but the three NumPy names a pickled uint8
array needs, and every batch is checked by its structure (keys, shape, dtype, labels). A local copy
is checked by that structure, not by md5: copies rebuilt elsewhere hold the same arrays in other
bytes.

What it is not: an augmentation pipeline or a batch iterator (the trainer slices batches on the
device), nor a loader for CIFAR-100.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pathlib
import pickle
import sys
import tarfile
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from fastnn.atomic import temporary_beside

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
log = logging.getLogger("fastnn")

ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"

# The label names as batches.meta stores them, in label order 0-9.
CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGES_PER_BATCH = 10_000
PIXELS = 3 * 32 * 32  # red plane, then green, then blue; each 32x32 row-major
CHANNEL_SIZE = 32 * 32

# An official batch pickle is 31 MB; anything much larger is not one, and is refused before it is
# read into memory.
_MAX_MEMBER_BYTES = 64 * 2**20
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


class DataError(Exception):
    """The CIFAR-10 data is missing, damaged or not CIFAR-10. The message is one line that names
    the file and says how to fix it."""


def _one_line(text: object) -> str:
    """Flatten an exception text, so that a DataError message stays on one line."""
    return " ".join(str(text).split())


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
class Cifar10Raw:
    """CIFAR-10 as stored: pixels as uint8, rows of 3072 = R, G, B planes of 32x32.

    x_train: (50000, 3072) uint8, in the order of data_batch_1..5.
    y_train: (50000,) int64, labels 0-9.
    x_test:  (10000, 3072) uint8.
    y_test:  (10000,) int64.
    class_names: the 10 names of batches.meta, indexed by label.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


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


def _latin1_bytes(text: object, encoding: object) -> bytes:
    """``_codecs.encode(text, "latin1")``, the one call Python 3 pickles bytes as under protocol 2
    (which has no bytes opcode); any other encoding, or a non-string, is refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("it encodes bytes in a way CIFAR-10 never does")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """``bytes()``, how Python 3 pickles an empty bytes object under protocol 2 (never with arguments)."""
    return b""


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR-10 batch holds: dicts, lists, bytes, ints and uint8 arrays.

    A pickle names the callables it wants run; this one answers only the three that rebuild a NumPy
    array, and two that rebuild bytes in a copy re-pickled by Python 3 with protocol 2, so a pickle
    that asks for anything else (os.system, builtins.eval...) fails before any of it runs. The
    official files were written by NumPy 1 (``numpy.core``), newer copies by NumPy 2
    (``numpy._core``); both names map to the same function.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which CIFAR-10 never does") from None


def _unpickle(stream: io.BufferedIOBase | io.RawIOBase, where: str) -> object:
    """Unpickle one CIFAR member with the restricted unpickler; any failure is a DataError."""
    try:
        return _CifarUnpickler(stream, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{where} is not a CIFAR-10 pickle ({_one_line(exc)}); replace the data with the official {ARCHIVE_NAME}"
        ) from None
    except (EOFError, OSError, zlib.error, tarfile.TarError) as exc:
        raise DataError(
            f"{where} is truncated or corrupt ({_one_line(exc) or type(exc).__name__}); "
            f"delete it so that it is downloaded again, or replace it with the official {ARCHIVE_NAME}"
        ) from None
    except Exception as exc:  # a malformed pickle can raise nearly anything (ValueError, TypeError...)
        raise DataError(
            f"{where} is not a valid CIFAR-10 pickle ({type(exc).__name__}: {_one_line(exc)}); "
            f"replace the data with the official {ARCHIVE_NAME}"
        ) from None


def _check_batch(obj: object, where: str, images: int) -> tuple[np.ndarray, np.ndarray]:
    """Check one unpickled batch by its structure; return data (images, 3072) uint8 and labels
    (images,) int64."""
    fix = f"replace the data with the official {ARCHIVE_NAME}"
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        found = list(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise DataError(
            f"{where} is not a CIFAR-10 batch (expected a dict with b'data' and b'labels', found {found}); {fix}"
        )
    data = obj[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (images, PIXELS):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: b'data' is {found}, expected uint8 ({images}, {PIXELS}); {fix}")
    labels = np.asarray(obj[b"labels"])
    if labels.shape != (images,) or labels.dtype.kind not in "iu":
        raise DataError(f"{where}: b'labels' is {labels.dtype} {labels.shape}, expected {images} integers; {fix}")
    if labels.min() < 0 or labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{where}: b'labels' holds values outside 0-9 (min {labels.min()}, max {labels.max()}); {fix}")
    return data, labels.astype(np.int64)


def _check_meta(obj: object, where: str) -> tuple[str, ...]:
    """Check batches.meta; return its 10 label names."""
    names = obj.get(b"label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != len(CLASS_NAMES) or not all(isinstance(n, bytes) for n in names):
        raise DataError(
            f"{where} is not CIFAR-10 metadata (expected b'label_names', a list of 10 names); "
            f"replace the data with the official {ARCHIVE_NAME}"
        )
    return tuple(n.decode("ascii", "replace") for n in names)


class _Assembler:
    """Collects the seven members in whatever order they come and writes each batch straight into
    its rows of the final arrays, so that the peak memory is the result plus one batch."""

    def __init__(self, images_per_batch: int):
        self.images = images_per_batch
        n_train = len(TRAIN_BATCHES) * images_per_batch
        self.x_train = np.empty((n_train, PIXELS), np.uint8)
        self.y_train = np.empty(n_train, np.int64)
        self.x_test = np.empty((images_per_batch, PIXELS), np.uint8)
        self.y_test = np.empty(images_per_batch, np.int64)
        self.class_names: tuple[str, ...] | None = None
        self.seen: set[str] = set()

    def add(self, name: str, obj: object, where: str) -> None:
        if name in self.seen:
            raise DataError(f"{where} appears twice; replace the data with the official {ARCHIVE_NAME}")
        self.seen.add(name)
        if name == META:
            self.class_names = _check_meta(obj, where)
            return
        data, labels = _check_batch(obj, where, self.images)
        if name == TEST_BATCH:
            self.x_test[:], self.y_test[:] = data, labels
        else:
            start = TRAIN_BATCHES.index(name) * self.images
            rows = slice(start, start + self.images)
            self.x_train[rows], self.y_train[rows] = data, labels

    def result(self, where: str) -> Cifar10Raw:
        missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH, META) if n not in self.seen]
        if missing:
            raise DataError(
                f"{where} lacks {', '.join(missing)} (truncated or not CIFAR-10); "
                f"delete it so that it is downloaded again, or replace it with the official "
                f"{ARCHIVE_NAME}"
            )
        assert self.class_names is not None
        return Cifar10Raw(self.x_train, self.y_train, self.x_test, self.y_test, self.class_names)


def _read_archive(path: pathlib.Path, images_per_batch: int) -> Cifar10Raw:
    """Read the seven members from the .tar.gz in one forward pass, without extracting anything.

    The official archive stores the batches out of order (data_batch_4 first), and a gzip stream
    cannot seek backwards cheaply, so members are taken as they come ("r|gz" streams).
    """
    wanted = {f"{FOLDER_NAME}/{n}": n for n in (*TRAIN_BATCHES, TEST_BATCH, META)}
    out = _Assembler(images_per_batch)
    try:
        with tarfile.open(path, mode="r|gz") as archive:
            for member in archive:
                name = wanted.get(member.name)
                if name is None:
                    continue  # readme.html, the folder entry: never unpickled
                where = f"{path}:{member.name}"
                if not member.isfile() or member.size > _MAX_MEMBER_BYTES:
                    raise DataError(
                        f"{where} is not a CIFAR-10 batch file (a {member.size}-byte "
                        f"{'file' if member.isfile() else 'link or folder'}); "
                        f"replace the data with the official {ARCHIVE_NAME}"
                    )
                stream = archive.extractfile(member)
                assert stream is not None  # a regular file always has a stream
                out.add(name, _unpickle(stream, where), where)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(
            f"{path} is truncated or corrupt ({_one_line(exc) or type(exc).__name__}); "
            f"delete it so that it is downloaded again, or replace it with the official {ARCHIVE_NAME}"
        ) from None
    return out.result(str(path))


def _read_folder(folder: pathlib.Path, images_per_batch: int) -> Cifar10Raw:
    """Read the seven files of an extracted cifar-10-batches-py/ folder."""
    out = _Assembler(images_per_batch)
    for name in (*TRAIN_BATCHES, TEST_BATCH, META):
        path = folder / name
        if not path.is_file():
            continue  # reported, with all the others missing, by result()
        if path.stat().st_size > _MAX_MEMBER_BYTES:
            raise DataError(
                f"{path} is too large to be a CIFAR-10 batch; replace the data with the official {ARCHIVE_NAME}"
            )
        with open(path, "rb") as stream:
            out.add(name, _unpickle(stream, str(path)), str(path))
    return out.result(str(folder))


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
