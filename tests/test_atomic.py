"""Atomic writes (fastnn.atomic): a file is written whole or not at all, a set of files as one."""

import json
import os

import pytest

import fastnn.atomic as atomic
from fastnn.atomic import write_atomic, write_atomic_set, write_jsonl


def test_interrupted_write_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    target = tmp_path / "model.npz"
    write_atomic(target, b"old")

    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_set_of_files_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    (tmp_path / "a.md").write_bytes(b"old a")
    (tmp_path / "c.pdf").mkdir()  # a folder in the way of the third file
    with pytest.raises(IsADirectoryError):
        write_atomic_set({tmp_path / "a.md": b"new a", tmp_path / "b.png": b"new b", tmp_path / "c.pdf": b"c"})
    assert (tmp_path / "a.md").read_bytes() == b"old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "c.pdf"]

    staged = atomic._stage

    def disk_full_at_the_second(path, data):
        if path.name == "b.png":
            raise OSError(28, "No space left on device")
        return staged(path, data)

    monkeypatch.setattr(atomic, "_stage", disk_full_at_the_second)
    with pytest.raises(OSError, match="No space"):
        write_atomic_set({tmp_path / "a.md": b"new a", tmp_path / "b.png": b"new b"})
    assert (tmp_path / "a.md").read_bytes() == b"old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "c.pdf"]
    monkeypatch.undo()
    write_atomic_set({tmp_path / "a.md": b"new a", tmp_path / "b.png": b"new b"})
    assert (tmp_path / "a.md").read_bytes() == b"new a" and (tmp_path / "b.png").read_bytes() == b"new b"


def test_a_log_is_rewritten_whole_as_json_lines(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", [{"epoch": 1}])
    write_jsonl(tmp_path / "metrics.jsonl", [{"epoch": 1}, {"epoch": 2, "loss": 0.5}])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"epoch": 1}, {"epoch": 2, "loss": 0.5}]


def test_the_old_import_path_still_works():
    """Code that imported the atomic writes from fastnn.checkpoint, where they lived first, gets the same functions."""
    import fastnn.checkpoint as checkpoint

    for name in ("write_atomic", "write_atomic_set", "write_jsonl", "temporary_beside"):
        assert getattr(checkpoint, name) is getattr(atomic, name)
