"""GNU OpenMP (``libgomp.so.1``): the one thread pool that oneDNN's products and numba's loops share.

Both extras that make the CPU path fast run their threads on GNU OpenMP: oneDNN's sgemm
(:mod:`fastnn.kernels_onednn`, the ``[onednn]`` extra) and numba's ``omp`` threading layer
(:mod:`fastnn.kernels_numba`, the ``[fast]`` extra). A process has one copy of the library, so the
two share one pool of threads, and a step's products and elementwise loops never have more threads
than cores between them.

GNU OpenMP's idle threads spin for a while after each parallel region before they sleep, as
OpenBLAS's do (``fastnn/__init__.py``); on a small machine that spinning takes the cores from
whatever follows (the optimizer's update after the last product doubled). GNU OpenMP reads its
wait policy once, when it loads; so :func:`load` loads it with ``OMP_WAIT_POLICY=PASSIVE`` set,
unless the user has set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, and removes the setting again so
that libraries loaded later see the user's environment. :data:`wait_policy` says which happened,
for ``fastnn info``.

Its threads do not survive ``fork``: a forked child's first parallel region waits for ever (oneDNN)
or is killed (numba). Each user of the pool registers what its forked children do instead.
"""

from __future__ import annotations

import ctypes
import os
import sys

LIBRARY = "libgomp.so.1"

wait_policy: str = "not loaded"  # how GNU OpenMP's idle threads wait, for ``fastnn info``
_loaded: bool | None = None  # whether load() found the library, once tried


def loaded_already() -> bool:
    """Whether GNU OpenMP is loaded in this process (then its wait policy is already set)."""
    try:
        ctypes.CDLL(LIBRARY, mode=os.RTLD_NOLOAD)
    except (OSError, AttributeError):
        return False
    return True


def load() -> bool:
    """Load GNU OpenMP once, its idle threads asleep at once unless the user said otherwise;
    False where it is not on this system (Linux only; Debian's package is ``libgomp1``)."""
    global _loaded, wait_policy
    if _loaded is not None:
        return _loaded
    if not sys.platform.startswith("linux"):
        _loaded = False
        return _loaded
    user_set = [name for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if name in os.environ]
    preloaded = loaded_already()
    ours = not user_set and not preloaded
    if ours:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        ctypes.CDLL(LIBRARY, mode=os.RTLD_GLOBAL)
        _loaded = True
    except OSError:
        _loaded = False
        return _loaded
    finally:
        if ours:
            del os.environ["OMP_WAIT_POLICY"]
    if ours:
        wait_policy = "sleep at once (OMP_WAIT_POLICY=PASSIVE, set by fastnn while GNU OpenMP loaded)"
    elif user_set:
        wait_policy = ", ".join(f"{name}={os.environ[name]}" for name in user_set) + ", from the environment"
    else:
        wait_policy = ("GNU OpenMP was loaded before fastnn loaded it, so its idle threads wait as they were "
                       "told then; export OMP_WAIT_POLICY=PASSIVE to free the cores at once")  # fmt: skip
    return _loaded
