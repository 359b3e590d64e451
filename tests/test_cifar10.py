"""Tests of fastnn.data.cifar10 on tiny fake CIFAR-10 archives built here, plus one test (marked
``data``) on the real archive named by FASTNN_DATA_DIR. No test touches the network: downloads are
served from ``file://`` URLs or from a fake opener."""

import codecs
import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from fastnn.data import CLASS_NAMES, Cifar10Raw, DataError, cifar10, data_dir, load_cifar10, prepare

N = 4  # images per fake batch
REAL_DATA_DIR = os.environ.get("FASTNN_DATA_DIR")  # read before no_data_env hides it
MEMBERS = (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH, cifar10.META)


def fake_members(images_per_batch=N, seed=0):
    """The seven CIFAR members as dicts, laid out like the official ones (byte-string keys)."""
    rng = np.random.default_rng(seed)
    members = {}
    for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
        members[name] = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, images_per_batch)],
            b"data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(images_per_batch)],
        }
    members[cifar10.META] = {
        b"num_cases_per_batch": images_per_batch,
        b"label_names": [n.encode() for n in CLASS_NAMES],
        b"num_vis": 3072,
    }
    return members


def pickled(members):
    """name -> pickle bytes; an entry that is already bytes is kept as it is."""
    return {name: obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=4) for name, obj in members.items()}


def write_archive(folder, members):
    """Write cifar-10-python.tar.gz into ``folder`` with the members in the official, shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / cifar10.ARCHIVE_NAME
    with tarfile.open(path, "w:gz") as archive:
        entry = tarfile.TarInfo(cifar10.FOLDER_NAME)
        entry.type = tarfile.DIRTYPE
        archive.addfile(entry)
        order = "batches.meta data_batch_4 data_batch_2 readme.html data_batch_5 data_batch_1 test_batch data_batch_3"
        blobs = {**pickled(members), "readme.html": b"<html></html>"}
        for name in order.split():
            if name in blobs:
                info = tarfile.TarInfo(f"{cifar10.FOLDER_NAME}/{name}")
                info.size = len(blobs[name])
                archive.addfile(info, io.BytesIO(blobs[name]))
    return path


def write_folder(folder, members):
    """Write an extracted cifar-10-batches-py/ folder into ``folder``."""
    target = folder / cifar10.FOLDER_NAME
    target.mkdir(parents=True)
    for name, blob in pickled(members).items():
        (target / name).write_bytes(blob)
    return target


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Keep a developer's FASTNN_DATA_DIR out of the unit tests."""
    monkeypatch.delenv("FASTNN_DATA_DIR", raising=False)


# --- finding and reading --------------------------------------------------------------------------


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".cache" / "fastnn"
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_dir("~/x") == tmp_path / "home" / "x"


def test_archive_and_folder_load_and_agree(tmp_path):
    members = fake_members()
    write_archive(tmp_path / "a", members)
    write_folder(tmp_path / "f", members)
    from_archive = load_cifar10(tmp_path / "a", download=False, _images_per_batch=N)
    from_folder = load_cifar10(tmp_path / "f", download=False, _images_per_batch=N)

    for raw in (from_archive, from_folder):
        assert raw.x_train.shape == (5 * N, 3072) and raw.x_train.dtype == np.uint8
        assert raw.y_train.shape == (5 * N,) and raw.y_train.dtype == np.int64
        assert raw.x_test.shape == (N, 3072) and raw.x_test.dtype == np.uint8
        assert raw.y_test.shape == (N,) and raw.y_test.dtype == np.int64
        assert raw.class_names == CLASS_NAMES
        # Train rows follow data_batch_1..5 whatever the order of the members in the archive.
        expected = np.concatenate([members[b][b"data"] for b in cifar10.TRAIN_BATCHES])
        np.testing.assert_array_equal(raw.x_train, expected)
        np.testing.assert_array_equal(
            raw.y_train, np.concatenate([members[b][b"labels"] for b in cifar10.TRAIN_BATCHES])
        )
        np.testing.assert_array_equal(raw.x_test, members["test_batch"][b"data"])
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(from_archive, field), getattr(from_folder, field))


