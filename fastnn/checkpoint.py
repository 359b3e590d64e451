"""Checkpoints: a network's parameters, architecture and training state in one file.

A checkpoint is one ``.npz``: every parameter as ``param/<name>``, every buffer (BatchNorm's running
statistics) as ``buffer/<name>``, plus ``meta``, a JSON string with the architecture (the layer specs
of :meth:`fastnn.network.Network.spec`), the whole training config, the history and any extra
results. Checkpoints from before the layer specs, which record sizes and activation, still load. A
checkpoint is written whole or not at all (:func:`fastnn.atomic.write_atomic`), so an interruption
never leaves half a file.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

# the names imported "as" themselves are re-exported, for code that imported them from here before
# fastnn.atomic held them
from fastnn.atomic import temporary_beside as temporary_beside
from fastnn.atomic import write_atomic
from fastnn.atomic import write_atomic_set as write_atomic_set
from fastnn.atomic import write_jsonl as write_jsonl
from fastnn.layers import numbers_in
from fastnn.network import Network

FORMAT = "fastnn-checkpoint-1"


class CheckpointError(Exception):
    """A checkpoint cannot be read; the message names the file and the fix."""


def damaged(path: str | os.PathLike, exc: Exception) -> CheckpointError:
    """The error for a checkpoint whose metadata lacks a field or holds a value of the wrong kind."""
    return CheckpointError(
        f"{path}: a fastnn checkpoint with damaged metadata ({type(exc).__name__}: {exc}); "
        "train again to write a new one"
    )


def save(
    path: str | os.PathLike, network: Network, meta: dict[str, Any], state: dict[str, Any] | None = None
) -> None:
    """Save ``network``'s parameters (brought to the host) and ``meta`` (JSON-able) to ``path``;
    ``state`` (name -> device array, e.g. the optimizer's moments) goes beside them as ``state/<name>``
    for a run to resume from (:func:`load_state`)."""
    arrays = {f"param/{name}": network.backend.to_numpy(value) for name, value in network.parameters()}
    arrays.update({f"buffer/{name}": network.backend.to_numpy(value) for name, value in network.buffers()})
    arrays.update({f"state/{name}": network.backend.to_numpy(value) for name, value in (state or {}).items()})
    meta = {"format": FORMAT, "architecture": network.architecture(), **meta}
    arrays["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def load(path: str | os.PathLike, backend: Any) -> tuple[Network, dict[str, Any]]:
    """Rebuild the network saved at ``path`` on ``backend``; returns (network, meta)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint; pass the model.npz that `fastnn train --out DIR` wrote")
    if not path.is_file():
        raise CheckpointError(
            f"{path}: not a checkpoint file (not a regular file); "
            "pass the model.npz that `fastnn train --out DIR` wrote"
        )
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file holds one bare array
            raise ValueError("one bare array, not an .npz archive")
        with archive:
            for key in archive.files:
                _check_member(path, archive.zip, key)
            meta = json.loads(str(archive["meta"]))
            params = {key.removeprefix("param/"): archive[key] for key in archive.files if key.startswith("param/")}
            params.update(_buffers(archive))
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path}: not a readable fastnn checkpoint ({type(exc).__name__}: {exc}); train again to write a new one"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{path}: unknown checkpoint format {found!r}, expected {FORMAT}; "
            "pass a model.npz that `fastnn train` wrote"
        )
    try:
        network = _network(meta["architecture"], params, backend, meta.get("config", {}).get("dtype", "float32"))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise damaged(path, exc) from exc
    try:
        network.load_state_dict(params)
    except ValueError as exc:
        raise CheckpointError(f"{path}: parameters do not match the saved architecture ({exc})") from exc
    return network, meta


def _check_member(path: Path, members: zipfile.ZipFile, key: str) -> None:
    """Read one member's .npy header before its data: a pickled object array is refused by name
    (loading it could run code), and a shape larger than the bytes the member holds is damage,
    refused before NumPy would try to allocate it."""
    with members.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f"{key} is in .npy format {version}, which np.savez does not write")
        shape, _, dtype = read_header[version](member)
        header = member.tell()
    if dtype.hasobject:
        raise CheckpointError(
            f"{path}: {key} holds pickled Python objects, which fastnn never loads (unpickling can run code); "
            "pass a model.npz that `fastnn train` wrote"
        )
    size = members.getinfo(f"{key}.npy").file_size - header
    if math.prod(shape) * dtype.itemsize > size:
        raise ValueError(f"{key} claims shape {shape} but holds {size} bytes")


def _check_architecture(arch: dict[str, Any], params: dict[str, np.ndarray]) -> None:
    """An architecture must have the parameters and buffers the file holds (which are already in
    memory), so that one claiming absurd sizes, e.g. 10**12 neurons, is refused before it is allocated."""
    if "layers" in arch:
        needed = sum(numbers_in(layer) for layer in arch["layers"])
    else:
        sizes = arch["sizes"]
        if not isinstance(sizes, list):
            raise ValueError(f"sizes {sizes!r} are not a list of whole numbers")
        dense = [{"type": "dense", "n_in": n_in, "n_out": n_out} for n_in, n_out in zip(sizes, sizes[1:])]
        needed = sum(numbers_in(layer) for layer in dense)
    held = sum(int(value.size) for value in params.values())
    if needed != held:
        raise ValueError(f"the architecture needs {needed:,} parameters and buffers, the file holds {held:,}")


def _buffers(archive: Any) -> dict[str, Any]:
    """The ``buffer/<name>`` arrays of an open checkpoint, by name."""
    return {key.removeprefix("buffer/"): archive[key] for key in archive.files if key.startswith("buffer/")}


def _network(arch: dict[str, Any], params: dict[str, np.ndarray], backend: Any, dtype: str) -> Network:
    """The network an ``architecture`` describes: from its layer specs, or, in a checkpoint written
    before there were any, from its sizes and activation. Checked against ``params`` first."""
    _check_architecture(arch, params)
    smoothing = arch.get("label_smoothing", 0.0)  # not recorded before label smoothing was saved: none
    if "layers" in arch:
        return Network(spec=arch["layers"], backend=backend, l2=arch["l2"], label_smoothing=smoothing, dtype=dtype)
    return Network(
        arch["sizes"],
        arch["activation"],
        backend=backend,
        init=arch["init"],
        dropout=arch["dropout"],
        l2=arch["l2"],
        label_smoothing=smoothing,
        dtype=dtype,
    )


def load_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ``state/<name>`` arrays :func:`save` wrote to ``path`` (host arrays), by name; the
    checkpoint itself was checked by :func:`load` first."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key.removeprefix("state/"): archive[key] for key in archive.files if key.startswith("state/")}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path}: the training state cannot be read ({type(exc).__name__}); train again without --resume"
        ) from exc

