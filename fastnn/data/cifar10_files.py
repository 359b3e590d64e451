"""CIFAR-10's files as the official archive holds them: their names, and the batch pickles read
safely into a :class:`Cifar10Raw`.

The files are pickles, and unpickling runs code. So only the seven expected member names are ever
unpickled, with an ``Unpickler`` that resolves nothing but the three NumPy names a pickled uint8
array needs, and every batch is checked by its structure (keys, shape, dtype, labels). A local copy
is checked by that structure, not by md5: copies rebuilt elsewhere hold the same arrays in other
bytes. Reading from the archive (``cifar-10-python.tar.gz``, not extracted) or from the extracted
``cifar-10-batches-py/`` folder; finding, downloading and splitting are :mod:`fastnn.data.cifar10`'s.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import tarfile
import zlib
from dataclasses import dataclass

import numpy as np

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy < 2 has no numpy._core
    from numpy.core.multiarray import _reconstruct

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


class DataError(Exception):
    """The CIFAR-10 data is missing, damaged or not CIFAR-10. The message is one line that names
    the file and says how to fix it."""


def _one_line(text: object) -> str:
    """Flatten an exception text, so that a DataError message stays on one line."""
    return " ".join(str(text).split())


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