def test_real_sizes_are_required_by_default(tmp_path):
    write_archive(tmp_path, fake_members())
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False)
    assert_one_line(error, "(10000, 3072)", "cifar-10-python.tar.gz")


def test_truncated_archive(tmp_path):
    path = write_archive(tmp_path, fake_members(images_per_batch=20))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False, _images_per_batch=20)
    assert_one_line(error, str(path), "truncated or corrupt", "delete it")


def test_not_an_archive(tmp_path):
    (tmp_path / cifar10.ARCHIVE_NAME).write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False, _images_per_batch=N)
    assert_one_line(error, cifar10.ARCHIVE_NAME, "truncated or corrupt")


def test_missing_member(tmp_path):
    members = fake_members()
    del members["test_batch"]
    write_archive(tmp_path, members)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False, _images_per_batch=N)
    assert_one_line(error, "lacks test_batch", cifar10.ARCHIVE_NAME)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        (b"data", np.zeros((N, 3000), np.uint8), "(4, 3000)"),
        (b"data", np.zeros((N, 3072), np.float32), "float32"),
        (b"data", [[0] * 3072] * N, "list"),
        (b"labels", [0, 1, 2], "(3,)"),
        (b"labels", [0, 1, 2, 10], "outside 0-9"),
        (b"labels", [0.5] * N, "float64"),
    ],
)
@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_bad_batch_is_named(tmp_path, layout, key, value, fragment):
    members = fake_members()
    members["data_batch_3"][key] = value
    (write_archive if layout == "archive" else write_folder)(tmp_path, members)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False, _images_per_batch=N)
    assert_one_line(error, "data_batch_3", fragment, "official cifar-10-python.tar.gz")


