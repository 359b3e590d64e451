"""fastnn.rundir: the lock on a run's folder."""

import json
import os
import socket

import pytest

from fastnn.rundir import LOCK_NAME, FolderBusy, RunLock


def test_a_stale_lock_replaced_meanwhile_by_a_live_run_is_not_removed(tmp_path, monkeypatch):
    # Two runs find the same dead holder's lock; the first removes it and makes its own before the
    # second removes anything: the second must see the live lock under the guard and step back.
    lock_file = tmp_path / LOCK_NAME
    lock_file.write_text(json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()}))  # no such pid
    live = json.dumps({"pid": os.getppid(), "host": socket.gethostname()})
    guard = RunLock._guard

    def first_run_takes_over_meanwhile(self):
        lock_file.write_text(live)
        return guard(self)

    monkeypatch.setattr(RunLock, "_guard", first_run_takes_over_meanwhile)
    with pytest.raises(FolderBusy, match=f"pid {os.getppid()}"):
        RunLock(tmp_path).acquire()
    assert lock_file.read_text() == live
