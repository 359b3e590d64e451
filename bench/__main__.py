"""``python -m bench``: time fastnn on every backend present against PyTorch; see ``bench/__init__.py``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from rich.console import Console

from bench.harness import (
    EPOCH_IMAGES,
    FLOP_NOTE,
    Workload,
    cpu_threads,
    measure,
    positive_int,
    positive_ints,
    synthetic_data,
    writable_file,
)
from bench.report import LoadMeter, machine_info, markdown_table, print_report
from bench.torch_peer import TorchRunner, cuda_status, torch, torch_status
from fastnn.atomic import write_atomic


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _choices(text: str, allowed: tuple[str, ...]) -> list[str]:
    """An argparse helper: ``text``, a comma list, as a list of names each of them in ``allowed``."""
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen or any(name not in allowed for name in chosen):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (got {text!r})")
    return chosen


def _adam_kinds(text: str) -> list[str]:
    return _choices(text, ("default", "foreach", "fused"))


def _engines(text: str) -> list[str]:
    from fastnn import kernels_cpu

    engines = _choices(text, ("numba", "numpy"))
    if "numba" in engines and kernels_cpu.engine() != "numba":
        raise argparse.ArgumentTypeError("the numba engine needs numba: pip install 'fastnn[fast]'")
    return engines


def _products(text: str) -> list[str]:
    from fastnn import kernels_onednn

    choices = _choices(text, ("onednn", "numpy"))
    if "onednn" in choices and kernels_onednn.load() is None:
        raise argparse.ArgumentTypeError(f"the onednn products need oneDNN: {kernels_onednn.why_not()}")
    return choices


RUNNER_LABELS = ("fastnn-numpy", "torch-cpu", "fastnn-cupy", "torch-cuda")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--hidden", type=positive_ints, default=[1024, 512], help="hidden widths, e.g. 1024,512")
    p.add_argument("--batch-sizes", type=positive_ints, default=[256, 1024], help="e.g. 256,1024")
    p.add_argument("--epochs", type=positive_int, default=5, help="timed epochs per run, after one warm-up epoch")
    p.add_argument("--steps", type=positive_int, default=None, help="time this many batches and scale to an epoch")
    p.add_argument("--rows", type=positive_int, default=EPOCH_IMAGES, help="rows of synthetic data")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=_usable_cores(),
        help="CPU threads for NumPy's BLAS and for torch (default: all cores this process may use)",
    )
    p.add_argument(
        "--engines",
        type=_engines,
        default=None,
        help="fastnn's CPU optimizer engine(s), comma list of numba, numpy (fastnn.kernels_cpu): one "
        "fastnn-numpy row each (default: one row, on the engine training would use)",
    )
    p.add_argument(
        "--products",
        type=_products,
        default=None,
        help="the library of fastnn's matrix products on the CPU, comma list of onednn, numpy "
        "(fastnn.kernels_cpu.products): one fastnn-numpy row each, with each engine (default: the one "
        "training would use)",
    )
    p.add_argument("--only", default=None, help="comma list of runners, e.g. fastnn-numpy,torch-cpu")
    p.add_argument(
        "--torch-adam",
        type=_adam_kinds,
        default=["default"],
        help="torch.optim.Adam implementation(s) of the peer, comma list of default, foreach, fused; "
        "the first is the one ratios refer to, each further one adds a row (e.g. default,fused)",
    )
    p.add_argument(
        "--tf32",
        action="store_true",
        help="TF32 matrix products on the GPU, both frameworks (inputs rounded to 10 mantissa bits; off by default)",
    )
    p.add_argument(
        "--isolate",
        action="store_true",
        help="each runner in a process of its own, as users run the frameworks (each loads its own OpenMP and "
        "BLAS; bench/isolated.py); default: all runners in this process",
    )
    p.add_argument("--out", type=writable_file, default=None, help="write every number to this JSON file")
    p.add_argument("--markdown", type=writable_file, default=None, help="write the table as Markdown to this file")
    p.add_argument("--quick", action="store_true", help="a few steps on little data: checks that all runs work")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.steps, args.rows = 1, 2, 2 * max(args.batch_sizes)
    if args.rows < max(args.batch_sizes):
        p.error(f"--rows {args.rows} is less than one batch of {max(args.batch_sizes)}")
    if args.only is not None:
        unknown = set(args.only.split(",")) - set(RUNNER_LABELS)
        if unknown:
            p.error(f"--only: unknown runner(s) {', '.join(sorted(unknown))}; choose from {', '.join(RUNNER_LABELS)}")
    return args


def runner_specs(args) -> dict[str, list[dict]]:
    """What each runner label stands for, one spec per runner: fastnn-numpy one per engine and
    product library, the PyTorch peers one per ``--torch-adam`` (the first the reference). Both
    :func:`build_runners` and :func:`build_isolated` make their runners from these."""
    fastnn_cpu = [{"engine": e, "products": p} for e in (args.engines or [None]) for p in (args.products or [None])]
    peers = [{"adam": kind, "reference": i == 0} for i, kind in enumerate(args.torch_adam)]
    return {
        "fastnn-numpy": [{"framework": "fastnn", "device": "cpu", **spec} for spec in fastnn_cpu],
        "torch-cpu": [{"framework": "torch", "device": "cpu", **spec} for spec in peers],
        "fastnn-cupy": [{"framework": "fastnn", "device": "gpu", "tf32": args.tf32}],
        "torch-cuda": [{"framework": "torch", "device": "gpu", **spec} for spec in peers],
    }


def build_runners(args, x, y, sizes) -> tuple[list, dict[str, str], str | None]:
    """Every runner that can run here, the status of each (ok or why not), and the GPU's name."""
    from bench.fastnn_run import FastnnRunner
    from fastnn.backend import BackendUnavailable, get_backend

    wanted = None if args.only is None else set(args.only.split(","))
    specs = runner_specs(args)
    status: dict[str, str] = {}
    runners = []
    gpu_name = None

    def want(label: str) -> bool:
        if wanted is not None and label not in wanted:
            status[label] = "skipped: not in --only"
            return False
        return True

    if want("fastnn-numpy"):
        cpu = get_backend("cpu")
        runners += [
            FastnnRunner(cpu, x, y, sizes, 1e-3, 0, engine=spec["engine"], products=spec["products"])
            for spec in specs["fastnn-numpy"]
        ]
        status["fastnn-numpy"] = "ok"
    if want("torch-cpu"):
        status["torch-cpu"] = torch_status()
        if torch is not None:
            runners += [TorchRunner("cpu", x, y, sizes, 1e-3, p["adam"], p["reference"]) for p in specs["torch-cpu"]]
    if want("fastnn-cupy"):
        try:
            backend = get_backend("gpu")
            runners.append(FastnnRunner(backend, x, y, sizes, 1e-3, 0, tf32=args.tf32))
            status["fastnn-cupy"] = "ok: " + backend.describe()
            gpu_name = backend.describe().removeprefix("cupy on ")
        except BackendUnavailable as exc:
            status["fastnn-cupy"] = f"unavailable: {exc}"
    if want("torch-cuda"):
        status["torch-cuda"] = cuda_status()
        if status["torch-cuda"].startswith("ok"):
            runners += [TorchRunner("cuda", x, y, sizes, 1e-3, p["adam"], p["reference"]) for p in specs["torch-cuda"]]
            gpu_name = gpu_name or torch.cuda.get_device_name()
    return runners, status, gpu_name