class _Payload:
    """Unpickling this would create a file: the harmless stand-in for an attack."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_malicious_pickle_does_not_run(tmp_path, layout):
    marker = tmp_path / "pwned"
    members = fake_members()
    members["data_batch_2"] = pickle.dumps({b"data": _Payload(marker), b"labels": []}, protocol=4)
    (write_archive if layout == "archive" else write_folder)(tmp_path / "d", members)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "d", download=False, _images_per_batch=N)
    assert_one_line(error, "data_batch_2", "not a CIFAR-10 pickle", "open")
    assert not marker.exists()


def test_non_cifar_pickle(tmp_path):
    members = fake_members()
    members["data_batch_1"] = ["not", "a", "batch"]
    members["batches.meta"] = {b"label_names": [b"cat"]}
    write_folder(tmp_path, members)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False, _images_per_batch=N)
    assert_one_line(error, "data_batch_1", "not a CIFAR-10 batch")


def test_unexpected_member_kind(tmp_path):
    with tarfile.open(tmp_path / cifar10.ARCHIVE_NAME, "w:gz") as archive:
        info = tarfile.TarInfo(f"{cifar10.FOLDER_NAME}/data_batch_1")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, download=False, _images_per_batch=N)
    assert_one_line(error, "data_batch_1", "link or folder")


# --- downloading ----------------------------------------------------------------------------------


def test_missing_data_without_download(tmp_path):
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "empty", download=False)
    assert_one_line(error, str(tmp_path / "empty"), "--data-dir", "FASTNN_DATA_DIR", cifar10.ARCHIVE_NAME)


def test_missing_data_and_download_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "CIFAR10_URL", (tmp_path / "nowhere.tar.gz").as_uri())
    folder = tmp_path / "data"
    with pytest.raises(DataError) as error:
        load_cifar10(folder, progress=False)
    assert_one_line(error, str(folder), "download", "--data-dir", "FASTNN_DATA_DIR", cifar10.ARCHIVE_NAME)
    assert not folder.exists()  # neither a partial file nor the folder made for it is left


@pytest.mark.parametrize("progress", [False, True])
def test_download_success(tmp_path, monkeypatch, capsys, progress):
    source = write_archive(tmp_path / "server", fake_members())
    monkeypatch.setattr(cifar10, "CIFAR10_URL", source.as_uri())
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", hashlib.md5(source.read_bytes()).hexdigest())
    folder = tmp_path / "new" / "data"  # created by the download
    umask = os.umask(0o022)
    try:
        raw = load_cifar10(folder, progress=progress, _images_per_batch=N)
    finally:
        os.umask(umask)
    assert raw.x_train.shape == (5 * N, 3072)
    assert [p.name for p in folder.iterdir()] == [cifar10.ARCHIVE_NAME]
    assert (folder / cifar10.ARCHIVE_NAME).read_bytes() == source.read_bytes()
    # readable by all, as an ordinary file: a folder shared with a container running as another user
    assert (folder / cifar10.ARCHIVE_NAME).stat().st_mode & 0o777 == 0o644
    said = capsys.readouterr().err.splitlines()  # stderr is no terminal here: two plain lines, no bar
    if progress:
        assert said[0].startswith("downloading CIFAR-10 (") and said[0].endswith(f"from {source.as_uri()} ...")
        assert said[1].startswith("downloaded in ")
    else:
        assert said == []


def test_an_incomplete_folder_beside_the_archive_gives_way_to_the_archive(tmp_path, caplog):
    members = fake_members()
    write_archive(tmp_path, members)
    write_folder(tmp_path, {k: v for k, v in members.items() if k != "data_batch_5"})
    with caplog.at_level("WARNING", logger="fastnn"):
        raw = load_cifar10(tmp_path, download=False, _images_per_batch=N)
    assert raw.x_train.shape == (5 * N, 3072)
    assert f"lacks data_batch_5 (truncated or not CIFAR-10); reading {tmp_path / cifar10.ARCHIVE_NAME}" in caplog.text


def test_a_failed_download_into_an_existing_folder_leaves_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "CIFAR10_URL", (tmp_path / "nowhere.tar.gz").as_uri())
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError):
        load_cifar10(tmp_path / "data", progress=False)
    assert list((tmp_path / "data").iterdir()) == []


def test_download_md5_mismatch_leaves_nothing(tmp_path, monkeypatch):
    source = write_archive(tmp_path / "server", fake_members())
    monkeypatch.setattr(cifar10, "CIFAR10_URL", source.as_uri())
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", "0" * 32)
    folder = tmp_path / "data"
    with pytest.raises(DataError) as error:
        load_cifar10(folder, progress=False, _images_per_batch=N)
    assert_one_line(error, "md5", "0" * 32, source.as_uri())
    assert not folder.exists()  # neither a partial file nor the folder made for it is left


class _BrokenResponse(io.BytesIO):
    """A response that delivers some bytes, then loses the connection."""

    headers = {"Content-Length": "1000000"}

    def read(self, size=-1):
        if self.tell() > 0:
            raise ConnectionResetError("connection reset by peer")
        return super().read(100)


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10.urllib.request, "urlopen", lambda url, timeout: _BrokenResponse(b"x" * 1000))
    folder = tmp_path / "data"
    with pytest.raises(DataError) as error:
        load_cifar10(folder, progress=False)
    assert_one_line(error, "connection reset", "--data-dir")
    assert not folder.exists()  # neither a partial file nor the folder made for it is left


# --- prepare --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw():
    """A fake Cifar10Raw with distinct rows and a different pixel distribution per channel."""
    rng = np.random.default_rng(1)

    def images(n):
        low = np.array([0, 60, 120], np.uint8).repeat(1024)
        x = (low + rng.integers(0, 136, (n, 3072))).astype(np.uint8)
        x[:, :4] = np.arange(n)[:, None] // np.array([1, 256, 65536, 1 << 24]) % 256  # a unique tag
        return x

    return Cifar10Raw(images(400), rng.integers(0, 10, 400), images(50), rng.integers(0, 10, 50), CLASS_NAMES)


def back_to_uint8(split, x):
    """Undo the standardisation (x * std + mean) * 255, to identify which raw rows a split holds."""
    pixels = (x.reshape(len(x), 3, 1024) * split.std[:, None] + split.mean[:, None]) * 255
    return np.rint(pixels).astype(np.uint8).reshape(len(x), 3072)


def rows_of(raw_x, x_u8):
    """Positions in raw_x of the rows of x_u8 (all must be there)."""
    position = {row.tobytes(): i for i, row in enumerate(raw_x)}
    return np.array([position[row.tobytes()] for row in x_u8], dtype=np.int64)


def test_prepare_standardises_with_train_statistics(raw):
    split = prepare(raw, validation=100, seed=3)
    assert split.x_train.shape == (300, 3072) and split.x_val.shape == (100, 3072)
    for x in (split.x_train, split.x_val, split.x_test):
        assert x.dtype == np.float32 and x.flags.c_contiguous
    planes = split.x_train.astype(np.float64).reshape(300, 3, 1024)
    np.testing.assert_allclose(planes.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(planes.std(axis=(0, 2)), 1, atol=1e-5)
    # The statistics are those of the training part alone, computed here independently.
    train_rows = raw.x_train[rows_of(raw.x_train, back_to_uint8(split, split.x_train))]
    reference = train_rows.reshape(300, 3, 1024) / 255.0
    np.testing.assert_allclose(split.mean, reference.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(split.std, reference.std(axis=(0, 2)), rtol=1e-12)
    assert not np.allclose(split.mean, (raw.x_train.reshape(400, 3, 1024) / 255.0).mean(axis=(0, 2)))
    # Test images go through the same transformation, and labels follow their images.
    np.testing.assert_array_equal(back_to_uint8(split, split.x_test), raw.x_test)
    np.testing.assert_array_equal(split.y_test, raw.y_test)
    assert split.class_names == CLASS_NAMES


def test_prepare_split_is_disjoint_and_seeded(raw):
    split = prepare(raw, validation=100, seed=3)
    train = rows_of(raw.x_train, back_to_uint8(split, split.x_train))
    val = rows_of(raw.x_train, back_to_uint8(split, split.x_val))
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(400))
    np.testing.assert_array_equal(split.y_train, raw.y_train[train])
    np.testing.assert_array_equal(split.y_val, raw.y_train[val])

    again = prepare(raw, validation=100, seed=3)
    np.testing.assert_array_equal(again.x_val, split.x_val)
    other = prepare(raw, validation=100, seed=4)
    assert set(rows_of(raw.x_train, back_to_uint8(other, other.x_val))) != set(val)


def test_prepare_without_validation(raw):
    split = prepare(raw, validation=0)
    assert split.x_val.shape == (0, 3072) and split.x_val.dtype == np.float32
    assert split.y_val.shape == (0,)
    np.testing.assert_array_equal(back_to_uint8(split, split.x_train), raw.x_train)


def test_prepare_subset(raw):
    full = prepare(raw, validation=100, seed=3)
    small = prepare(raw, validation=100, seed=3, subset=30)
    assert small.x_train.shape == (30, 3072) and small.y_train.shape == (30,)
    np.testing.assert_array_equal(back_to_uint8(small, small.x_train), back_to_uint8(full, full.x_train[:30]))
    np.testing.assert_array_equal(small.y_train, full.y_train[:30])
    np.testing.assert_array_equal(back_to_uint8(small, small.x_val), back_to_uint8(full, full.x_val))
    np.testing.assert_allclose(small.x_train.reshape(30, 3, 1024).mean(axis=(0, 2)), 0, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "fragment"), [({"validation": 400}, "validation"), ({"validation": 100, "subset": 0}, "subset")]
)
def test_prepare_rejects_bad_sizes(raw, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        prepare(raw, **kwargs)


# --- the real archive -----------------------------------------------------------------------------


@pytest.mark.data
def test_real_cifar10(monkeypatch):
    folder = REAL_DATA_DIR
    present = folder and (
        os.path.isfile(os.path.join(folder, cifar10.ARCHIVE_NAME))
        or os.path.isdir(os.path.join(folder, cifar10.FOLDER_NAME))
    )
    if not present:
        pytest.skip("set FASTNN_DATA_DIR to a folder holding cifar-10-python.tar.gz")
    monkeypatch.setenv("FASTNN_DATA_DIR", folder)
    raw = load_cifar10(download=False)
    assert raw.x_train.shape == (50000, 3072) and raw.x_test.shape == (10000, 3072)
    assert raw.class_names == CLASS_NAMES
    np.testing.assert_array_equal(np.bincount(raw.y_train, minlength=10), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(raw.y_test, minlength=10), [1000] * 10)
    means = raw.x_train.reshape(50000, 3, 1024).mean(axis=(0, 2), dtype=np.float64) / 255
    np.testing.assert_allclose(means, (0.4914, 0.4822, 0.4465), atol=1e-3)
    split = prepare(raw, validation=0)
    np.testing.assert_allclose(split.mean, means, rtol=1e-12)
    np.testing.assert_allclose(split.std, (0.2470, 0.2435, 0.2616), atol=1e-3)


# --- copies re-pickled by Python 3 with protocol 2 ------------------------------------------------


@pytest.mark.parametrize("layout", ["archive", "folder"])
def test_a_copy_repickled_with_protocol_2_loads(tmp_path, layout):
    # Protocol 2 has no bytes opcode: Python 3 writes bytes as _codecs.encode(text, "latin1") and an
    # empty one as bytes(), which the restricted unpickler must answer.
    members = fake_members()
    members["data_batch_3"][b"batch_label"] = b""
    repickled = {name: pickle.dumps(obj, protocol=2) for name, obj in members.items()}
    assert b"_codecs\nencode" in repickled["data_batch_1"] and b"bytes" in repickled["data_batch_3"]
    (write_archive if layout == "archive" else write_folder)(tmp_path / "d", repickled)
    raw = load_cifar10(tmp_path / "d", download=False, _images_per_batch=N)
    np.testing.assert_array_equal(raw.x_train, np.concatenate([members[b][b"data"] for b in cifar10.TRAIN_BATCHES]))
    np.testing.assert_array_equal(raw.y_test, members["test_batch"][b"labels"])
    assert raw.class_names == CLASS_NAMES


class _Call:
    """Unpickling this calls ``function(*args)``: a pickle asking for a name the loader does allow."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (lambda marker: _Payload(marker), "open"),
        (lambda marker: _Call(codecs.encode, "x", "rot13"), "encodes bytes in a way CIFAR-10 never does"),
        (lambda marker: _Call(codecs.encode, b"x", "zlib_codec"), "encodes bytes in a way CIFAR-10 never does"),
        (lambda marker: _Call(bytes, 10**12), "bytes"),
    ],
    ids=["open", "rot13", "zlib", "huge-bytes"],
)
def test_protocol_2_pickles_run_no_code_either(tmp_path, payload, fragment):
    marker = tmp_path / "pwned"
    members = fake_members()
    members["data_batch_2"] = pickle.dumps({b"data": payload(marker), b"labels": []}, protocol=2)
    write_folder(tmp_path / "d", members)
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "d", download=False, _images_per_batch=N)
    assert_one_line(error, "data_batch_2", "CIFAR-10 pickle", fragment)
    assert not marker.exists()


def test_a_read_only_folder_without_the_data_says_the_data_is_missing(tmp_path, monkeypatch):
    import errno

    def refuse(path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path.parent))

    monkeypatch.setattr(cifar10, "temporary_beside", refuse)  # as in a folder this user cannot write
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path, progress=False)
    assert_one_line(
        error, f"CIFAR-10 is not in {tmp_path} (looked for", "cannot be downloaded there", "Permission denied",
        f"FASTNN_DATA_DIR to a folder holding {cifar10.ARCHIVE_NAME}",
    )
