"""``python -m bench.accuracy``: run ``fastnn train`` for several seeds and record what each printed.

    python -m bench.accuracy --seeds 0,1,2 --out bench/results/accuracy-default.json -- --device cpu

Everything after ``--`` is passed to ``fastnn train`` as it is; each run adds ``--seed S --out
TMP/seed-S``. The file written records, per seed: the test accuracy (with and without test-time
flips where the run used them: ``fastnn evaluate`` is run once more with the other setting), the
best and last validation accuracy, the wall time of the whole command (data loading included), its
peak resident memory and CPU time; and the command, the machine, the BLAS, the load, and the mean
and standard deviation over seeds.

``--parallel K`` runs K seeds at once, each pinned to its own cores (the usable cores split into K
groups), so that each run's BLAS and update threads stay on its own cores: with K = the number of
cores each run has one core. The accuracies do not depend on it (the same seed gives the same bits
on 1 or 2 threads: ``tests/test_train.py``); the wall times are those of runs on fewer cores, so an
upper bound of a run that has the machine to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import positive_int, writable_file
from bench.report import blas, cpu_model
from fastnn import kernels_cpu
from fastnn.atomic import write_atomic

ACCURACY = re.compile(r"test accuracy ([0-9.]+)%")


class _BusyCores:
    """Cores kept busy during the runs (``/proc/stat``), and how many of them by other processes
    than the runs (whose CPU time ``os.times`` counts once they are waited for): 0 when quiet."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields) - fields[3] - fields[4]) / ticks
        times = os.times()
        return busy, times.children_user + times.children_system, time.monotonic()

    def result(self) -> dict[str, float]:
        busy, ours, now = (b - a for a, b in zip(self.start, self._sample()))
        return {"busy_cores": round(busy / now, 2), "other_cores": round(max(0.0, busy - ours) / now, 2)}


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are whole numbers, comma-separated (got {text!r})") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"give distinct seeds >= 0, e.g. 0,1,2 (got {text!r})")
    return seeds


def _core_groups(parallel: int) -> list[set[int]]:
    cores = sorted(os.sched_getaffinity(0))
    if parallel > len(cores):
        raise SystemExit(f"--parallel {parallel} is more than the {len(cores)} usable cores")
    size = len(cores) // parallel
    return [set(cores[i * size : (i + 1) * size]) for i in range(parallel)]


def _fastnn() -> list[str]:
    command = shutil.which("fastnn", path=os.path.dirname(sys.executable)) or shutil.which("fastnn")
    if command is None:
        raise SystemExit("the fastnn command is not installed here: pip install -e .")
    return [command]


def _start(seed: int, train_args: list[str], folder: Path, cores: set[int] | None) -> tuple[subprocess.Popen, Any]:
    log = open(folder / f"seed-{seed}.log", "w")  # noqa: SIM115 (closed by _finish)
    command = [*_fastnn(), "train", *train_args, "--seed", str(seed), "--out", str(folder / f"seed-{seed}")]
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )
    return process, log


def _evaluate(model: Path, tta: bool) -> float:
    flag = "--tta" if tta else "--no-tta"
    out = subprocess.run([*_fastnn(), "evaluate", str(model), flag], capture_output=True, text=True, check=True)
    return float(ACCURACY.search(out.stdout).group(1))


def _tested_with_flips(model: Path) -> bool:
    """Whether the run's own final test averaged over flips (``--tta``, or ``tta = true`` in its config)."""
    from fastnn.backend import get_backend
    from fastnn.checkpoint import load

    _, meta = load(model, get_backend("cpu"))
    return bool(meta["config"].get("tta", False))


