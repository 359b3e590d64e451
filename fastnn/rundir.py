"""A run's output folder: one run at a time, no leftovers of dead writers.

A run holds ``.fastnn.lock`` in its folder (created exclusively, holding the pid and the host of its
process) from start to end. A second run there is refused and told who holds it; a lock whose
process is gone (same host, pid no longer alive) is stale and is taken over; it is removed under a
kernel lock on ``.fastnn.lock.guard``, so that two runs that find it at once cannot both take the
folder. Temporary ``.<name>.*.part`` files (:func:`fastnn.atomic.temporary_beside`) left by a
writer killed in the middle of a save are removed when the next run takes the lock: no other
writer can be there then.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".fastnn.lock"
GUARD_NAME = ".fastnn.lock.guard"


class FolderBusy(RuntimeError):
    """Another live run holds the folder; the message names it."""


FRESH_SECONDS = 5.0
"""An unreadable lock file younger than this may be one whose holder has not written its line yet."""


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return FRESH_SECONDS  # gone already: nothing to wait for


def _alive(pid: int | str) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _holder(lock: Path) -> dict | None:
    """The lock's contents, or None when it is unreadable or half-written (then it is stale too:
    a live holder writes its line right after creating the file)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(holder, dict) and isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str)
    return holder if ok else None


class RunLock:
    """``with RunLock(folder):`` holds ``folder/.fastnn.lock`` for one process."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(3):  # a stale lock is removed, then the creation is tried again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_if_held(me)
                with self._guard():  # two runs that found the same stale lock: only one removes it
                    self._refuse_if_held(me)  # again: the other may have made its own lock meanwhile
                    self.path.unlink(missing_ok=True)  # stale: its process has died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            remove_stale_parts(self.folder)
            return
        raise OSError(errno.EAGAIN, "the lock file keeps changing", str(self.path))

    def _refuse_if_held(self, me: dict) -> None:
        """FolderBusy when the lock file names a live process (or is being written right now)."""
        holder = _holder(self.path)
        if holder is None and _age(self.path) < FRESH_SECONDS:  # its writer may be filling it in
            holder = {"pid": "?", "host": "?"}
        if holder is not None and (holder["host"] != me["host"] or _alive(holder["pid"])):
            raise FolderBusy(
                f"{self.folder} is in use by another run (pid {holder['pid']} on {holder['host']}); "
                f"wait for it, choose another --out, or delete {self.path} if that process is gone"
            )

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A kernel lock (flock) on ``.fastnn.lock.guard`` around the removal of a stale lock: the
        kernel lets it go however its holder ends, so it never goes stale itself. The holder removes
        the file as it lets go, and a waiter that then holds a removed file tries again."""
        import fcntl

        path = self.folder / GUARD_NAME
        while True:
            guard = open(path, "a")  # closed below, after its flock is let go
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                if os.fstat(guard.fileno()).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            guard.close()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
            guard.close()

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_parts(folder: Path) -> list[Path]:
    """Delete ``.*.part`` files in ``folder``: only a writer of this folder makes them, and the
    caller holds its lock, so any there belong to a writer that died mid-save. Returns them."""
    removed = []
    for part in folder.glob(".*.part"):
        if part.is_file():
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed
