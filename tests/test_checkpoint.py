import json
import os

import numpy as np
import pytest

from fastnn.checkpoint import CheckpointError, load, save
from fastnn.network import Network


def test_round_trip_on_every_backend(backend, tmp_path):
    net = Network([6, 5, 3], "tanh", backend=backend, dropout=0.1, l2=0.01, seed=4)
    save(tmp_path / "m.npz", net, {"config": {"dtype": "float32"}, "note": "hello"})
    loaded, meta = load(tmp_path / "m.npz", backend)
    assert meta["note"] == "hello" and meta["architecture"]["activation"] == "tanh"
    assert loaded.spec() == net.spec() and loaded.regularizer.lam == net.regularizer.lam
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


def _rewrite_meta(path, change):
    """Rewrite the checkpoint at ``path`` with ``change(meta)`` as its metadata."""
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["meta"] = np.array(json.dumps(change(json.loads(str(arrays["meta"])))))
    np.savez(path, **arrays)


def _without_layer_specs(meta):
    """The metadata a checkpoint had before layer specs: sizes and activation only."""
    del meta["architecture"]["layers"]
    return meta


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda meta: _without_layer_specs(meta) | {"architecture": {**meta["architecture"], "activation": "foo"}},
         "unknown activation 'foo'"),
        (lambda meta: meta | {"architecture": {**meta["architecture"], "layers": [{"type": "foo"}]}},
         "unknown layer 'foo'"),
        (lambda meta: meta | {"architecture": {**meta["architecture"], "layers": [{"type": "dense", "n_in": 4}]}},
         "layer spec .* does not fit its type"),
    ],
    ids=["old-format-activation", "layer-type", "layer-arguments"],
)
def test_unknown_layers_in_a_checkpoint_are_one_line_errors(tmp_path, change, message):
    from fastnn.backend import get_backend

    net = Network([4, 3, 2], "relu", backend=get_backend("cpu"), seed=0)
    save(tmp_path / "m.npz", net, {})
    _rewrite_meta(tmp_path / "m.npz", change)
    with pytest.raises(CheckpointError, match=f"damaged metadata \\(ValueError: {message}") as info:
        load(tmp_path / "m.npz", get_backend("cpu"))
    assert "\n" not in str(info.value)


def test_spec_built_network_round_trips_with_its_buffers(backend, tmp_path):
    """A bottleneck MLP with a BatchNorm, trained a few steps so that its running statistics moved:
    the loaded network has the same specs, parameters and buffers, and the same outputs."""
    from fastnn.network import bottleneck_spec
    from fastnn.optimizers import AdamW

    spec = bottleneck_spec(6, 4, 1, 3)
    spec.insert(1, {"type": "batchnorm", "n_features": 4, "momentum": 0.3})
    net = Network(spec=spec, backend=backend, seed=2, l2=0.01)
    rng = np.random.default_rng(0)
    x = backend.asarray(rng.normal(2.0, 1.0, size=(10, 6)), "float32")
    for _ in range(3):
        net.train_step(x, backend.asarray(rng.integers(0, 3, 10), "int64"), AdamW(), 1e-2)
    save(tmp_path / "m.npz", net, {})
    loaded, meta = load(tmp_path / "m.npz", backend)
    assert meta["architecture"]["layers"] == net.spec() == loaded.spec() and loaded.regularizer.lam == 0.01
    assert sorted(dict(loaded.buffers())) == ["1.running_mean", "1.running_var"]
    for name, value in net.state_dict().items():
        np.testing.assert_array_equal(backend.to_numpy(loaded.state_dict()[name]), backend.to_numpy(value), name)
    np.testing.assert_array_equal(backend.to_numpy(loaded.forward_pass(x)), backend.to_numpy(net.forward_pass(x)))


def test_a_checkpoint_from_before_layer_specs_still_loads(tmp_path):
    """Older checkpoints record sizes, activation, init, dropout and l2 only."""
    from fastnn.backend import get_backend

    cpu = get_backend("cpu")
    net = Network([5, 4, 3], "sigmoid", backend=cpu, seed=3, dropout=0.25, l2=0.02)
    save(tmp_path / "m.npz", net, {})
    _rewrite_meta(tmp_path / "m.npz", _without_layer_specs)
    loaded, meta = load(tmp_path / "m.npz", cpu)
    assert "layers" not in meta["architecture"]
    assert loaded.architecture() == net.architecture() and loaded.spec() == net.spec()
    for (name, p), (other, q) in zip(net.parameters(), loaded.parameters()):
        assert name == other
        np.testing.assert_array_equal(p, q)


def test_a_layer_spec_claiming_huge_sizes_is_refused_before_it_is_built(tmp_path):
    from fastnn.backend import get_backend

    net = Network([4, 3, 2], "relu", backend=get_backend("cpu"), seed=0)
    save(tmp_path / "m.npz", net, {})
    huge = [{"type": "dense", "n_in": 4, "n_out": 10**12, "init": "he"}, {"type": "layernorm", "n_features": 10**12}]
    _rewrite_meta(tmp_path / "m.npz", lambda meta: meta | {"architecture": {**meta["architecture"], "layers": huge}})
    with pytest.raises(CheckpointError, match="needs 7,000,000,000,000 parameters and buffers, the file holds 23"):
        load(tmp_path / "m.npz", get_backend("cpu"))


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
