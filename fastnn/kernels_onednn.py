"""NumPy's float32 matrix products through oneDNN (the ``[onednn]`` extra).

Why: most of a training step is three matrix products per ``Dense`` layer. On an Intel Xeon with
AVX-512, oneDNN, Intel's library of deep-learning kernels, does the default network's largest
products, (256 x 3072) @ (3072 x 1024) and its weight gradient, in 12-20% less time than NumPy's
OpenBLAS and within 1-6% of the MKL inside PyTorch (timed interleaved; ``bench/results/README.md``).
The ``[onednn]`` extra installs the library (``onednn-cpu-gomp``: one shared library, threaded
with GNU OpenMP, the system's ``libgomp.so.1``); this module finds it and calls it through
``ctypes``. Nothing here is needed for fastnn to work: without the extra, ``Dense`` multiplies with
NumPy's ``@``.

:func:`matmul` is ``a @ b`` (plus a bias row, for ``Dense``) for two 2-D float32 arrays stored
row by row (C order, or a transposed view of C order, which oneDNN reads as "transposed"); anything
else (float64, other strides, empty shapes) is NumPy's ``a @ b``. Products with small outputs run as
oneDNN's matmul primitive, made once per shape and layout and kept, larger ones through
``dnnl_sgemm`` (:data:`PRIMITIVE_MAX_OUTPUTS`). The same products in another summation order: the
last bits differ from OpenBLAS's, and on one machine, thread count and library version they are
the same every run
(``tests/test_kernels_onednn.py``), which ``--resume``'s bit-identical continuation needs.

A process made by ``fork`` after oneDNN loaded multiplies with NumPy's BLAS (GNU OpenMP's threads
do not survive a fork; its child would wait for them for ever).

Its threads are GNU OpenMP's, a pool shared with numba's loops (the optimizer's update, ReLU, the
gather); :func:`fastnn.openmp.load` loads that library first, and leaves it its own wait policy
where oneDNN multiplies: its idle threads spin a while, and start the next product or loop at once.
"""

from __future__ import annotations

import ctypes
import os
import site
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from fastnn import openmp

INSTALL_HINT = "pip install 'fastnn[onednn]'"
LIBRARY = "libdnnl.so.3"

_lib: Any = None
_why_not: str | None = None  # why the library did not load, once tried

_dim = ctypes.c_int64
_ptr = ctypes.c_void_p


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int), ("hash", ctypes.c_char_p)]


def _candidates() -> list[str]:
    """Where pip puts the extra's library (``<prefix>/lib``, for a virtual environment or a user
    install), then the system's search path."""
    folders = [Path(sys.prefix) / "lib", Path(site.getuserbase()) / "lib"]
    return [str(folder / LIBRARY) for folder in folders if (folder / LIBRARY).is_file()] + [LIBRARY]


def installed() -> bool:
    """Whether the extra's library is where pip puts it (loading it may still fail: :func:`load`)."""
    return sys.platform.startswith("linux") and len(_candidates()) > 1


def load() -> Any:
    """The oneDNN library, loaded once, or None where it is not installed (:func:`why_not` says why)."""
    global _lib, _why_not
    if _lib is not None or _why_not is not None:
        return _lib
    if not sys.platform.startswith("linux"):
        _why_not = f"the [onednn] extra's library is built for Linux only, not {sys.platform}"
        return None
    openmp.load()  # first, so that its idle threads wait as suits the products (fastnn.openmp)
    errors = []
    for candidate in _candidates():
        try:
            lib = ctypes.CDLL(candidate)
            break
        except OSError as exc:
            errors.append(str(exc))
    else:
        _why_not = f"oneDNN not found ({errors[-1]}); {INSTALL_HINT}"
        return None
    lib.dnnl_sgemm.argtypes = [ctypes.c_char, ctypes.c_char, _dim, _dim, _dim, ctypes.c_float, _ptr, _dim,
                               _ptr, _dim, ctypes.c_float, _ptr, _dim]
    lib.dnnl_sgemm.restype = ctypes.c_int
    lib.dnnl_version.restype = ctypes.POINTER(_Version)
    _lib = lib
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forked)
    return _lib


def _forked() -> None:
    """In a child made by ``fork``: GNU OpenMP's thread pool was not copied, and its first parallel
    region would wait for it for ever; this process multiplies with NumPy's BLAS instead (fastnn's
    own worker processes are started with "spawn", which loads everything afresh)."""
    global _lib, _why_not
    from fastnn import kernels_cpu

    _lib = None
    _why_not = "this process was forked from one that had loaded oneDNN, whose OpenMP threads do not survive a fork"
    kernels_cpu._products = None  # chosen afresh: NumPy's


def why_not() -> str | None:
    """Why oneDNN is not available (after :func:`load` returned None), else None."""
    return _why_not


def version() -> str:
    """oneDNN's version, e.g. ``"3.2.0"``; "" where it is not loaded."""
    if load() is None:
        return ""
    v = _lib.dnnl_version().contents
    return f"{v.major}.{v.minor}.{v.patch}"


def _operand(a: np.ndarray) -> tuple[bytes, np.ndarray, int] | None:
    """How oneDNN reads ``a``: ("N", a, row stride) for rows of contiguous elements, ("T", a.T, its
    row stride) for a transposed view of such, None for any other layout."""
    item = a.itemsize
    rows, cols = a.shape
    s0, s1 = a.strides
    if s1 == item and s0 % item == 0 and s0 // item >= cols:
        return b"N", a, s0 // item
    if s0 == item and s1 % item == 0 and s1 // item >= rows:
        return b"T", a.T, s1 // item
    return None


PRIMITIVE_MAX_OUTPUTS = 1 << 19
"""Products of at most this many outputs (m x n) run as oneDNN's matmul primitive, larger ones
through ``dnnl_sgemm``. The primitive (oneDNN's "brgemm" kernels) shares a small output among the
threads better; on large ones the older sgemm is faster. Timed interleaved on the default network's
eight products at batch 256 and 1024 on an AVX-512 Xeon (``bench/results/README.md``): the
primitive took 10% less time for (256 x 3072) @ (3072 x 1024) and 27% less for the (1024 x 1024).T
@ (1024 x 512) weight gradient, and 7-10% more for the products of 1024 x 1024 outputs and more."""

_ARG_SRC, _ARG_WEIGHTS, _ARG_DST, _ARG_BIAS = 1, 33, 17, 41  # DNNL_ARG_SRC, _WEIGHTS, _DST, _BIAS (dnnl_types.h)
_F32, _CPU, _IN_ORDER = 3, 1, 1  # dnnl_f32, dnnl_cpu, dnnl_stream_in_order


class _Arg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", _ptr)]


class _Primitive:
    """oneDNN's matmul primitive for one shape and layout of ``a @ b``, with or without a bias row
    added in its last step (made once, then run on any arrays of that shape and layout): its memory
    objects point at the arrays of each call."""

    _engine: Any = None
    _stream: Any = None

    def __init__(self, a: np.ndarray, b: np.ndarray, with_bias: bool):
        lib, cls = _lib, type(self)
        if cls._engine is None:
            engine, stream = _ptr(), _ptr()
            _check(lib.dnnl_engine_create(ctypes.byref(engine), _CPU, 0))
            _check(lib.dnnl_stream_create(ctypes.byref(stream), engine, _IN_ORDER))
            cls._engine, cls._stream = engine, stream
        n = b.shape[1]
        shapes = [a.shape, b.shape, (a.shape[0], n)] + ([(1, n)] if with_bias else [])
        strides = [[s // 4 for s in a.strides], [s // 4 for s in b.strides], [n, 1], [n, 1]]
        descs = []
        for shape, stride in zip(shapes, strides):
            desc = _ptr()
            _check(lib.dnnl_memory_desc_create_with_strides(ctypes.byref(desc), 2, _Dims(*shape), _F32, _Dims(*stride)))
            descs.append(desc)
        pd = _ptr()
        bias_desc = descs[3] if with_bias else None
        _check(lib.dnnl_matmul_primitive_desc_create(ctypes.byref(pd), cls._engine, descs[0], descs[1], bias_desc,
                                                     descs[2], None))  # fmt: skip
        self.primitive = _ptr()
        _check(lib.dnnl_primitive_create(ctypes.byref(self.primitive), pd))
        self.memories = []
        for desc in descs:
            memory = _ptr()
            _check(lib.dnnl_memory_create(ctypes.byref(memory), desc, cls._engine, None))
            self.memories.append(memory)
            lib.dnnl_memory_desc_destroy(desc)
        lib.dnnl_primitive_desc_destroy(pd)
        kinds = (_ARG_SRC, _ARG_WEIGHTS, _ARG_DST, _ARG_BIAS)
        self.args = (_Arg * len(descs))(*(_Arg(k, m) for k, m in zip(kinds, self.memories)))

    def __del__(self) -> None:
        # dropped from the cache (or never finished): give oneDNN its primitive and memory objects back;
        # in a forked child (_lib is None) the parent's library state is not this process's to free
        lib = _lib
        if lib is None:
            return
        for memory in getattr(self, "memories", ()):
            lib.dnnl_memory_destroy(memory)
        primitive = getattr(self, "primitive", None)
        if primitive is not None and primitive.value:
            lib.dnnl_primitive_destroy(primitive)

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, bias: np.ndarray | None) -> int:
        lib = _lib
        with _primitive_lock:  # the memory objects are this primitive's, one call at a time
            for memory, array in zip(self.memories, (a, b, out, bias)):
                lib.dnnl_memory_set_data_handle(memory, _ptr(array.ctypes.data))
            status = lib.dnnl_primitive_execute(self.primitive, self._stream, len(self.args), self.args)
            return status or lib.dnnl_stream_wait(self._stream)


class _Refused(Exception):
    pass


def _check(status: int) -> None:
    if status != 0:
        raise _Refused(status)


_Dims = ctypes.c_int64 * 12  # dnnl_dims_t
_primitives: dict[tuple, _Primitive | None] = {}  # by shapes and strides; None: oneDNN refused, sgemm serves
_primitive_lock = threading.Lock()


def _primitive(a: np.ndarray, b: np.ndarray, with_bias: bool) -> _Primitive | None:
    key = (a.shape, a.strides, b.shape, b.strides, with_bias)
    if key not in _primitives:
        if len(_primitives) >= 64:  # many shapes (a user's own calls): start afresh rather than grow for ever
            _primitives.clear()
        try:
            _primitives[key] = _Primitive(a, b, with_bias)
        except _Refused:
            _primitives[key] = None
    return _primitives[key]


def matmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``a @ b``, plus the row ``bias`` where given (``a @ b + bias``, the bias added to each row of
    the product), as a new C-order array; by oneDNN for 2-D float32 operands it can read, else by
    NumPy (``a @ b``, then ``+= bias`` in place)."""
    out = _product(a, b, bias)
    if out is None:
        out = a @ b
        if bias is not None:
            out += bias
    return out


def _product(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None) -> np.ndarray | None:
    """oneDNN's ``a @ b (+ bias)``, or None where it cannot read the operands."""
    if (
        _lib is None
        or a.dtype != np.float32
        or b.dtype != np.float32
        or a.ndim != 2
        or b.ndim != 2
        or a.shape[1] != b.shape[0]
        or 0 in a.shape
        or b.shape[1] == 0
    ):
        return None
    m, k = a.shape
    n = b.shape[1]
    left, right = _operand(a), _operand(b)
    if left is None or right is None:
        return None
    # the primitive adds a bias that is one contiguous float32 row of n; any other is added after
    fused_bias = bias is not None and bias.dtype == np.float32 and bias.shape == (n,) and bias.flags.c_contiguous
    out = np.empty((m, n), dtype=np.float32)
    primitive = _primitive(a, b, fused_bias) if m * n <= PRIMITIVE_MAX_OUTPUTS else None
    if primitive is not None:
        status = primitive(a, b, out, bias if fused_bias else None)
        added = fused_bias
    else:
        (ta, A, lda), (tb, B, ldb) = left, right
        status = _lib.dnnl_sgemm(ta, tb, m, n, k, 1.0, A.ctypes.data, lda, B.ctypes.data, ldb, 0.0, out.ctypes.data, n)
        added = False
    if status != 0:  # oneDNN refused (it should not for what was checked above): NumPy's answer is the same product
        return None
    if bias is not None and not added:
        out += bias
    return out