def _record(seed: int, folder: Path, seconds: float, usage: Any, cores: set[int] | None) -> dict[str, Any]:
    text = (folder / f"seed-{seed}.log").read_text()
    match = ACCURACY.search(text)
    if match is None:
        raise SystemExit(f"seed {seed}: fastnn train printed no test accuracy; its output:\n{text[-2000:]}")
    run = folder / f"seed-{seed}"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [round(100 * r["val_accuracy"], 2) for r in rows if "val_accuracy" in r]
    record = {
        "seed": seed,
        "test_accuracy": float(match.group(1)),
        "epochs": len(rows),
        "val_accuracy_last": val[-1] if val else None,
        "val_accuracy_best": max(val, default=None),
        "wall_seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cores": sorted(cores) if cores else sorted(os.sched_getaffinity(0)),
    }
    return record


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma list, e.g. 0,1,2")
    p.add_argument("--parallel", type=positive_int, default=1, help="seeds run at once, each on its own cores")
    p.add_argument("--out", type=writable_file, required=True, help="JSON file to write")
    p.add_argument("--label", default="", help="a name for the configuration, kept in the file")
    args = p.parse_args(ours)
    if any(a == "--seed" or a.startswith("--seed=") or a == "--out" or a.startswith("--out=") for a in train_args):
        p.error("--seed and --out are set per run; leave them out of the train options")
    groups = _core_groups(args.parallel) if args.parallel > 1 else [None]
    load = _BusyCores()
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    records = []
    with tempfile.TemporaryDirectory(prefix="fastnn-accuracy-") as tmp:
        folder = Path(tmp)
        pending = list(args.seeds)
        # each run's Popen is kept here until its exit is read: a Popen dropped while its process runs
        # goes on subprocess's list of children to reap, and the next subprocess started (the
        # evaluation below) reaped it before os.wait4 could, which then found no child (seen in CI)
        running: dict[int, tuple[int, float, Any, set[int] | None, subprocess.Popen]] = {}
        free = list(groups)
        while pending or running:
            while pending and free:
                seed, cores = pending.pop(0), free.pop(0)
                process, log = _start(seed, train_args, folder, cores)
                running[process.pid] = (seed, time.monotonic(), log, cores, process)
                print(f"seed {seed}: started" + (f" on cores {sorted(cores)}" if cores else ""), flush=True)
            pid, status, usage = os.wait4(-1, 0)
            if pid not in running:
                continue
            seed, began, log, cores, process = running.pop(pid)
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; the Popen must not wait again
            seconds = time.monotonic() - began
            log.close()
            free.append(cores)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"seed {seed}: fastnn train failed; see its output:\n"
                                 + (folder / f"seed-{seed}.log").read_text()[-2000:])
            record = _record(seed, folder, seconds, usage, cores)
            model = folder / f"seed-{seed}" / "model.npz"
            used_tta = _tested_with_flips(model)
            other = _evaluate(model, not used_tta)
            record["test_accuracy_tta" if not used_tta else "test_accuracy_no_tta"] = other
            if used_tta:
                record["test_accuracy_tta"] = record["test_accuracy"]
            records.append(record)
            print(f"seed {seed}: {record['test_accuracy']:.2f}% in {seconds:.0f} s", flush=True)
    records.sort(key=lambda r: r["seed"])
    accuracies = [r["test_accuracy"] for r in records]
    summary = {
        "mean": round(statistics.fmean(accuracies), 2),
        "std": round(statistics.stdev(accuracies), 2) if len(accuracies) > 1 else None,
        "min": min(accuracies),
        "max": max(accuracies),
        "wall_seconds_max": max(r["wall_seconds"] for r in records),
    }
    document = {
        "command": "python -m bench.accuracy " + shlex.join(argv),
        "label": args.label,
        "train_command": "fastnn train " + shlex.join(train_args) + " --seed S",
        "started": started_at,
        "machine": {
            "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "blas": blas(),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "update_engine": kernels_cpu.engine(),
            "python": sys.version.split()[0],
        },
        "parallel": args.parallel,
        "load_during_run": load.result(),
        "runs": records,
        "test_accuracy": summary,
    }
    write_atomic(args.out, (json.dumps(document, indent=2) + "\n").encode())
    std = f" ± {summary['std']:.2f}" if summary["std"] is not None else ""
    print(f"test accuracy {summary['mean']:.2f}%{std} over seeds {', '.join(map(str, args.seeds))}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
