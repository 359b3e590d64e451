"""GNU OpenMP (``libgomp.so.1``): the one thread pool that oneDNN's products and numba's loops share.

Both extras that make the CPU path fast run their threads on GNU OpenMP: oneDNN's sgemm
(:mod:`fastnn.kernels_onednn`, the ``[onednn]`` extra) and numba's ``omp`` threading layer
(:mod:`fastnn.kernels_numba`, the ``[fast]`` extra). A process has one copy of the library, so the
two share one pool of threads, and a step's products and elementwise loops never have more threads
than cores between them.

GNU OpenMP's idle threads spin for a while after each parallel region before they sleep (a few
milliseconds), and it reads that policy once, when it loads. Which policy is faster depends on who
else has threads. Where oneDNN multiplies (the ``[onednn]`` extra installed and ``FASTNN_PRODUCTS``
not ``numpy``), the products and numba's loops take turns on this one pool, and a spinning thread
picks up the next product or loop at once: an epoch of the benchmark's network took 0.67-0.69x the
time at batch 256 and 0.82-0.86x at 1024 with GNU OpenMP's own policy than with its threads put to
sleep at once (standalone processes, alternated). Where NumPy's BLAS multiplies, on OpenBLAS's
threads of its own, threads spinning after numba's loops take the cores from OpenBLAS's: 2.5-2.9x
the time at 256 and 1.3-1.5x at 1024. So :func:`load` leaves GNU OpenMP's policy alone in the first
case and loads it with ``OMP_WAIT_POLICY=PASSIVE`` set in the second, unless the user has set
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``; it removes the setting again so that libraries loaded
later (PyTorch's, in the benchmark) see the user's environment. The choice is made once per
process: ``kernels_cpu.set_products`` later in a run does not change it. :data:`wait_policy` says
which happened, for ``fastnn info``.

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
    spin = products_share_the_pool()
    ours = not user_set and not preloaded and not spin
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
    if user_set:
        wait_policy = ", ".join(f"{name}={os.environ[name]}" for name in user_set) + ", from the environment"
    elif preloaded:
        wait_policy = "GNU OpenMP was loaded before fastnn loaded it, so its idle threads wait as they were told then"
        if not spin:
            wait_policy += "; export OMP_WAIT_POLICY=PASSIVE to free the cores for NumPy's BLAS at once"
    elif ours:
        wait_policy = ("sleep at once (OMP_WAIT_POLICY=PASSIVE, set by fastnn while GNU OpenMP loaded: "
                       "NumPy's BLAS multiplies, on threads of its own)")  # fmt: skip
    else:
        wait_policy = "spin a while, then sleep (GNU OpenMP's own policy: oneDNN's products share its threads)"
    return _loaded


def products_share_the_pool() -> bool:
    """Whether oneDNN will multiply on this pool: its extra is installed where pip puts it and
    ``FASTNN_PRODUCTS`` does not name NumPy (an invalid value is refused where the products start)."""
    from fastnn import kernels_cpu, kernels_onednn  # here: kernels_onednn imports this module

    # the setting read as it stands, not through kernels_cpu.products_setting, which may load oneDNN, and so this
    if os.environ.get(kernels_cpu.PRODUCTS_SETTING, "").strip() == "numpy":
        return False
    return kernels_onednn.installed()
