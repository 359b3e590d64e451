"""Can this CuPy capture fastnn's training step in a CUDA graph? ``python -m bench.graph_probe``.

fastnn offers no CUDA-graph option because CuPy refuses cuBLAS calls while a stream is being
captured (its own test ``test_stream_capture_failure_cublas`` expects a NotImplementedError from
``cupy.matmul``; cupy/cupy#6290 tracks the libraries), and every step of a dense network is six
matrix products. This probe records what the installed CuPy does, on the GPU it runs on, so that
the decision rests on a measurement: it captures an elementwise update, then a matrix product, and
prints one line each (``captured and replayed correctly`` or the error), plus the CuPy version.
"""

from __future__ import annotations

import sys


def _try_capture(cupy, name: str, build, check) -> str:
    stream = cupy.cuda.Stream(non_blocking=True)
    error, graph = None, None
    with stream:
        stream.begin_capture()
        try:
            out = build()
        except Exception as exc:  # the probe reports whatever CuPy or CUDA raises
            error = exc
        try:
            graph = stream.end_capture()
        except Exception as exc:
            error = error or exc
    if error is None:
        try:
            with stream:
                graph.launch()
            stream.synchronize()
        except Exception as exc:
            error = exc
    if error is not None:
        return f"{name}: not capturable: {type(error).__name__}: {' '.join(str(error).split())[:200]}"
    return f"{name}: captured and replayed correctly" if check(out) else f"{name}: replayed WRONG values"


def main() -> int:
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        print(f"no CuPy GPU here ({type(exc).__name__}: {exc})")
        return 0
    a = cupy.full((256, 512), 0.5, dtype=cupy.float32)
    b = cupy.full((512, 128), 2.0, dtype=cupy.float32)
    cupy.cuda.Device().synchronize()  # the capturing stream does not wait for the default stream's fills
    print(f"cupy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}")
    print(_try_capture(cupy, "elementwise (a * 3 + 1)", lambda: a * 3 + 1, lambda out: bool((out == 2.5).all())))
    print(_try_capture(cupy, "matrix product (a @ b)", lambda: a @ b, lambda out: bool((out == 512.0).all())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
