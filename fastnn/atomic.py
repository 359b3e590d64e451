"""Files written whole or not at all, and sets of files written as one.

The guarantee: after :func:`write_atomic` a reader of ``path`` finds either the old file or the
whole new one, never a part, even if the process is killed or the disk fills up in the middle.
:func:`write_atomic_set` extends it to several files: either all of them are new or all are as
they were. Each file is written to a temporary file in its own folder (``.<name>.*.part``, which
:mod:`fastnn.rundir` sweeps away when a killed writer left one), flushed to disk, and renamed into
place with ``os.replace``, which is atomic within a file system.

What it is not: a lock (two writers of one file both succeed, the last rename wins; see
:mod:`fastnn.rundir` for one run per folder) nor a file format. Checkpoints (:mod:`fastnn.checkpoint`),
run logs, reports and the CIFAR-10 download all write through here. Standard library only, so that
any module may use it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    write_atomic_set({path: data})


def write_atomic_set(files: dict[str | os.PathLike, bytes]) -> None:
    """Write several files as a set: each goes to a temporary file beside it first, and only when
    all are written whole are they renamed into place. A failure before that (a full disk, a folder
    in the way) leaves every old file as it was and no temporary file behind."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path = Path(path)
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
            staged.append((_stage(path, data), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as JSON lines, atomically (the whole log is rewritten each time)."""
    write_atomic(path, "".join(json.dumps(row) + "\n" for row in rows).encode())


def temporary_beside(path: Path) -> tuple[int, str]:
    """A new temporary file in ``path``'s folder, to be renamed to ``path`` when whole: (fd, name).
    mkstemp makes it private (0600); it gets an ordinary file's mode instead (0644 under the usual
    umask), since checkpoints and data are shared, e.g. with a container running as another user."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def _stage(path: Path, data: bytes) -> str:
    """``data`` in a new temporary file beside ``path``, flushed to disk; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp
