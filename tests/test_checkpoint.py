import os

import numpy as np
import pytest

from fastnn.checkpoint import CheckpointError, load, save, write_atomic, write_atomic_set
from fastnn.network import Network


def test_round_trip_on_every_backend(backend, tmp_path):
    net = Network([6, 5, 3], "tanh", backend=backend, dropout=0.1, l2=0.01, seed=4)
    save(tmp_path / "m.npz", net, {"config": {"dtype": "float32"}, "note": "hello"})
    loaded, meta = load(tmp_path / "m.npz", backend)
    assert meta["note"] == "hello" and meta["architecture"]["activation"] == "tanh"
    assert loaded.architecture() == net.architecture()
    for (name, p), (other, q) in zip(net.parameters(), loaded.parameters()):
        assert name == other
        np.testing.assert_array_equal(backend.to_numpy(p), backend.to_numpy(q))
    assert oct(os.stat(tmp_path / "m.npz").st_mode & 0o777) != "0o600"


def test_unreadable_files_are_one_line_errors(tmp_path):
    from fastnn.backend import get_backend

    cpu = get_backend("cpu")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load(tmp_path / "missing.npz", cpu)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="not a readable fastnn checkpoint") as info:
        load(tmp_path / "junk.npz", cpu)
    assert "\n" not in str(info.value)
    np.savez(tmp_path / "other.npz", meta=np.array('{"format": "something-else"}'))
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load(tmp_path / "other.npz", cpu)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: path.write_bytes(b""), "not a readable fastnn checkpoint"),  # numpy: EOFError
        (lambda path: np.save(path.with_suffix(".npy"), np.zeros(3)) or path.with_suffix(".npy").rename(path),
         "not a readable fastnn checkpoint"),
        (lambda path: np.savez(path, meta=np.array("[1, 2]")), "unknown checkpoint format 'list'"),
        (lambda path: np.savez(path, meta=np.array('{"format": "fastnn-checkpoint-1"}')),
         "damaged metadata \\(KeyError: 'architecture'\\)"),
    ],
    ids=["empty", "npy", "meta-not-a-dict", "no-architecture"],
)
def test_broken_checkpoints_are_one_line_errors(tmp_path, write, message):
    from fastnn.backend import get_backend

    path = tmp_path / "model.npz"
    write(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load(path, get_backend("cpu"))
    assert "\n" not in str(info.value) and ("train again" in str(info.value) or "fastnn train" in str(info.value))


def test_unknown_activation_in_a_checkpoint_is_a_one_line_error(tmp_path):
    from fastnn.backend import get_backend

    net = Network([4, 3, 2], "relu", backend=get_backend("cpu"), seed=0)
    save(tmp_path / "m.npz", net, {})
    with np.load(tmp_path / "m.npz") as archive:
        arrays = dict(archive)
    arrays["meta"] = np.array(str(arrays["meta"]).replace('"relu"', '"foo"'))
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(CheckpointError, match="damaged metadata \\(ValueError: unknown activation 'foo'"):
        load(tmp_path / "m.npz", get_backend("cpu"))


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
    import fastnn.checkpoint as checkpoint

    (tmp_path / "a.md").write_bytes(b"old a")
    (tmp_path / "c.pdf").mkdir()  # a folder in the way of the third file
    with pytest.raises(IsADirectoryError):
        write_atomic_set({tmp_path / "a.md": b"new a", tmp_path / "b.png": b"new b", tmp_path / "c.pdf": b"c"})
    assert (tmp_path / "a.md").read_bytes() == b"old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "c.pdf"]

    staged = checkpoint._stage

    def disk_full_at_the_second(path, data):
        if path.name == "b.png":
            raise OSError(28, "No space left on device")
        return staged(path, data)

    monkeypatch.setattr(checkpoint, "_stage", disk_full_at_the_second)
    with pytest.raises(OSError, match="No space"):
        write_atomic_set({tmp_path / "a.md": b"new a", tmp_path / "b.png": b"new b"})
    assert (tmp_path / "a.md").read_bytes() == b"old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "c.pdf"]
    monkeypatch.undo()
    write_atomic_set({tmp_path / "a.md": b"new a", tmp_path / "b.png": b"new b"})
    assert (tmp_path / "a.md").read_bytes() == b"new a" and (tmp_path / "b.png").read_bytes() == b"new b"


def test_training_state_is_saved_beside_the_parameters(backend, tmp_path):
    from fastnn.checkpoint import load_state

    net = Network([6, 5, 3], "relu", backend=backend, seed=4)
    moments = {"m.0.W": backend.asarray(np.arange(30, dtype=np.float32).reshape(6, 5))}
    save(tmp_path / "m.npz", net, {"config": {"dtype": "float32"}}, moments)
    loaded, _ = load(tmp_path / "m.npz", backend)
    assert sorted(name for name, _ in loaded.parameters()) == sorted(name for name, _ in net.parameters())
    state = load_state(tmp_path / "m.npz")
    assert list(state) == ["m.0.W"] and state["m.0.W"].dtype == np.float32
    np.testing.assert_array_equal(state["m.0.W"], np.arange(30).reshape(6, 5))