def build_isolated(args, sizes) -> tuple[list, dict[str, str], str | None]:
    """The runners of :func:`build_runners` (:func:`runner_specs`), each in a child process (``bench.isolated``)."""
    from bench.isolated import ChildFailed, ProcessRunner

    wanted = set(RUNNER_LABELS if args.only is None else args.only.split(","))
    common = {"threads": args.threads, "rows": args.rows, "sizes": sizes, "lr": 1e-3}
    specs = runner_specs(args)
    runners, status = [], {}
    for label in RUNNER_LABELS:
        if label not in wanted:
            status[label] = "skipped: not in --only"
            continue
        try:
            runners += [ProcessRunner({**common, **spec}) for spec in specs[label]]
            status[label] = "ok: in a process of its own"
        except ChildFailed as exc:
            status[label] = f"unavailable: {exc}"
    gpu_name = next((r.backend for r in runners if r.device == "gpu" and r.backend), None)  # before any setup
    return runners, status, gpu_name and gpu_name.removeprefix("cupy on ")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 120)
    # The same matrix-product precision for both frameworks: fastnn sets CuPy's through the product's
    # own Backend.set_tf32 (FastnnRunner), PyTorch has a switch.
    sizes = [3072, *args.hidden, 10]
    workload = Workload(sizes, rows=args.rows)
    with contextlib.ExitStack() as undo:
        if torch is not None:
            matmul = torch.backends.cuda.matmul
            undo.callback(setattr, matmul, "allow_tf32", matmul.allow_tf32)
            matmul.allow_tf32 = args.tf32
        undo.enter_context(cpu_threads(args.threads, lambda message: console.print(message, style="yellow")))
        children: list[int] = []  # the runners' processes, with --isolate
        if args.isolate:
            runners, status, gpu_name = build_isolated(args, sizes)
            undo.callback(lambda: [r.close() for r in runners])
            children = [r.process.pid for r in runners]
        else:
            x, y = synthetic_data(args.rows, sizes[0], sizes[-1])
            runners, status, gpu_name = build_runners(args, x, y, sizes)
            del x, y  # each runner holds its own device copy (torch on the CPU shares the host array)
        if not runners:
            reasons = "; ".join(f"{label}: {why}" for label, why in status.items())
            console.print(f"python -m bench: nothing to time here ({reasons})", style="red", soft_wrap=True)
            return 2
        info = machine_info(args.threads, gpu_name)
        load = LoadMeter(children)
        results = []
        with console.status("timing") as spinner:
            for batch_size in args.batch_sizes:
                results += measure(runners, workload, batch_size, args.epochs, args.steps, spinner.update)
        info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        info["load_during_run"] = load.result()
        descriptions = {r.label: r.describe() for r in runners}  # before the children end
    print_report(console, results, info, status)
    if args.markdown:
        write_atomic(args.markdown, markdown_table(results).encode())
    if args.out:
        document = {
            "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
            "settings": {
                "sizes": sizes,
                "activation": "relu",
                "parameters": workload.parameters,
                "optimizer": "adam",
                "lr": workload.lr,
                "dtype": "float32",
                "batch_sizes": args.batch_sizes,
                "epochs": args.epochs,
                "steps": args.steps,
                "rows": args.rows,
                "epoch_images": EPOCH_IMAGES,
                "threads": args.threads,
                "torch_adam": args.torch_adam,
                "engines": args.engines,
                "products": args.products,
                "tf32": args.tf32,
                "quick": args.quick,
                "isolate": args.isolate,
            },
            "machine": info,
            "backends": status,
            "runners": descriptions,
            "results": [r.to_dict() for r in results],
            "notes": [
                FLOP_NOTE,
                "ratio_to_torch = median ms per epoch / that of the reference PyTorch run (the first --torch-adam) "
                "on the same device",
            ],
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(args.out, (json.dumps(document, indent=2) + "\n").encode())
        console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
